//! Exec, Kill, terminals and runtime errors.

use std::time::Duration;

use berth_proto::any::{pack_json, LINUX_RESOURCES_TYPE_URL, PROCESS_TYPE_URL};
use berth_proto::containerd::task::v2::task_client::TaskClient;
use berth_proto::containerd::task::v2::{
    CloseIoRequest, DeleteRequest, ExecProcessRequest, KillRequest, PauseRequest, PidsRequest,
    ResizePtyRequest, ResumeRequest, StartRequest, StateRequest, UpdateTaskRequest, WaitRequest,
};
use berth_proto::containerd::v1::types::Status;
use tonic::transport::Channel;

use crate::harness::{poll, skip_unless_root, FakeEvents, Fixture};

fn start_req(fx: &Fixture, exec_id: &str) -> StartRequest {
    StartRequest {
        id: fx.id.clone(),
        exec_id: exec_id.into(),
    }
}

fn wait_req(fx: &Fixture, exec_id: &str) -> WaitRequest {
    WaitRequest {
        id: fx.id.clone(),
        exec_id: exec_id.into(),
    }
}

fn exec_spec(args: &[&str], terminal: bool) -> prost_types::Any {
    let spec = serde_json::json!({
        "terminal": terminal,
        "user": {"uid": 0, "gid": 0},
        "args": args,
        "env": ["PATH=/bin"],
        "cwd": "/",
    });
    pack_json(
        PROCESS_TYPE_URL,
        serde_json::to_vec(&spec).unwrap_or_default(),
    )
}

async fn running_sleeper(fx: &mut Fixture) -> anyhow::Result<TaskClient<Channel>> {
    let mut client = fx.start_shim().await?;
    client.create(fx.create_request("", "")).await?;
    client.start(start_req(fx, "")).await?;
    Ok(client)
}

#[tokio::test]
async fn exec_runs_in_the_container_and_kill_stops_init() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("exec_runs_in_the_container_and_kill_stops_init") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["sleep", "1000"])?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = running_sleeper(&mut fx).await?;

        let out = fx.path("exec.out");
        client
            .exec(ExecProcessRequest {
                id: fx.id.clone(),
                exec_id: "e1".into(),
                stdout: format!("file://{}", out.display()),
                spec: Some(exec_spec(&["sh", "-c", "hostname; exit 5"], false)),
                ..Default::default()
            })
            .await?;
        let pid = client.start(start_req(&fx, "e1")).await?.into_inner().pid;
        assert!(pid > 0);
        let exit = client.wait(wait_req(&fx, "e1")).await?.into_inner();
        assert_eq!(exit.exit_status, 5);
        assert_eq!(std::fs::read_to_string(&out)?, "berth-test\n");
        let pids = client
            .pids(PidsRequest { id: fx.id.clone() })
            .await?
            .into_inner();
        assert!(!pids.processes.is_empty());
        let deleted = client
            .delete(DeleteRequest {
                id: fx.id.clone(),
                exec_id: "e1".into(),
            })
            .await?
            .into_inner();
        assert_eq!(deleted.exit_status, 5);
        let gone = client
            .state(StateRequest {
                id: fx.id.clone(),
                exec_id: "e1".into(),
            })
            .await
            .expect_err("exec forgotten");
        assert_eq!(gone.code(), tonic::Code::NotFound);

        // Kill reaches an exec's own pid.
        client
            .exec(ExecProcessRequest {
                id: fx.id.clone(),
                exec_id: "sleeper".into(),
                spec: Some(exec_spec(&["sleep", "1000"], false)),
                ..Default::default()
            })
            .await?;
        client.start(start_req(&fx, "sleeper")).await?;
        client
            .kill(KillRequest {
                id: fx.id.clone(),
                exec_id: "sleeper".into(),
                signal: 15,
                all: false,
            })
            .await?;
        let exit = client.wait(wait_req(&fx, "sleeper")).await?.into_inner();
        assert_eq!(exit.exit_status, 128 + 15);

        // Pause and resume through the runtime (the freezer cgroup).
        let status = |client: &mut TaskClient<Channel>| {
            let req = StateRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            };
            let mut client = client.clone();
            async move { anyhow::Ok(client.state(req).await?.into_inner().status) }
        };
        client.pause(PauseRequest { id: fx.id.clone() }).await?;
        assert_eq!(status(&mut client).await?, Status::Paused as i32);
        client.resume(ResumeRequest { id: fx.id.clone() }).await?;
        assert_eq!(status(&mut client).await?, Status::Running as i32);

        // Update goes to the runtime, which rewrites the cgroup.
        let limit: u64 = 64 * 1024 * 1024;
        let resources = serde_json::json!({"memory": {"limit": limit, "swap": limit}});
        client
            .update(UpdateTaskRequest {
                id: fx.id.clone(),
                resources: Some(pack_json(
                    LINUX_RESOURCES_TYPE_URL,
                    serde_json::to_vec(&resources)?,
                )),
                ..Default::default()
            })
            .await?;
        let cgroup = format!("/sys/fs/cgroup/memory/{}/{}", fx.cgroup_parent, fx.id);
        // Only where runc uses cgroup v1 (this host); elsewhere the file differs.
        if std::path::Path::new("/sys/fs/cgroup/memory/memory.limit_in_bytes").exists() {
            let set = std::fs::read_to_string(format!("{cgroup}/memory.limit_in_bytes"))?;
            assert_eq!(set.trim(), limit.to_string());
        }

        // Deleting a running task is refused and changes nothing.
        let refused = client
            .delete(DeleteRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await
            .expect_err("delete of a running task");
        assert_eq!(refused.code(), tonic::Code::FailedPrecondition);

        client
            .kill(KillRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
                signal: 9,
                all: false,
            })
            .await?;
        let exit = client.wait(wait_req(&fx, "")).await?.into_inner();
        assert_eq!(exit.exit_status, 128 + 9);
        let state = client
            .state(StateRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
            })
            .await?
            .into_inner();
        assert_eq!(state.status, Status::Stopped as i32);
        assert_eq!(fx.delete_and_shutdown(&mut client).await?, 137);
        let topics = poll(Duration::from_secs(10), || {
            let t = events.topics();
            t.contains(&"/tasks/delete".to_owned()).then_some(t)
        })
        .await
        .unwrap_or_else(|| events.topics());
        for want in ["/tasks/exec-added", "/tasks/exec-started", "/tasks/exit"] {
            assert!(
                topics.iter().any(|t| t == want),
                "{want} missing from {topics:?}"
            );
        }
        Ok(())
    })
    .await
}

#[tokio::test]
async fn exec_stdin_fifo_and_close_io() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("exec_stdin_fifo_and_close_io") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["sleep", "1000"])?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = running_sleeper(&mut fx).await?;
        let (stdin, stdout) = (fx.path("in.fifo"), fx.path("out.fifo"));
        for f in [&stdin, &stdout] {
            nix::unistd::mkfifo(f, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
        }
        client
            .exec(ExecProcessRequest {
                id: fx.id.clone(),
                exec_id: "cat".into(),
                stdin: stdin.display().to_string(),
                stdout: stdout.display().to_string(),
                spec: Some(exec_spec(&["cat"], false)),
                ..Default::default()
            })
            .await?;
        // Like ctr, the client opens its end of stdout before Start: a FIFO drops what is
        // buffered in it when its last writer closes with no reader.
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn({
            let stdout = stdout.clone();
            move || tx.send(std::fs::read(stdout))
        });
        client.start(start_req(&fx, "cat")).await?;
        std::fs::write(&stdin, b"through the fifo\n")?;
        client
            .close_io(CloseIoRequest {
                id: fx.id.clone(),
                exec_id: "cat".into(),
                stdin: true,
            })
            .await?;
        let exit = client.wait(wait_req(&fx, "cat")).await?.into_inner();
        assert_eq!(exit.exit_status, 0);
        let got = rx.recv_timeout(Duration::from_secs(30))??;
        assert_eq!(got, b"through the fifo\n");
        client
            .kill(KillRequest {
                id: fx.id.clone(),
                exec_id: String::new(),
                signal: 9,
                all: false,
            })
            .await?;
        client.wait(wait_req(&fx, "")).await?;
        fx.delete_and_shutdown(&mut client).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn terminal_task_gets_a_pty_and_resizes() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("terminal_task_gets_a_pty_and_resizes") {
            return Ok(());
        }
        terminal_round_trip(Fixture::new(&[])?).await
    })
    .await
}

#[tokio::test]
async fn deep_bundle_paths_work_for_sockets() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("deep_bundle_paths_work_for_sockets") {
            return Ok(());
        }
        let fx = Fixture::deep(&[])?;
        assert!(fx.bundle.join("shim.sock").as_os_str().len() > 107);
        terminal_round_trip(fx).await
    })
    .await
}

async fn terminal_round_trip(mut fx: Fixture) -> anyhow::Result<()> {
    // A highd to take the events, so Shutdown need not wait for them.
    let events = FakeEvents::default();
    events.serve(&fx.events_sock)?;
    fx.write_config(&["sh", "-c", "sleep 0.3; stty size; exit 4"], true)?;
    let mut client = fx.start_shim().await?;
    let out = fx.path("tty.out");
    let mut req = fx.create_request(&format!("file://{}", out.display()), "");
    req.terminal = true;
    client.create(req).await?;
    client
        .resize_pty(ResizePtyRequest {
            id: fx.id.clone(),
            exec_id: String::new(),
            width: 91,
            height: 33,
        })
        .await?;
    client.start(start_req(&fx, "")).await?;
    let exit = client.wait(wait_req(&fx, "")).await?.into_inner();
    assert_eq!(exit.exit_status, 4);
    let text = std::fs::read_to_string(&out)?;
    assert!(text.contains("33 91"), "tty output: {text:?}");
    fx.delete_and_shutdown(&mut client).await?;
    Ok(())
}

#[tokio::test]
async fn runtime_failure_reports_the_runtime_message() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("runtime_failure_reports_the_runtime_message") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["/no/such/binary"])?;
        let mut client = fx.start_shim().await?;
        let err = client
            .create(fx.create_request("", ""))
            .await
            .expect_err("create of a missing binary");
        let msg = err.message().to_owned();
        eprintln!("runtime error as reported: {msg}");
        assert!(!msg.contains("exit status"), "generic message: {msg}");
        assert!(msg.contains("/no/such/binary"), "message: {msg}");
        assert!(
            !fx.rootfs_mounted(),
            "failed create left the rootfs mounted"
        );
        // Nothing was created, so the shim may go.
        client
            .shutdown(berth_proto::containerd::task::v2::ShutdownRequest {
                id: fx.id.clone(),
                now: false,
            })
            .await?;
        let pid = fx.shim_pid.take().unwrap_or_default();
        let gone = poll(Duration::from_secs(15), || {
            (!crate::harness::pid_alive(pid)).then_some(())
        })
        .await;
        assert!(gone.is_some(), "shim still running");
        Ok(())
    })
    .await
}

#[tokio::test]
async fn oom_kill_is_reported() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("oom_kill_is_reported") {
            return Ok(());
        }
        if !std::path::Path::new("/sys/fs/cgroup/memory/memory.oom_control").exists() {
            eprintln!("SKIPPED oom_kill_is_reported: no cgroup v1 memory controller");
            return Ok(());
        }
        // busybox tail buffers a newline-free input whole: it grows until the limit.
        let mut fx = Fixture::new(&["tail", "/dev/zero"])?;
        fx.set_memory_limit(16 * 1024 * 1024)?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = fx.start_shim().await?;
        client.create(fx.create_request("", "")).await?;
        client.start(start_req(&fx, "")).await?;
        let exit = client.wait(wait_req(&fx, "")).await?.into_inner();
        assert_eq!(exit.exit_status, 128 + 9, "not OOM-killed");
        let topics = poll(Duration::from_secs(10), || {
            let t = events.topics();
            t.contains(&"/tasks/exit".to_owned()).then_some(t)
        })
        .await
        .unwrap_or_else(|| events.topics());
        let oom = topics.iter().position(|t| t == "/tasks/oom");
        let exited = topics.iter().position(|t| t == "/tasks/exit");
        assert!(
            oom.is_some() && oom < exited,
            "want oom before exit: {topics:?}"
        );
        fx.delete_and_shutdown(&mut client).await?;
        Ok(())
    })
    .await
}

#[tokio::test]
async fn created_task_is_deleted_without_start() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("created_task_is_deleted_without_start") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["sleep", "1000"])?;
        let events = FakeEvents::default();
        events.serve(&fx.events_sock)?;
        let mut client = fx.start_shim().await?;
        let pid = client
            .create(fx.create_request("", ""))
            .await?
            .into_inner()
            .pid;
        // The never-started init is killed by the forced delete and reaped by the shim.
        fx.delete_and_shutdown(&mut client).await?;
        assert!(
            !crate::harness::pid_alive(pid),
            "init {pid} survived delete"
        );
        Ok(())
    })
    .await
}
