//! create → start → kill → delete, and the state machine's refusals.

use super::harness::{both_runtimes, stderr, Env, Runtime};

both_runtimes!(
    create_start_kill_delete,
    delete_running_needs_force,
    start_twice_fails,
    list_shows_containers,
    update_pause_resume,
    update_with_resource_flags
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

const SUBREAPER_ENV: &str = "LOWRT_TEST_SUBREAPER_HELPER";

/// Like the shim: a child subreaper runs `create` and `start`, the runtime exits, and
/// init must then be the subreaper's own child (so it can reap it). The subreaper bit is
/// process-wide, so the check runs in a child copy of this test binary.
#[test]
fn init_is_reparented_to_subreaper() {
    if super::harness::skip_unless_root("init_is_reparented_to_subreaper") {
        return;
    }
    let exe = std::env::current_exe().unwrap();
    let out = super::harness::output_with_deadline(
        {
            let mut c = std::process::Command::new(exe);
            c.args([
                "--exact",
                "suite::lifecycle::subreaper_helper",
                "--nocapture",
                "--test-threads=1",
            ]);
            c.env(SUBREAPER_ENV, "1");
            c
        },
        std::time::Duration::from_secs(60),
    );
    let text = format!("{}{}", String::from_utf8_lossy(&out.stdout), stderr(&out));
    assert!(out.status.success(), "helper failed: {text}");
    assert!(text.contains("SUBREAPER-OK"), "helper did not run: {text}");
}

/// Runs only inside `init_is_reparented_to_subreaper`'s child process.
#[test]
fn subreaper_helper() {
    if std::env::var_os(SUBREAPER_ENV).is_none() {
        return;
    }
    nix::sys::prctl::set_child_subreaper(true).unwrap();
    let env = Env::new(&super::harness::berth());
    env.write_config(&env.config("reap", &["sh", "-c", "exit 5"]));
    let pid_file = env.tmp.path().join("init.pid");
    let out = env.run(&["create", "--pid-file", pid_file.to_str().unwrap(), "reap"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid: i32 = std::fs::read_to_string(&pid_file).unwrap().parse().unwrap();
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    let ppid = status
        .lines()
        .find_map(|l| l.strip_prefix("PPid:"))
        .unwrap()
        .trim();
    assert_eq!(ppid, std::process::id().to_string(), "init's parent");
    assert!(env.run(&["start", "reap"]).status.success());
    // waitpid works only on our own child: this is what the shim relies on.
    let st = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(pid), None).unwrap();
    assert_eq!(
        st,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(pid), 5)
    );
    assert_eq!(env.status("reap").as_deref(), Some("stopped"));
    assert!(env.run(&["delete", "reap"]).status.success());
    env.assert_nothing_left("reap");
    println!("SUBREAPER-OK");
}

/// `update --resources FILE`, `pause`, `resume` on a running container.
fn update_pause_resume(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("upd", &["sleep", "60"]));
    assert!(env.run(&["run", "--detach", "upd"]).status.success());
    env.wait_status("upd", "running");
    let res = env.tmp.path().join("res.json");
    std::fs::write(&res, r#"{"memory":{"limit":33554432},"pids":{"limit":32}}"#).unwrap();
    let out = env.run(&["update", "--resources", res.to_str().unwrap(), "upd"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let dir = |ctrl: &str| {
        std::path::PathBuf::from(format!("/sys/fs/cgroup/{ctrl}{}/upd", env.cgroup_parent))
    };
    if dir("memory").exists() {
        assert_eq!(
            std::fs::read_to_string(dir("memory").join("memory.limit_in_bytes"))
                .unwrap()
                .trim(),
            "33554432"
        );
        assert_eq!(
            std::fs::read_to_string(dir("pids").join("pids.max"))
                .unwrap()
                .trim(),
            "32"
        );
    }
    let out = env.run(&["pause", "upd"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    assert_eq!(env.status("upd").as_deref(), Some("paused"));
    let out = env.run(&["resume", "upd"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    assert_eq!(env.status("upd").as_deref(), Some("running"));
    assert!(env.run(&["delete", "--force", "upd"]).status.success());
    env.assert_nothing_left("upd");
}

#[test]
fn features_document_is_json() {
    let out = std::process::Command::new(super::harness::berth().bin)
        .arg("features")
        .output()
        .unwrap();
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ociVersionMax"], "1.0.2-dev");
    assert!(v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&serde_json::json!("pid")));
}

/// The runtime is SIGKILLed in the middle of `create` (by a createRuntime hook killing
/// its parent): `delete --force` must still remove the state dir and the cgroups.
#[test]
fn delete_force_cleans_after_runtime_died_mid_create() {
    if super::harness::skip_unless_root("delete_force_cleans_after_runtime_died_mid_create") {
        return;
    }
    let env = Env::new(&super::harness::berth());
    let mut config = env.config("crash", &["sleep", "60"]);
    config["hooks"] = serde_json::json!({"createRuntime": [{"path": "/bin/busybox", "args": ["sh", "-c", "kill -9 $PPID"]}]});
    env.write_config(&config);
    let out = env.run(&["create", "crash"]);
    assert_eq!(
        out.status.code(),
        None,
        "runtime should have died of SIGKILL: {}",
        stderr(&out)
    );
    assert!(env.root.join("crash").exists(), "expected debris to clean");
    let out = env.run(&["delete", "--force", "crash"]);
    assert!(out.status.success(), "{}", stderr(&out));
    env.assert_nothing_left("crash");
}

/// runc's per-resource flags of `update`, with runc's units; the cgroup files show them.
fn update_with_resource_flags(rt: &Runtime) {
    let env = Env::new(rt);
    env.write_config(&env.config("updf", &["sleep", "60"]));
    assert!(env.run(&["run", "--detach", "updf"]).status.success());
    env.wait_status("updf", "running");
    let out = env.run(&[
        "update",
        "--memory",
        "48m",
        "--pids-limit",
        "20",
        "--cpu-period",
        "100000",
        "--cpu-quota",
        "50000",
        "--cpu-share",
        "512",
        "updf",
    ]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let read = |ctrl: &str, file: &str| {
        let path = format!("/sys/fs/cgroup/{ctrl}{}/updf/{file}", env.cgroup_parent);
        std::fs::read_to_string(path).map(|s| s.trim().to_owned())
    };
    if let Ok(limit) = read("memory", "memory.limit_in_bytes") {
        assert_eq!(limit, (48u64 << 20).to_string(), "{}", rt.name);
        assert_eq!(read("pids", "pids.max").unwrap(), "20", "{}", rt.name);
        assert_eq!(
            read("cpu", "cpu.cfs_quota_us").unwrap(),
            "50000",
            "{}",
            rt.name
        );
        assert_eq!(
            read("cpu", "cpu.cfs_period_us").unwrap(),
            "100000",
            "{}",
            rt.name
        );
        assert_eq!(read("cpu", "cpu.shares").unwrap(), "512", "{}", rt.name);
    }
    // A second update names only pids: the memory limit stays.
    let out = env.run(&["update", "--pids-limit", "30", "updf"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    if let Ok(limit) = read("memory", "memory.limit_in_bytes") {
        assert_eq!(limit, (48u64 << 20).to_string(), "{}", rt.name);
        assert_eq!(read("pids", "pids.max").unwrap(), "30", "{}", rt.name);
    }
    assert!(env.run(&["delete", "--force", "updf"]).status.success());
    env.assert_nothing_left("updf");
}
