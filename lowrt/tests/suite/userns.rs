//! A new user namespace: root in the container is an unprivileged host uid.

use std::process::{Command, Stdio};
use std::time::Duration;

use super::harness::{both_runtimes, poll_until, stderr, stdout, Env, Runtime};

both_runtimes!(user_namespace_maps_root, join_user_namespace_by_path);

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
