//! SCMP_ACT_LOG, and what SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV changes for a task
//! waiting on a seccomp listener (Documentation/userspace-api/seccomp_filter.rst): once
//! the supervisor has received the notification, a non-fatal signal no longer interrupts
//! the syscall; without the flag it does, and the notification is withdrawn.

use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::net::UnixListener;
use std::time::{Duration, Instant};

use libseccomp::{notify_id_valid, ScmpNotifReq, ScmpNotifResp, ScmpNotifRespFlags};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;
use serde_json::json;

use super::harness::{
    berth, both_runtimes, poll_until, skip_unless_root, stderr, stdout, Env, Runtime,
};
use super::seccomp_notify::accept_notify_fd;

both_runtimes!(
    seccomp_log_action_lets_the_syscall_through,
    seccomp_notify_wait_is_interrupted_by_a_signal
);

/// SCMP_ACT_LOG is accepted and the logged syscall succeeds, with the filter in place
/// (`Seccomp: 2`). Whether the kernel's log line reaches audit or dmesg depends on the
/// host (auditd, kernel.seccomp.actions_logged), so it is not looked at.
fn seccomp_log_action_lets_the_syscall_through(rt: &Runtime) {
    let env = Env::new(rt);
    let script = "mkdir /tmp/x && [ -d /tmp/x ] && echo made; \
                  grep -E '^Seccomp:' /proc/self/status; chmod 700 /tmp/x 2>&1 || echo refused";
    let mut config = env.config("sclog", &["sh", "-c", script]);
    config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [
            {"names": ["mkdir", "mkdirat"], "action": "SCMP_ACT_LOG"},
            // The same filter still enforces its other rules.
            {"names": ["chmod", "fchmodat", "fchmodat2"], "action": "SCMP_ACT_ERRNO", "errnoRet": 1}
        ]
    });
    env.write_config(&config);
    let out = env.run(&["run", "sclog"]);
    let text = stdout(&out);
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    assert_eq!(
        lines.first(),
        Some(&"made"),
        "{}: {text} {}",
        rt.name,
        stderr(&out)
    );
    assert_eq!(lines.get(1), Some(&"Seccomp:\t2"), "{}: {text}", rt.name);
    assert_eq!(lines.last(), Some(&"refused"), "{}: {text}", rt.name);
    env.assert_nothing_left("sclog");
}

fn seccomp_notify_wait_is_interrupted_by_a_signal(rt: &Runtime) {
    signal_during_notification(rt, Case::Plain);
}

/// Berth only: runc 1.1 with Debian's libseccomp 2.5 does not know the flag.
#[test]
fn seccomp_wait_killable_recv_defers_signals_after_receive() {
    if skip_unless_root("seccomp_wait_killable_recv_defers_signals_after_receive") {
        return;
    }
    signal_during_notification(&berth(), Case::KillableAfterReceive);
}

/// The flag's other half: before the supervisor has received the notification, the
/// task still waits interruptibly, so the signal is delivered at once. Berth only.
#[test]
fn seccomp_wait_killable_recv_interrupts_before_receive() {
    if skip_unless_root("seccomp_wait_killable_recv_interrupts_before_receive") {
        return;
    }
    signal_during_notification(&berth(), Case::KillableBeforeReceive);
}

#[derive(Clone, Copy, PartialEq, Debug)]
enum Case {
    /// No flag; the signal comes after the notification was received.
    Plain,
    KillableAfterReceive,
    KillableBeforeReceive,
}

/// Whether `sig` is pending, not yet delivered, for `pid` (ShdPnd: sent to the process).
fn signal_pending(pid: i32, sig: Signal) -> bool {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("ShdPnd:"))
        .and_then(|m| u64::from_str_radix(m.trim(), 16).ok())
        .is_some_and(|mask| mask & (1 << (sig as i32 - 1)) != 0)
}

/// The container's shell (pid 1, with a USR1 trap, so the signal is not fatal and is
/// delivered from outside) runs the `umask` builtin, whose umask(2) the filter sends to
/// our listener, and we send USR1 to the shell while it waits. After we have received
/// the notification: with WAIT_KILLABLE_RECV the shell keeps waiting with USR1 pending,
/// the notification stays valid and our answer is taken; without the flag the wait is
/// interrupted at once, the id is no longer valid and the late answer is refused (the
/// kernel restarts the syscall, which notifies anew). Before we have received it (the
/// notification only queued, POLLIN): interrupted even with the flag, USR1 is delivered.
/// In every case the trap runs and the shell goes on.
fn signal_during_notification(rt: &Runtime, case: Case) {
    let env = Env::new(rt);
    let sock = env.tmp.path().join("listener.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let supervisor = std::thread::spawn(move || {
        let (state, fd) = accept_notify_fd(&listener);
        let usr1 = |pid: i32| kill(Pid::from_raw(pid), Signal::SIGUSR1).unwrap();
        let answer = |id: u64| {
            ScmpNotifResp::new_val(id, 0, ScmpNotifRespFlags::empty())
                .respond(fd.as_raw_fd())
                .is_ok()
        };
        let outcome = match case {
            Case::KillableBeforeReceive => {
                let pid = state["pid"].as_i64().unwrap() as i32;
                wait_readable(&fd);
                usr1(pid);
                poll_until(
                    Duration::from_secs(10),
                    || !signal_pending(pid, Signal::SIGUSR1),
                    "USR1 to be delivered (the wait interrupted)",
                );
                "delivered before receive"
            }
            Case::KillableAfterReceive => {
                let req = ScmpNotifReq::receive(fd.as_raw_fd()).unwrap();
                usr1(req.pid as i32);
                poll_until(
                    Duration::from_secs(10),
                    || signal_pending(req.pid as i32, Signal::SIGUSR1),
                    "USR1 to be pending on the waiting task",
                );
                match (
                    notify_id_valid(fd.as_raw_fd(), req.id).is_ok(),
                    answer(req.id),
                ) {
                    (true, true) => "pending, still valid, answered",
                    _ => "withdrawn despite the flag",
                }
            }
            Case::Plain => {
                let req = ScmpNotifReq::receive(fd.as_raw_fd()).unwrap();
                usr1(req.pid as i32);
                poll_until(
                    Duration::from_secs(10),
                    || notify_id_valid(fd.as_raw_fd(), req.id).is_err(),
                    "the interrupted notification to be withdrawn",
                );
                match answer(req.id) {
                    false => "withdrawn, late answer refused",
                    true => "late answer taken",
                }
            }
        };
        answer_until_hangup(&fd);
        outcome
    });
    let script = "trap 'echo usr1' USR1; umask 027; echo rc=$?";
    let mut config = env.config("scsig", &["sh", "-c", script]);
    let flags = match case {
        Case::Plain => json!([]),
        _ => json!(["SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"]),
    };
    config["linux"]["seccomp"] = json!({
        "defaultAction": "SCMP_ACT_ALLOW",
        "listenerPath": sock,
        "flags": flags,
        "architectures": ["SCMP_ARCH_X86_64"],
        "syscalls": [{"names": ["umask"], "action": "SCMP_ACT_NOTIFY"}]
    });
    env.write_config(&config);
    let out = env.run(&["run", "scsig"]);
    let outcome = supervisor.join().unwrap();
    let text = stdout(&out);
    assert!(
        text.contains("usr1") && text.contains("rc=0"),
        "{}: {text} {}",
        rt.name,
        stderr(&out)
    );
    let want = match case {
        Case::Plain => "withdrawn, late answer refused",
        Case::KillableAfterReceive => "pending, still valid, answered",
        Case::KillableBeforeReceive => "delivered before receive",
    };
    assert_eq!(outcome, want, "{}: {case:?}", rt.name);
    env.assert_nothing_left("scsig");
}

/// Until a notification is queued on `fd` (POLLIN), with a deadline.
fn wait_readable(fd: &OwnedFd) {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        if poll(&mut fds, PollTimeout::from(100u16)).is_ok_and(|n| n > 0) {
            return;
        }
        assert!(Instant::now() < deadline, "no notification queued");
    }
}

/// Answers every further notification "done, 0" until no task uses the filter any more
/// (POLLHUP) or a deadline passes.
fn answer_until_hangup(fd: &OwnedFd) {
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(100u16)) {
            Ok(0) | Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => panic!("poll notify fd: {e}"),
            Ok(_) => {}
        }
        let revents = fds[0].revents().unwrap_or(PollFlags::empty());
        if revents.contains(PollFlags::POLLIN) {
            if let Ok(req) = ScmpNotifReq::receive(fd.as_raw_fd()) {
                let _ = ScmpNotifResp::new_val(req.id, 0, ScmpNotifRespFlags::empty())
                    .respond(fd.as_raw_fd());
            }
        } else if revents.intersects(PollFlags::POLLHUP | PollFlags::POLLERR) {
            return;
        }
    }
}
