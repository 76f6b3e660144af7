//! SCMP_ACT_NOTIFY with linux.seccomp.listenerPath: the runtime sends runc's container
//! process state JSON with the notify fd (SCM_RIGHTS) to the listener, which then answers
//! the container's intercepted syscalls itself.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::sync::mpsc;
use std::time::Duration;

use libseccomp::{ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use serde_json::{json, Value};

use super::harness::{berth, both_runtimes, skip_unless_root, stderr, stdout, Env, Runtime};

both_runtimes!(
    seccomp_notify_listener_answers_mkdir,
    seccomp_notify_reaches_listener_for_exec
);

fn seccomp_notify_listener_answers_mkdir(rt: &Runtime) {
    notify_answers_mkdir(rt, json!([]));
}

/// WAIT_KILLABLE_RECV (Linux 5.19) is not in Debian's libseccomp 2.5; lowrt loads the
/// filter with seccomp(2) itself, so the flag works and the listener still answers. runc
/// 1.1 with libseccomp 2.5 cannot: berth only.
#[test]
fn seccomp_wait_killable_recv_keeps_the_listener_working() {
    if skip_unless_root("seccomp_wait_killable_recv_keeps_the_listener_working") {
        return;
    }
    notify_answers_mkdir(&berth(), json!(["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]));
}

/// The runtime's connection to `listenerPath`: runc's state JSON and the notify fd.
pub(super) fn accept_notify_fd(listener: &UnixListener) -> (Value, OwnedFd) {
    let (conn, _) = listener.accept().unwrap();
    let mut buf = vec![0u8; 64 * 1024];
    let (n, fd) = berth_lowrt::sys::recv_packet(conn.as_fd(), &mut buf).unwrap();
    let state: Value = serde_json::from_slice(&buf[..n]).unwrap();
    (state, fd.expect("no fd with the state"))
}

fn notify_answers_mkdir(rt: &Runtime, flags: Value) {
    let env = Env::new(rt);
    let sock = env.tmp.path().join("listener.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (tx, rx) = mpsc::channel::<(Value, String)>();
    // The listener: take the state and fd, answer one mkdir with "success" without
    // creating anything, so the container sees mkdir succeed and the directory absent.
    let handle = std::thread::spawn(move || {
        let (state, fd) = accept_notify_fd(&listener);
        let req = ScmpNotifReq::receive(fd.as_raw_fd()).unwrap();
        let name = req.data.syscall.get_name().unwrap_or_default();
        ScmpNotifResp::new_val(req.id, 0, ScmpNotifRespFlags::empty())
            .respond(fd.as_raw_fd())
            .unwrap();
        tx.send((state, name)).unwrap();
    });
    // ls itself opens one fd: 0, 1, 2 and its own. A leaked notify fd would make it 5.
    let script = "mkdir /tmp/x && echo mkdir-ok; [ -d /tmp/x ] && echo exists || echo absent; \
                  ls /proc/self/fd | wc -l";
    let mut config = env.config("notif", &["sh", "-c", script]);
    config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "listenerMetadata": "berth-test-meta",
        "flags": flags,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    env.write_config(&config);
    let out = env.run(&["run", "notif"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines,
        ["mkdir-ok", "absent", "4"],
        "{}: {}",
        rt.name,
        stderr(&out)
    );
    let (state, name) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle.join().unwrap();
    assert!(name == "mkdir" || name == "mkdirat", "{}: {name}", rt.name);
    assert_eq!(state["fds"], json!(["seccompFd"]), "{}: {state}", rt.name);
    assert_eq!(state["metadata"], "berth-test-meta", "{}: {state}", rt.name);
    assert_eq!(state["state"]["id"], "notif", "{}: {state}", rt.name);
    assert!(
        state["pid"].as_i64().unwrap_or(0) > 0,
        "{}: {state}",
        rt.name
    );
    assert_eq!(state["pid"], state["state"]["pid"], "{}: {state}", rt.name);
    env.assert_nothing_left("notif");
}

/// `exec` into a container with a notifying profile hands its own notify fd over too.
fn seccomp_notify_reaches_listener_for_exec(rt: &Runtime) {
    let env = Env::new(rt);
    let sock = env.tmp.path().join("listener.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let (tx, rx) = mpsc::channel::<(Value, String)>();
    // First connection: init's fd (nothing to answer). Second: the exec'd process's.
    let handle = std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 * 1024];
        let (first, _) = listener.accept().unwrap();
        let (_, init_fd) = berth_lowrt::sys::recv_packet(first.as_fd(), &mut buf).unwrap();
        let (conn, _) = listener.accept().unwrap();
        let (n, fd) = berth_lowrt::sys::recv_packet(conn.as_fd(), &mut buf).unwrap();
        let state: Value = serde_json::from_slice(&buf[..n]).unwrap();
        let fd = fd.expect("no fd with the exec state");
        let req = ScmpNotifReq::receive(fd.as_raw_fd()).unwrap();
        let name = req.data.syscall.get_name().unwrap_or_default();
        ScmpNotifResp::new_error(req.id, -libc::EXDEV, ScmpNotifRespFlags::empty())
            .respond(fd.as_raw_fd())
            .unwrap();
        drop(init_fd);
        tx.send((state, name)).unwrap();
    });
    let mut config = env.config("notex", &["sleep", "60"]);
    config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_NOTIFY"}]
    });
    env.write_config(&config);
    let out = env.run(&["run", "--detach", "notex"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let init_pid = env.state("notex").unwrap()["pid"].as_i64().unwrap();
    // The listener answers EXDEV: the container sees exactly that error.
    let out = env.run(&["exec", "notex", "sh", "-c", "mkdir /tmp/y 2>&1; echo rc=$?"]);
    let text = stdout(&out);
    assert!(
        text.contains("rc=1"),
        "{}: {text} {}",
        rt.name,
        stderr(&out)
    );
    assert!(
        text.to_lowercase().contains("cross-device"),
        "{}: {text}",
        rt.name
    );
    let (state, name) = rx.recv_timeout(Duration::from_secs(10)).unwrap();
    handle.join().unwrap();
    assert!(name == "mkdir" || name == "mkdirat", "{}: {name}", rt.name);
    assert_eq!(
        state["state"]["pid"].as_i64(),
        Some(init_pid),
        "{}: {state}",
        rt.name
    );
    assert_ne!(
        state["pid"].as_i64(),
        Some(init_pid),
        "{}: {state}",
        rt.name
    );
    assert!(env.run(&["delete", "--force", "notex"]).status.success());
    env.assert_nothing_left("notex");
}

/// TSYNC, LOG and SPEC_ALLOW load (the errno rule applies); SPEC_ALLOW is visible: without
/// it the kernel forces the speculative store bypass mitigation on a filtered task where
/// the CPU lets it, with it the task keeps the state it inherited (ours). Berth only:
/// runc 1.1.5 refuses this set ("seccomp flags are not yet supported by runc").
#[test]
fn seccomp_flags_are_applied() {
    if skip_unless_root("seccomp_flags_are_applied") {
        return;
    }
    let rt = &berth();
    let env = Env::new(rt);
    let ssb = |status: &str| {
        status
            .lines()
            .find(|l| l.starts_with("Speculation_Store_Bypass:"))
            .map(|l| l.split_once(':').unwrap().1.trim().to_owned())
            .unwrap_or_default()
    };
    let ours = ssb(&std::fs::read_to_string("/proc/self/status").unwrap());
    let script = "mkdir /tmp/x 2>/dev/null && echo made || echo refused; \
                  grep -E '^(Seccomp|Speculation_Store_Bypass):' /proc/self/status";
    for (i, flags) in [
        json!([
            "SECCOMP_FILTER_FLAG_TSYNC",
            "SECCOMP_FILTER_FLAG_LOG",
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW"
        ]),
        json!([]),
    ]
    .into_iter()
    .enumerate()
    {
        let id = format!("scflags{i}");
        let mut config = env.config(&id, &["sh", "-c", script]);
        config["linux"]["seccomp"] = json!({
            "defaultAction": "SCMP_ACT_ALLOW",
            "flags": flags,
            "architectures": ["SCMP_ARCH_X86_64"],
            "syscalls": [{"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}]
        });
        env.write_config(&config);
        let out = env.run(&["run", &id]);
        let text = stdout(&out);
        assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
        assert_eq!(text.lines().next(), Some("refused"), "{}: {text}", rt.name);
        assert!(text.contains("Seccomp:\t2"), "{}: {text}", rt.name);
        let inside = ssb(&text);
        if i == 0 {
            assert_eq!(inside, ours, "{}: SPEC_ALLOW: {text}", rt.name);
        } else if ours.contains("thread vulnerable") {
            assert_eq!(inside, "thread force mitigated", "{}: {text}", rt.name);
        }
        env.assert_nothing_left(&id);
    }
}
