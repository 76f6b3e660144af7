//! OCI hooks at their lifecycle points.

use super::harness::{both_runtimes, stderr, Env, Runtime};

both_runtimes!(
    hooks_run_at_each_point,
    failing_create_runtime_hook_leaves_nothing,
    container_hooks_run_in_a_joined_user_namespace
);

fn host_hook(file: &std::path::Path) -> serde_json::Value {
    serde_json::json!({"path": "/bin/busybox", "args": ["sh", "-c", format!("cat > {}", file.display())]})
}

fn hooks_run_at_each_point(rt: &Runtime) {
    let env = Env::new(rt);
    let shared = env.tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    let f = |name: &str| shared.join(format!("{name}.json"));
    let mut config = env.config("hk", &["sleep", "60"]);
    config["mounts"].as_array_mut().unwrap().push(serde_json::json!({"destination": "/shared", "type": "bind", "source": shared, "options": ["rbind"]}));
    config["hooks"] = serde_json::json!({
        "prestart": [host_hook(&f("prestart"))],
        "createRuntime": [host_hook(&f("createRuntime"))],
        "createContainer": [host_hook(&f("createContainer"))],
        // startContainer resolves in the container: its /bin/sh, its /shared.
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", "cat > /shared/startContainer.json"]}],
        "poststart": [host_hook(&f("poststart"))],
        "poststop": [host_hook(&f("poststop"))]
    });
    env.write_config(&config);
    let out = env.run(&["create", "hk"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let pid = env.state("hk").unwrap()["pid"].as_i64().unwrap();
    for name in ["prestart", "createRuntime", "createContainer"] {
        let doc: serde_json::Value =
            serde_json::from_slice(&std::fs::read(f(name)).unwrap()).unwrap();
        assert_eq!(doc["id"], "hk", "{}: {name}", rt.name);
        assert_eq!(doc["status"], "creating", "{}: {name}", rt.name);
        if name != "createContainer" {
            assert_eq!(doc["pid"].as_i64(), Some(pid), "{}: {name}", rt.name);
        }
    }
    assert!(!f("startContainer").exists());
    assert!(env.run(&["start", "hk"]).status.success());
    super::harness::poll_until(
        std::time::Duration::from_secs(5),
        || f("startContainer").exists() && f("poststart").exists(),
        "start hooks",
    );
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f("poststart")).unwrap()).unwrap();
    assert_eq!(doc["id"], "hk");
    assert!(env.run(&["delete", "--force", "hk"]).status.success());
    let doc: serde_json::Value =
        serde_json::from_slice(&std::fs::read(f("poststop")).unwrap()).unwrap();
    assert_eq!(doc["id"], "hk", "{}", rt.name);
    env.assert_nothing_left("hk");
}

fn failing_create_runtime_hook_leaves_nothing(rt: &Runtime) {
    let env = Env::new(rt);
    let mut config = env.config("hkfail", &["true"]);
    config["hooks"] = serde_json::json!({
        "createRuntime": [{"path": "/bin/busybox", "args": ["sh", "-c", "echo hook-broke >&2; exit 3"]}]
    });
    env.write_config(&config);
    let out = env.run(&["create", "hkfail"]);
    assert!(!out.status.success(), "{}: create succeeded", rt.name);
    if rt.name == "berth-lowrt" {
        assert!(
            stderr(&out).contains("createRuntime hook /bin/busybox failed")
                && stderr(&out).contains("hook-broke"),
            "{}",
            stderr(&out)
        );
    }
    env.assert_nothing_left("hkfail");
}

/// createContainer and startContainer run in the container's namespaces (runtime-spec),
/// also when the container joins an existing user namespace by path: the one our
/// `unshare --user sleep` holder made and we mapped.
fn container_hooks_run_in_a_joined_user_namespace(rt: &Runtime) {
    use std::os::unix::fs::PermissionsExt;
    use std::process::{Command, Stdio};
    let env = Env::new(rt);
    let mut holder = Command::new("unshare")
        .args(["--user", "/bin/busybox", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let hpid = holder.id();
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let ns_path = format!("/proc/{hpid}/ns/user");
    super::harness::poll_until(
        std::time::Duration::from_secs(10),
        || std::fs::read_link(&ns_path).is_ok_and(|l| l != own),
        "the holder to enter its user namespace",
    );
    let holder_ns = std::fs::read_link(&ns_path).unwrap();
    std::fs::write(format!("/proc/{hpid}/uid_map"), "0 100000 65536").unwrap();
    std::fs::write(format!("/proc/{hpid}/gid_map"), "0 100000 65536").unwrap();
    // Written by the hooks as the namespace's root, host uid 100000.
    let shared = env.tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::set_permissions(&shared, std::fs::Permissions::from_mode(0o777)).unwrap();
    std::fs::create_dir(env.bundle.join("rootfs/shared")).unwrap();
    let report = "readlink /proc/self/ns/user; readlink /proc/self/ns/mnt";
    let mut config = env.config("hkns", &["sleep", "60"]);
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!(
            {"destination": "/shared", "type": "bind", "source": shared, "options": ["rbind"]}
        ));
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user", "path": ns_path}));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
    let create_out = shared.join("createContainer");
    config["hooks"] = serde_json::json!({
        "createContainer": [{"path": "/bin/busybox", "args": ["sh", "-c", format!("({report}) > {}", create_out.display())]}],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", format!("({report}) > /shared/startContainer")]}]
    });
    env.write_config(&config);
    let out = env.run(&["create", "hkns"]);
    let created = out.status.success();
    let init_ns = env.state("hkns").map(|s| {
        let pid = s["pid"].as_i64().unwrap();
        std::fs::read_link(format!("/proc/{pid}/ns/mnt")).unwrap()
    });
    let started = created && env.run(&["start", "hkns"]).status.success();
    if started {
        super::harness::poll_until(
            std::time::Duration::from_secs(5),
            // The shell creates the file before it writes: wait for both lines.
            || {
                std::fs::read_to_string(shared.join("startContainer"))
                    .is_ok_and(|t| t.lines().count() == 2)
            },
            "the startContainer hook",
        );
    }
    let _ = env.run(&["delete", "--force", "hkns"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(created && started, "{}: {}", rt.name, stderr(&out));
    let want = format!("{}\n{}\n", holder_ns.display(), init_ns.unwrap().display());
    for hook in ["createContainer", "startContainer"] {
        let got = std::fs::read_to_string(shared.join(hook)).unwrap_or_default();
        assert_eq!(got, want, "{}: {hook}", rt.name);
    }
    env.assert_nothing_left("hkns");
}
