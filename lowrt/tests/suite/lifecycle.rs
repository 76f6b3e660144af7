//! create → start → kill → delete, and the state machine's refusals.

use super::harness::{both_runtimes, stderr, Env, Runtime};

both_runtimes!(
    create_start_kill_delete,
    delete_running_needs_force,
    start_twice_fails,
    list_shows_containers
);

fn create_start_kill_delete(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("life", &["sleep", "60"]));
    let pid_file = env.tmp.path().join("init.pid");
    let out = env.run(&["create", "--pid-file", pid_file.to_str().unwrap(), "life"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let state = env.state("life").unwrap();
    assert_eq!(state["status"], "created");
    assert_eq!(state["id"], "life");
    let pid: i64 = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert_eq!(state["pid"].as_i64(), Some(pid));
    assert_eq!(state["bundle"].as_str(), env.bundle.to_str());
    assert!(std::path::Path::new(&format!("/proc/{pid}")).exists());

    let out = env.run(&["start", "life"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    assert_eq!(env.status("life").as_deref(), Some("running"));
    // The container is in its cgroup.
    let procs = env
        .cgroup_dirs()
        .iter()
        .map(|d| d.join("life/cgroup.procs"))
        .find(|p| p.exists())
        .unwrap();
    assert!(std::fs::read_to_string(procs)
        .unwrap()
        .lines()
        .any(|l| l == pid.to_string()));

    let out = env.run(&["kill", "life", "KILL"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    env.wait_status("life", "stopped");
    let out = env.run(&["delete", "life"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    env.assert_nothing_left("life");
    assert!(env.state("life").is_none());
}

fn delete_running_needs_force(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("del", &["sleep", "60"]));
    assert!(env.run(&["run", "--detach", "del"]).status.success());
    env.wait_status("del", "running");
    let out = env.run(&["delete", "del"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not stopped"),
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    let out = env.run(&["delete", "--force", "del"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    env.assert_nothing_left("del");
}

fn start_twice_fails(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("twice", &["sleep", "60"]));
    assert!(env.run(&["create", "twice"]).status.success());
    assert!(env.run(&["start", "twice"]).status.success());
    let out = env.run(&["start", "twice"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot start an already running container"),
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    assert!(env.run(&["delete", "--force", "twice"]).status.success());
    env.assert_nothing_left("twice");
}

fn list_shows_containers(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("l1", &["sleep", "60"]));
    assert!(env.run(&["create", "l1"]).status.success());
    let out = env.run(&["list", "-q"]);
    assert_eq!(String::from_utf8_lossy(&out.stdout), "l1\n");
    let out = env.run(&["list", "--format", "json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v[0]["id"], "l1");
    assert_eq!(v[0]["status"], "created");
    let out = env.run(&["delete", "l1"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    env.assert_nothing_left("l1");
}
