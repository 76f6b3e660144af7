//! Running real tasks through berth-shim and the runtime.

use std::time::Duration;

use berth_proto::any::{pack_json, unpack, PROCESS_TYPE_URL};
use berth_proto::containerd::events::{TaskDelete, TaskExit};
use berth_proto::containerd::services::containers::v1::{
    containers_client::ContainersClient, DeleteContainerRequest,
};
use berth_proto::containerd::services::events::v1::{
    events_client::EventsClient, SubscribeRequest,
};
use berth_proto::containerd::services::tasks::v1::{
    tasks_client::TasksClient, CloseIoRequest, CreateTaskRequest, DeleteProcessRequest,
    DeleteTaskRequest, ExecProcessRequest, GetRequest, KillRequest, ListPidsRequest,
    ListTasksRequest, PauseTaskRequest, ResumeTaskRequest, StartRequest, WaitRequest,
};
use berth_proto::containerd::v1::types::Status as ProcStatus;
use tonic::transport::Channel;
use tonic::{Code, Streaming};

use crate::common::{poll, req, skip_unless_root, Stack, NS};

pub async fn subscribe_tasks(
    ch: &Channel,
) -> anyhow::Result<Streaming<berth_proto::containerd::services::events::v1::Envelope>> {
    Ok(EventsClient::new(ch.clone())
        .subscribe(SubscribeRequest {
            filters: vec![r#"topic~="^/tasks/""#.into()],
        })
        .await?
        .into_inner())
}

/// Reads events until a TaskExit for `id`'s init process arrives.
pub async fn next_exit(
    events: &mut Streaming<berth_proto::containerd::services::events::v1::Envelope>,
    id: &str,
) -> anyhow::Result<TaskExit> {
    loop {
        let env = tokio::time::timeout(Duration::from_secs(20), events.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
        if env.topic == "/tasks/exit" {
            let exit: TaskExit = unpack(env.event.as_ref().unwrap())?;
            if exit.container_id == id && (exit.id == id || exit.id.is_empty()) {
                assert_eq!(env.namespace, NS);
                return Ok(exit);
            }
        }
    }
}

pub fn start_req(id: &str) -> tonic::Request<StartRequest> {
    req(StartRequest {
        container_id: id.into(),
        exec_id: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn task_lifecycle_with_jsonfile_log() -> anyhow::Result<()> {
    if skip_unless_root("task_lifecycle_with_jsonfile_log") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut events = subscribe_tasks(&ch).await?;
    let log = stack.dir.path().join("t1.log");
    let stdout = format!("jsonfile://{}", log.display());
    let args = ["sh", "-c", "echo hello; echo oops >&2; exit 3"];
    let pid = stack.create_task(&ch, "t1", &args, &stdout).await?;
    assert!(pid > 0);
    let mut tasks = TasksClient::new(ch.clone());

    let again = tasks
        .create(req(CreateTaskRequest {
            container_id: "t1".into(),
            rootfs: stack.rootfs_mounts(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(again.code(), Code::AlreadyExists, "{again:?}");
    let missing = tasks
        .create(req(CreateTaskRequest {
            container_id: "nope".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(missing.code(), Code::NotFound, "{missing:?}");

    let got = tasks
        .get(req(GetRequest {
            container_id: "t1".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(
        got.into_inner().process.unwrap().status,
        ProcStatus::Created as i32
    );
    let started = tasks.start(start_req("t1")).await?.into_inner();
    assert_eq!(started.pid, pid);
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "t1".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 3);
    let mut topics = Vec::new();
    let exit = loop {
        let env = tokio::time::timeout(Duration::from_secs(20), events.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
        topics.push(env.topic.clone());
        if env.topic == "/tasks/exit" {
            break unpack::<TaskExit>(env.event.as_ref().unwrap())?;
        }
    };
    assert_eq!(topics, ["/tasks/create", "/tasks/start", "/tasks/exit"]);
    assert_eq!(
        (exit.container_id.as_str(), exit.pid, exit.exit_status),
        ("t1", pid, 3)
    );

    let got = tasks
        .get(req(GetRequest {
            container_id: "t1".into(),
            exec_id: String::new(),
        }))
        .await?;
    let p = got.into_inner().process.unwrap();
    assert_eq!((p.status, p.exit_status), (ProcStatus::Stopped as i32, 3));

    let lines: Vec<serde_json::Value> = std::fs::read_to_string(&log)?
        .lines()
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()?;
    let find = |stream: &str| {
        lines
            .iter()
            .find(|l| l["stream"] == stream)
            .map(|l| l["log"].clone())
    };
    assert_eq!(find("stdout"), Some("hello\n".into()), "{lines:?}");
    assert_eq!(find("stderr"), Some("oops\n".into()), "{lines:?}");

    let deleted = tasks
        .delete(req(DeleteTaskRequest {
            container_id: "t1".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(deleted.exit_status, 3);
    assert!(
        !stack.state.join(NS).join("t1").exists(),
        "task dir left behind"
    );
    let err = tasks
        .get(req(GetRequest {
            container_id: "t1".into(),
            exec_id: String::new(),
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    let deleted_event = loop {
        let env = tokio::time::timeout(Duration::from_secs(20), events.message())
            .await??
            .ok_or_else(|| anyhow::anyhow!("event stream ended"))?;
        if env.topic == "/tasks/delete" {
            break unpack::<TaskDelete>(env.event.as_ref().unwrap())?;
        }
    };
    assert_eq!(
        (
            deleted_event.container_id.as_str(),
            deleted_event.exit_status
        ),
        ("t1", 3)
    );
    ContainersClient::new(ch)
        .delete(req(DeleteContainerRequest { id: "t1".into() }))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exec_kill_and_exit_event() -> anyhow::Result<()> {
    if skip_unless_root("exec_kill_and_exit_event") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut events = subscribe_tasks(&ch).await?;
    let pid = stack.create_task(&ch, "t2", &["sleep", "1000"], "").await?;
    let mut tasks = TasksClient::new(ch.clone());
    tasks.start(start_req("t2")).await?;

    let out = stack.dir.path().join("exec.out");
    let process = serde_json::json!({
        "args": ["sh", "-c", "echo from-exec; exit 4"],
        "env": ["PATH=/bin"],
        "cwd": "/",
        "user": {"uid": 0, "gid": 0}
    });
    tasks
        .exec(req(ExecProcessRequest {
            container_id: "t2".into(),
            exec_id: "e1".into(),
            stdout: format!("file://{}", out.display()),
            spec: Some(pack_json(PROCESS_TYPE_URL, serde_json::to_vec(&process)?)),
            ..Default::default()
        }))
        .await?;
    let exec_pid = tasks
        .start(req(StartRequest {
            container_id: "t2".into(),
            exec_id: "e1".into(),
        }))
        .await?;
    assert!(exec_pid.into_inner().pid > 0);
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "t2".into(),
            exec_id: "e1".into(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 4);
    assert_eq!(std::fs::read_to_string(&out)?, "from-exec\n");
    let del = tasks
        .delete_process(req(DeleteProcessRequest {
            container_id: "t2".into(),
            exec_id: "e1".into(),
        }))
        .await?;
    assert_eq!(del.into_inner().exit_status, 4);

    let pids = tasks
        .list_pids(req(ListPidsRequest {
            container_id: "t2".into(),
        }))
        .await?
        .into_inner();
    assert!(pids.processes.iter().any(|p| p.pid == pid), "{pids:?}");
    let listed = tasks
        .list(req(ListTasksRequest::default()))
        .await?
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 1);
    let list = |filter: &str| {
        let mut tasks = tasks.clone();
        let filter = filter.to_string();
        async move {
            tasks
                .list(req(ListTasksRequest { filter }))
                .await
                .map(|r| r.into_inner().tasks.len())
        }
    };
    assert_eq!(list("status==running,id==t2").await?, 1);
    assert_eq!(list("status==stopped").await?, 0);
    assert_eq!(
        list("id~=(").await.unwrap_err().code(),
        Code::InvalidArgument
    );
    assert_eq!(
        (listed[0].pid, listed[0].status),
        (pid, ProcStatus::Running as i32)
    );

    tasks
        .pause(req(PauseTaskRequest {
            container_id: "t2".into(),
        }))
        .await?;
    let p = tasks
        .get(req(GetRequest {
            container_id: "t2".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(
        p.into_inner().process.unwrap().status,
        ProcStatus::Paused as i32
    );
    tasks
        .resume(req(ResumeTaskRequest {
            container_id: "t2".into(),
        }))
        .await?;
    let p = tasks
        .get(req(GetRequest {
            container_id: "t2".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(
        p.into_inner().process.unwrap().status,
        ProcStatus::Running as i32
    );

    let err = ContainersClient::new(ch.clone())
        .delete(req(DeleteContainerRequest { id: "t2".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition, "{err:?}");
    let err = tasks
        .delete(req(DeleteTaskRequest {
            container_id: "t2".into(),
        }))
        .await
        .unwrap_err();
    assert_ne!(err.code(), Code::Ok, "deleting a running task must fail");

    tasks
        .kill(req(KillRequest {
            container_id: "t2".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        }))
        .await?;
    let exit = next_exit(&mut events, "t2").await?;
    assert_eq!(exit.exit_status, 137);
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "t2".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 137);
    poll("init to be reaped", Duration::from_secs(10), || {
        nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None)
            .is_err()
            .then_some(())
    })
    .await?;
    tasks
        .delete(req(DeleteTaskRequest {
            container_id: "t2".into(),
        }))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn task_without_mounts_keeps_absolute_root() -> anyhow::Result<()> {
    if skip_unless_root("task_without_mounts_keeps_absolute_root") {
        return Ok(());
    }
    // What `ctr run --rootfs DIR` sends: no rootfs mounts, root.path = DIR.
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let rootfs = stack.rootfs();
    let mut spec: serde_json::Value =
        serde_json::from_slice(&stack.spec("a1", &["sh", "-c", "exit 9"]))?;
    spec["root"]["path"] = rootfs.to_string_lossy().into_owned().into();
    let container = berth_proto::containerd::services::containers::v1::Container {
        id: "a1".into(),
        runtime: Some(
            berth_proto::containerd::services::containers::v1::container::Runtime {
                name: crate::common::RUNTIME_NAME.into(),
                options: None,
            },
        ),
        spec: Some(pack_json(
            berth_proto::any::SPEC_TYPE_URL,
            serde_json::to_vec(&spec)?,
        )),
        ..Default::default()
    };
    ContainersClient::new(ch.clone())
        .create(req(
            berth_proto::containerd::services::containers::v1::CreateContainerRequest {
                container: Some(container),
            },
        ))
        .await?;
    let mut tasks = TasksClient::new(ch.clone());
    tasks
        .create(req(CreateTaskRequest {
            container_id: "a1".into(),
            ..Default::default()
        }))
        .await?;
    tasks.start(start_req("a1")).await?;
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "a1".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 9);
    tasks
        .delete(req(DeleteTaskRequest {
            container_id: "a1".into(),
        }))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn fifo_stdin_and_close_io() -> anyhow::Result<()> {
    if skip_unless_root("fifo_stdin_and_close_io") {
        return Ok(());
    }
    // What ctr does: stdin is a FIFO the client writes, CloseIO ends the input.
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let fifo = stack.dir.path().join("stdin.fifo");
    nix::unistd::mkfifo(&fifo, nix::sys::stat::Mode::from_bits_truncate(0o600))?;
    let out = stack.dir.path().join("cat.out");
    stack.create_container(&ch, "c1", &["cat"]).await?;
    // Opening a FIFO for writing blocks until the shim opens it for reading.
    let writer = {
        let fifo = fifo.clone();
        std::thread::spawn(move || -> std::io::Result<()> {
            use std::io::Write;
            let mut f = std::fs::OpenOptions::new().write(true).open(&fifo)?;
            f.write_all(b"through-the-fifo\n")
        })
    };
    let mut tasks = TasksClient::new(ch.clone());
    tasks
        .create(req(CreateTaskRequest {
            container_id: "c1".into(),
            rootfs: stack.rootfs_mounts(),
            stdin: fifo.to_string_lossy().into_owned(),
            stdout: format!("file://{}", out.display()),
            ..Default::default()
        }))
        .await?;
    tasks.start(start_req("c1")).await?;
    writer.join().expect("writer thread")?;
    tasks
        .close_io(req(CloseIoRequest {
            container_id: "c1".into(),
            exec_id: String::new(),
            stdin: true,
        }))
        .await?;
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "c1".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 0);
    assert_eq!(std::fs::read_to_string(&out)?, "through-the-fifo\n");
    tasks
        .delete(req(DeleteTaskRequest {
            container_id: "c1".into(),
        }))
        .await?;
    Ok(())
}
