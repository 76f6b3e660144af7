//! `berth-shim start`: detaching, bad input, late highd, inherited descriptors.

use std::process::{Command, Stdio};
use std::time::Duration;

use berth_proto::any::Event;
use berth_proto::containerd::task::v2::task_client::TaskClient;
use berth_proto::containerd::task::v2::{
    ConnectRequest, ShutdownRequest, StartRequest, WaitRequest,
};
use berth_proto::transport::connect_unix;

use crate::harness::{pid_alive, poll, skip_unless_root, FakeEvents, Fixture};

fn stat_field(pid: u32, index: usize) -> Option<i64> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields after the parenthesized command: state ppid pgrp session ...
    stat.rsplit(')')
        .next()?
        .split_whitespace()
        .nth(index)?
        .parse()
        .ok()
}

#[tokio::test]
async fn shim_survives_its_parent_being_killed() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("shim_survives_its_parent_being_killed") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["sleep", "1000"])?;
        let start = fx.start_command();
        let args: Vec<String> = start
            .get_args()
            .map(|a| format!("'{}'", a.to_string_lossy()))
            .collect();
        // A parent that runs `start` and then lingers, like a daemon that will be SIGKILLed.
        let script = format!(
            "'{}' {} >/dev/null && exec sleep 1000",
            crate::harness::shim(),
            args.join(" ")
        );
        let mut parent = Command::new("/bin/sh")
            .args(["-c", &script])
            .stdin(Stdio::null())
            .spawn()?;
        let pid_file = fx.bundle.join("shim.pid");
        let shim_pid: u32 = poll(Duration::from_secs(20), || {
            std::fs::read_to_string(&pid_file).ok()?.trim().parse().ok()
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("shim.pid never appeared"))?;
        fx.shim_pid = Some(shim_pid);
        assert_ne!(
            stat_field(shim_pid, 1),
            Some(i64::from(parent.id())),
            "shim is the caller's child"
        );
        assert_eq!(
            stat_field(shim_pid, 3),
            Some(i64::from(shim_pid)),
            "shim is not a session leader"
        );

        parent.kill()?;
        parent.wait()?;
        let mut client = TaskClient::new(connect_unix(fx.bundle.join("shim.sock")).await?);
        let connected = client
            .connect(ConnectRequest { id: fx.id.clone() })
            .await?
            .into_inner();
        assert_eq!(connected.shim_pid, shim_pid);
        assert!(pid_alive(shim_pid));
        client
            .shutdown(ShutdownRequest {
                id: fx.id.clone(),
                now: false,
            })
            .await?;
        let gone = poll(Duration::from_secs(15), || {
            (!pid_alive(shim_pid)).then_some(())
        })
        .await;
        assert!(gone.is_some(), "shim did not exit on Shutdown");
        fx.shim_pid = None;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn bad_flags_fail_start_and_leave_nothing() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        let fx = Fixture::new(&["true"])?;
        let before: Vec<_> = std::fs::read_dir(&fx.bundle)?
            .flatten()
            .map(|e| e.path())
            .collect();
        let out = fx.start_command_with("../escape", "runc").output()?;
        assert_eq!(out.status.code(), Some(1));
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains("invalid task id"), "stderr: {stderr}");
        let out = fx.start_command_with(&fx.id, "no-such-runtime").output()?;
        assert_eq!(out.status.code(), Some(1));
        assert!(String::from_utf8_lossy(&out.stderr).contains("no-such-runtime"));
        let after: Vec<_> = std::fs::read_dir(&fx.bundle)?
            .flatten()
            .map(|e| e.path())
            .collect();
        assert_eq!(before, after, "start left files behind");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn task_exit_reaches_highd_that_comes_up_late() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("task_exit_reaches_highd_that_comes_up_late") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["sh", "-c", "exit 7"])?;
        let mut client = fx.start_shim().await?;
        client.create(fx.create_request("", "")).await?;
        client
            .start(StartRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?;
        let exit = client
            .wait(WaitRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(exit.exit_status, 7);
        assert!(fx.bundle.join("exit.json").exists());

        // highd comes up only now; the queued events must still arrive, in order.
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let exit_event = poll(Duration::from_secs(30), || {
            events.events().into_iter().find_map(|(_, _, e)| match e {
                Event::TaskExit(exit) => Some(exit),
                _ => None,
            })
        })
        .await
        .ok_or_else(|| anyhow::anyhow!("TaskExit never delivered; got {:?}", events.topics()))?;
        assert_eq!(exit_event.exit_status, 7);
        assert_eq!(
            events.topics()[..3],
            ["/tasks/create", "/tasks/start", "/tasks/exit"]
        );
        fx.delete_and_shutdown(&mut client).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn inherited_descriptors_are_not_kept() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("inherited_descriptors_are_not_kept") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["true"])?;
        // A pipe without O_CLOEXEC, as a careless caller (or a jobserver) would leak it.
        let (leak_r, leak_w) = nix::unistd::pipe()?;
        let inode = nix::sys::stat::fstat(&leak_r)?.st_ino;
        let mut client = fx.start_shim().await?;
        drop((leak_r, leak_w));
        let pid = fx.shim_pid.unwrap_or_default();
        let held: Vec<String> = std::fs::read_dir(format!("/proc/{pid}/fd"))?
            .flatten()
            .filter_map(|e| std::fs::read_link(e.path()).ok())
            .map(|p| p.display().to_string())
            .collect();
        let leaked = format!("pipe:[{inode}]");
        assert!(
            !held.contains(&leaked),
            "daemon kept the caller's pipe: {held:?}"
        );
        client
            .shutdown(ShutdownRequest {
                id: fx.id.clone(),
                now: false,
            })
            .await?;
        let gone = poll(Duration::from_secs(15), || (!pid_alive(pid)).then_some(())).await;
        assert!(gone.is_some());
        fx.shim_pid = None;
        Ok(())
    })
    .await
}
