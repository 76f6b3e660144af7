//! OCI hooks at their lifecycle points.

use super::harness::{both_runtimes, stderr, Env, Runtime};

both_runtimes!(
    hooks_run_at_each_point,
    failing_create_runtime_hook_leaves_nothing
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
