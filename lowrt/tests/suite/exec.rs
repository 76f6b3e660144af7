//! `exec` into a running container.

use super::harness::{both_runtimes, poll_until, stderr, stdout, Env, Runtime};

both_runtimes!(
    exec_joins_namespaces,
    exec_detach_writes_pid_file,
    exec_missing_binary_fails,
    exec_with_process_json
);

fn running(env: &Env, id: &str) {
    env.write_config(&env.config(id, &["sleep", "60"]));
    let out = env.run(&["run", "--detach", id]);
    assert!(out.status.success(), "{}: {}", env.rt.name, stderr(&out));
    env.wait_status(id, "running");
}

fn exec_joins_namespaces(rt: &Runtime) {
    let env = Env::new(rt);
    running(&env, "ex");
    let out = env.run(&[
        "exec",
        "ex",
        "sh",
        "-c",
        "hostname; cat /proc/1/cmdline | tr '\\0' ' '; echo; exit 7",
    ]);
    assert_eq!(out.status.code(), Some(7), "{}: {}", rt.name, stderr(&out));
    assert_eq!(stdout(&out), "berth-test\nsleep 60 \n", "{}", rt.name);
    let out = env.run(&[
        "exec",
        "--env",
        "FOO=bar",
        "--cwd",
        "/tmp",
        "ex",
        "sh",
        "-c",
        "echo $FOO $(pwd)",
    ]);
    assert_eq!(stdout(&out), "bar /tmp\n", "{}: {}", rt.name, stderr(&out));
}

fn exec_detach_writes_pid_file(rt: &Runtime) {
    let env = Env::new(rt);
    running(&env, "exd");
    let pid_file = env.tmp.path().join("exec.pid");
    let out = env.run(&[
        "exec",
        "--detach",
        "--pid-file",
        pid_file.to_str().unwrap(),
        "exd",
        "sleep",
        "30",
    ]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let pid = std::fs::read_to_string(&pid_file)
        .unwrap()
        .trim()
        .to_owned();
    // runc writes the pid file before its `runc init` has exec'd the process.
    super::harness::poll_until(
        std::time::Duration::from_secs(10),
        || {
            std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                .is_ok_and(|c| c == "sleep\u{0}30\u{0}")
        },
        &format!("{}: pid {pid} to be the exec'd sleep", rt.name),
    );
    assert_eq!(
        std::fs::read_link(format!("/proc/{pid}/ns/pid")).unwrap(),
        std::fs::read_link(format!("/proc/{}/ns/pid", env.state("exd").unwrap()["pid"])).unwrap()
    );
    let _ = nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(pid.parse().unwrap()),
        nix::sys::signal::Signal::SIGKILL,
    );
    poll_until(
        std::time::Duration::from_secs(5),
        || {
            !std::path::Path::new(&format!("/proc/{pid}/cmdline")).exists()
                || std::fs::read_to_string(format!("/proc/{pid}/cmdline"))
                    .map(|s| s.is_empty())
                    .unwrap_or(true)
        },
        "exec process to die",
    );
}

fn exec_missing_binary_fails(rt: &Runtime) {
    let env = Env::new(rt);
    running(&env, "exm");
    let out = env.run(&["exec", "exm", "/nonexistent"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no such file or directory"),
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    assert_eq!(env.status("exm").as_deref(), Some("running"));
}

/// The shim's form: `exec --process P.json --detach --pid-file F`.
fn exec_with_process_json(rt: &Runtime) {
    let env = Env::new(rt);
    running(&env, "exp");
    let process = serde_json::json!({
        "terminal": false,
        "user": {"uid": 65534, "gid": 65534},
        "args": ["sh", "-c", "echo $X $(id -u) $(pwd) > /tmp/out; cat /proc/self/status | grep CapEff"],
        "env": ["PATH=/bin", "X=from-json"],
        "cwd": "/tmp"
    });
    let p = env.tmp.path().join("process.json");
    std::fs::write(&p, serde_json::to_vec(&process).unwrap()).unwrap();
    let out = env.run(&["exec", "--process", p.to_str().unwrap(), "exp"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    assert_eq!(
        stdout(&out).split_whitespace().collect::<Vec<_>>(),
        ["CapEff:", "0000000000000000"],
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    let out = env.run(&["exec", "exp", "cat", "/tmp/out"]);
    assert_eq!(
        stdout(&out),
        "from-json 65534 /tmp\n",
        "{}: {}",
        rt.name,
        stderr(&out)
    );
}
