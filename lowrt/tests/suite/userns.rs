//! A new user namespace: root in the container is an unprivileged host uid.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::harness::{both_runtimes, poll_until, stderr, stdout, Env, Runtime};

both_runtimes!(
    user_namespace_maps_root,
    join_user_namespace_by_path,
    new_user_namespace_joins_host_owned_namespaces
);

fn user_namespace_maps_root(rt: &Runtime) {
    let env = Env::new(rt);
    let script = "cat /proc/self/uid_map | tr -s ' '; id -u; touch /tmp/x && echo tmp-ok; \
                  hostname; ls -ln /bin/busybox | tr -s ' ' | cut -d' ' -f3";
    let mut config = env.config("uns", &["sh", "-c", script]);
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user"}));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
    env.write_config(&config);
    let out = env.run(&["run", "uns"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    // The rootfs belongs to host root, which is unmapped inside: it shows as 65534.
    assert_eq!(
        lines,
        ["0 100000 65536", "0", "tmp-ok", "berth-test", "65534"],
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    env.assert_nothing_left("uns");

    // exec joins the user namespace first, then the others.
    config["process"]["args"] = serde_json::json!(["sleep", "60"]);
    env.write_config(&config);
    assert!(env.run(&["run", "--detach", "uns2"]).status.success());
    env.wait_status("uns2", "running");
    let pid = env.state("uns2").unwrap()["pid"].as_i64().unwrap();
    let out = env.run(&[
        "exec",
        "uns2",
        "sh",
        "-c",
        "id -u; readlink /proc/self/ns/user",
    ]);
    let want = std::fs::read_link(format!("/proc/{pid}/ns/user")).unwrap();
    assert_eq!(
        stdout(&out),
        format!("0\n{}\n", want.display()),
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    let host_uid = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    assert!(
        host_uid.lines().any(|l| l.starts_with("Uid:\t100000\t")),
        "{}: {host_uid}",
        rt.name
    );
}

/// A user namespace held by a sleeping process we start (unshare -U, maps written by us):
/// the container joins it by path, and its other new namespaces are owned by it.
fn join_user_namespace_by_path(rt: &Runtime) {
    let env = Env::new(rt);
    let mut holder = Command::new("unshare")
        .args(["--user", "/bin/busybox", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let own = std::fs::read_link("/proc/self/ns/user").unwrap();
    let ns_path = format!("/proc/{pid}/ns/user");
    poll_until(
        Duration::from_secs(10),
        || std::fs::read_link(&ns_path).is_ok_and(|l| l != own),
        "the holder to enter its user namespace",
    );
    let holder_ns = std::fs::read_link(&ns_path).unwrap();
    std::fs::write(format!("/proc/{pid}/uid_map"), "0 100000 65536").unwrap();
    std::fs::write(format!("/proc/{pid}/gid_map"), "0 100000 65536").unwrap();

    let script = "cat /proc/self/uid_map | tr -s ' '; id -u; readlink /proc/self/ns/user; hostname";
    let mut config = env.config("ujoin", &["sh", "-c", script]);
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(serde_json::json!({"type": "user", "path": ns_path}));
    // runc 1.1 wants the mappings spelled out even for a joined namespace.
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
    env.write_config(&config);
    let out = env.run(&["run", "ujoin"]);
    let _ = holder.kill();
    let _ = holder.wait();
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "0 100000 65536",
            "0",
            holder_ns.to_str().unwrap(),
            "berth-test"
        ],
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    env.assert_nothing_left("ujoin");
}

/// A new user namespace together with network and ipc namespaces given by path that the
/// host's user namespace owns (held by an `unshare --net --ipc sleep` we start): they are
/// joined before the user namespace exists (runc's nsexec order), the rest is new and
/// owned by the new user namespace; `exec` joins the same ones (berth only: runc 1.1's
/// exec cannot).
fn new_user_namespace_joins_host_owned_namespaces(rt: &Runtime) {
    let env = Env::new(rt);
    let mut holder = Command::new("unshare")
        .args(["--net", "--ipc", "/bin/busybox", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let pid = holder.id();
    let own = std::fs::read_link("/proc/self/ns/ipc").unwrap();
    let ns = |kind: &str| format!("/proc/{pid}/ns/{kind}");
    poll_until(
        Duration::from_secs(10),
        || std::fs::read_link(ns("ipc")).is_ok_and(|l| l != own),
        "the holder to enter its namespaces",
    );
    let link = |kind: &str| {
        std::fs::read_link(ns(kind))
            .unwrap()
            .to_string_lossy()
            .into_owned()
    };
    let (net, ipc) = (link("net"), link("ipc"));
    let script = "id -u; readlink /proc/self/ns/net; readlink /proc/self/ns/ipc; \
                  cat /proc/self/uid_map | tr -s ' '; hostname; exec sleep 60 2>&1";
    let mut config = env.config("unsjoin", &["sh", "-c", script]);
    // mqueue can only be mounted by the owner of the ipc namespace, sysfs by the owner of
    // the network namespace (runc 1.1 does not fall back to a bind of /sys then).
    config["mounts"]
        .as_array_mut()
        .unwrap()
        .retain(|m| !["mqueue", "sysfs", "cgroup"].contains(&m["type"].as_str().unwrap()));
    let list = config["linux"]["namespaces"].as_array_mut().unwrap();
    list.retain(|n| n["type"] != "network" && n["type"] != "ipc");
    list.push(serde_json::json!({"type": "network", "path": ns("net")}));
    list.push(serde_json::json!({"type": "ipc", "path": ns("ipc")}));
    list.push(serde_json::json!({"type": "user"}));
    let map = serde_json::json!([{"containerID": 0, "hostID": 100000, "size": 65536}]);
    config["linux"]["uidMappings"] = map.clone();
    config["linux"]["gidMappings"] = map;
    env.write_config(&config);
    let log = env.tmp.path().join("out");
    let mut cmd = env.cmd(&["run", "--detach", "unsjoin"]);
    cmd.stdout(std::fs::File::create(&log).unwrap());
    let out = cmd.output().unwrap();
    let ok = out.status.success();
    // Not poll_until: a timeout must still clean up below.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while ok
        && std::fs::read_to_string(&log).map_or(0, |t| t.lines().count()) < 5
        && std::time::Instant::now() < deadline
    {
        std::thread::sleep(Duration::from_millis(20));
    }
    let exec = ok.then(|| {
        env.run(&[
            "exec",
            "unsjoin",
            "sh",
            "-c",
            "id -u; readlink /proc/self/ns/net",
        ])
    });
    let user_ns = env.state("unsjoin").and_then(|s| {
        let init = s["pid"].as_i64().unwrap();
        std::fs::read_link(format!("/proc/{init}/ns/user")).ok()
    });
    let _ = env.run(&["delete", "--force", "unsjoin"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(ok, "{}: {}", rt.name, stderr(&out));
    let text = std::fs::read_to_string(&log).unwrap_or_default();
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        [
            "0",
            net.as_str(),
            ipc.as_str(),
            "0 100000 65536",
            "berth-test"
        ],
        "{}",
        rt.name
    );
    assert_ne!(user_ns, std::fs::read_link("/proc/self/ns/user").ok());
    // runc 1.1 joins the user namespace first and is then refused the ipc namespace
    // ("failed to setns into ipc namespace"); runc 1.2 joins the others first, as we do.
    if rt.name == "runc" {
        return env.assert_nothing_left("unsjoin");
    }
    let exec = exec.unwrap();
    assert_eq!(
        stdout(&exec),
        format!("0\n{net}\n"),
        "{}: {}",
        rt.name,
        stderr(&exec)
    );
    env.assert_nothing_left("unsjoin");
}
