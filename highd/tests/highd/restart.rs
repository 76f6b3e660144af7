//! Invariant 1: highd crashes and restarts never kill containers, and exits that happen
//! while it is down are reported after it is back.

use std::time::Duration;

use berth_proto::containerd::services::containers::v1::{
    containers_client::ContainersClient, DeleteContainerRequest,
};
use berth_proto::containerd::services::tasks::v1::{
    tasks_client::TasksClient, CreateTaskRequest, DeleteTaskRequest, GetRequest, KillRequest,
    ListTasksRequest, WaitRequest,
};
use berth_proto::containerd::v1::types::Status as ProcStatus;
use tonic::Code;

use crate::common::{poll, req, skip_unless_root, Stack, NS};
use crate::tasks::{next_exit, start_req, subscribe_tasks};

fn alive(pid: u32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid as i32), None).is_ok()
}

fn get(id: &str) -> tonic::Request<GetRequest> {
    req(GetRequest {
        container_id: id.into(),
        exec_id: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn running_task_survives_highd_sigkill() -> anyhow::Result<()> {
    if skip_unless_root("running_task_survives_highd_sigkill") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let pid = stack.create_task(&ch, "r1", &["sleep", "1000"], "").await?;
    TasksClient::new(ch).start(start_req("r1")).await?;

    // A graceful stop and a crash both leave the container alone.
    let status = stack.terminate().await?;
    assert!(status.success(), "{status}");
    assert!(alive(pid), "container died with highd's SIGTERM");
    stack.start().await?;
    stack.kill();
    assert!(alive(pid), "container died with highd's SIGKILL");
    // What a highd killed in the middle of binding its socket leaves behind.
    let dead = {
        let mut c = std::process::Command::new("true").spawn()?;
        c.wait()?;
        c.id()
    };
    let sock_name = stack
        .address
        .file_name()
        .unwrap()
        .to_string_lossy()
        .into_owned();
    let staging = stack
        .address
        .with_file_name(format!(".{sock_name}.bind-{dead}-0"));
    std::fs::create_dir(&staging)?;
    std::fs::write(staging.join("s"), b"")?;
    let ch = stack.start().await?;
    assert!(!staging.exists(), "start-up kept a dead bind's staging dir");
    let mut tasks = TasksClient::new(ch.clone());
    let p = tasks.get(get("r1")).await?.into_inner().process.unwrap();
    assert_eq!((p.pid, p.status), (pid, ProcStatus::Running as i32));

    let mut events = subscribe_tasks(&ch).await?;
    tasks
        .kill(req(KillRequest {
            container_id: "r1".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        }))
        .await?;
    let exit = next_exit(&mut events, "r1").await?;
    assert_eq!((exit.pid, exit.exit_status), (pid, 137));
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "r1".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 137);
    tasks
        .delete(req(DeleteTaskRequest {
            container_id: "r1".into(),
        }))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn exit_while_highd_is_down_is_reported() -> anyhow::Result<()> {
    if skip_unless_root("exit_while_highd_is_down_is_reported") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let script = "while [ ! -e /tmp/go ]; do sleep 0.1; done; exit 7";
    let pid = stack
        .create_task(&ch, "r2", &["sh", "-c", script], "")
        .await?;
    TasksClient::new(ch).start(start_req("r2")).await?;

    stack.kill();
    std::fs::write(stack.rootfs().join("tmp/go"), b"")?;
    let exit_json = stack.state.join(NS).join("r2").join("exit.json");
    poll(
        "the shim to record the exit",
        Duration::from_secs(20),
        || exit_json.exists().then_some(()),
    )
    .await?;

    let ch = stack.start().await?;
    let mut tasks = TasksClient::new(ch.clone());
    let p = tasks.get(get("r2")).await?.into_inner().process.unwrap();
    assert_eq!(
        (p.pid, p.status, p.exit_status),
        (pid, ProcStatus::Stopped as i32, 7)
    );
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "r2".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 7);
    let deleted = tasks
        .delete(req(DeleteTaskRequest {
            container_id: "r2".into(),
        }))
        .await?;
    assert_eq!(deleted.into_inner().exit_status, 7);
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn dead_shims_are_reported_stopped_and_deletable() -> anyhow::Result<()> {
    if skip_unless_root("dead_shims_are_reported_stopped_and_deletable") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    stack.create_container(&ch, "d1", &["true"]).await?;
    stack.create_container(&ch, "d2", &["true"]).await?;
    stack.kill();
    // What a shim leaves when it is SIGKILLed after the container exited (d1) or
    // before it recorded anything (d2).
    for id in ["d1", "d2"] {
        let dir = stack.state.join(NS).join(id);
        std::fs::create_dir_all(dir.join("rootfs"))?;
        std::fs::write(dir.join("config.json"), stack.spec(id, &["true"]))?;
        std::fs::write(
            dir.join("address"),
            stack
                .dir
                .path()
                .join("gone.sock")
                .to_string_lossy()
                .as_bytes(),
        )?;
    }
    std::fs::write(
        stack.state.join(NS).join("d1/exit.json"),
        r#"{"pid":4242,"exit_status":5,"exited_at":"2024-05-06T07:08:09.5Z"}"#,
    )?;

    let ch = stack.start().await?;
    let mut tasks = TasksClient::new(ch.clone());
    let d1 = tasks.get(get("d1")).await?.into_inner().process.unwrap();
    assert_eq!(
        (d1.status, d1.exit_status, d1.pid),
        (ProcStatus::Stopped as i32, 5, 4242)
    );
    assert_eq!(d1.exited_at.unwrap().seconds, 1_714_979_289);
    let d2 = tasks.get(get("d2")).await?.into_inner().process.unwrap();
    assert_eq!(
        (d2.status, d2.exit_status),
        (ProcStatus::Stopped as i32, 255)
    );
    let listed = tasks
        .list(req(ListTasksRequest::default()))
        .await?
        .into_inner()
        .tasks;
    assert_eq!(listed.len(), 2);
    let err = tasks
        .kill(req(KillRequest {
            container_id: "d1".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound, "{err:?}");

    let mut containers = ContainersClient::new(ch.clone());
    let err = containers
        .delete(req(DeleteContainerRequest { id: "d1".into() }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::FailedPrecondition);
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "d1".into(),
            exec_id: String::new(),
        }))
        .await?;
    assert_eq!(waited.into_inner().exit_status, 5);
    let deleted = tasks
        .delete(req(DeleteTaskRequest {
            container_id: "d1".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(deleted.exit_status, 5);
    let deleted = tasks
        .delete(req(DeleteTaskRequest {
            container_id: "d2".into(),
        }))
        .await?
        .into_inner();
    assert_eq!(deleted.exit_status, 255);
    assert!(!stack.state.join(NS).join("d1").exists());
    containers
        .delete(req(DeleteContainerRequest { id: "d1".into() }))
        .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn failed_shim_start_leaves_nothing_behind() -> anyhow::Result<()> {
    if skip_unless_root("failed_shim_start_leaves_nothing_behind") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let bad_shim = stack.dir.path().join("bad-shim");
    std::fs::write(&bad_shim, "#!/bin/sh\necho 'relative.sock'\n")?;
    std::fs::set_permissions(
        &bad_shim,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    let config = stack.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[runtimes.\"io.containerd.runc.v2\"]\nshim = \"/bin/false\"\n[runtimes.\"io.containerd.runtime.v1.linux\"]\nshim = \"{}\"\n",
            bad_shim.display()
        ),
    )?;
    stack.extra_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    let ch = stack.start().await?;

    let err = stack
        .create_task(&ch, "f1", &["true"], "")
        .await
        .unwrap_err();
    let status = err.downcast_ref::<tonic::Status>().expect("a grpc status");
    assert!(status.message().contains("shim start failed"), "{status:?}");
    assert!(
        !stack.state.join(NS).join("f1").exists(),
        "task dir left behind"
    );
    let err = TasksClient::new(ch.clone())
        .get(get("f1"))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::NotFound);
    ContainersClient::new(ch.clone())
        .delete(req(DeleteContainerRequest { id: "f1".into() }))
        .await?;

    // A shim that prints garbage instead of its socket path.
    let mut spec_container = berth_proto::containerd::services::containers::v1::Container {
        id: "f2".into(),
        runtime: Some(
            berth_proto::containerd::services::containers::v1::container::Runtime {
                name: "io.containerd.runtime.v1.linux".into(),
                options: None,
            },
        ),
        spec: Some(berth_proto::any::pack_json(
            berth_proto::any::SPEC_TYPE_URL,
            stack.spec("f2", &["true"]),
        )),
        ..Default::default()
    };
    ContainersClient::new(ch.clone())
        .create(req(
            berth_proto::containerd::services::containers::v1::CreateContainerRequest {
                container: Some(spec_container.clone()),
            },
        ))
        .await?;
    let err = TasksClient::new(ch.clone())
        .create(req(CreateTaskRequest {
            container_id: "f2".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(err.message().contains("relative.sock"), "{err:?}");
    assert!(
        !stack.state.join(NS).join("f2").exists(),
        "task dir left behind"
    );

    // Unknown runtime names are refused before anything is created.
    spec_container.id = "f3".into();
    spec_container.runtime.as_mut().unwrap().name = "io.example.nope".into();
    ContainersClient::new(ch.clone())
        .create(req(
            berth_proto::containerd::services::containers::v1::CreateContainerRequest {
                container: Some(spec_container),
            },
        ))
        .await?;
    let err = TasksClient::new(ch)
        .create(req(CreateTaskRequest {
            container_id: "f3".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert_eq!(err.code(), Code::InvalidArgument);
    assert!(err.message().contains("io.example.nope"), "{err:?}");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn shim_killed_under_a_running_task() -> anyhow::Result<()> {
    if skip_unless_root("shim_killed_under_a_running_task") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let pid = stack.create_task(&ch, "k1", &["sleep", "1000"], "").await?;
    let mut tasks = TasksClient::new(ch.clone());
    tasks.start(start_req("k1")).await?;
    let mut events = subscribe_tasks(&ch).await?;
    let dir = stack.state.join(NS).join("k1");
    let shim_pid: i32 = std::fs::read_to_string(dir.join("shim.pid"))?
        .trim()
        .parse()?;
    nix::sys::signal::kill(
        nix::unistd::Pid::from_raw(shim_pid),
        nix::sys::signal::Signal::SIGKILL,
    )?;
    poll("the shim to die", Duration::from_secs(10), || {
        (!alive(shim_pid as u32)).then_some(())
    })
    .await?;

    // No exit.json: the container did not exit, its supervisor did.
    let p = tasks.get(get("k1")).await?.into_inner().process.unwrap();
    assert_eq!((p.status, p.exit_status), (ProcStatus::Stopped as i32, 255));
    let exit = next_exit(&mut events, "k1").await?;
    assert_eq!(
        exit.exit_status, 255,
        "highd announces the exit the shim could not"
    );
    let deleted = tasks
        .delete(req(DeleteTaskRequest {
            container_id: "k1".into(),
        }))
        .await?;
    assert_eq!(deleted.into_inner().exit_status, 255);
    assert!(!dir.exists(), "task dir left behind");
    // The runtime's delete --force took the orphaned container down with it.
    poll(
        "the orphaned container to be killed",
        Duration::from_secs(10),
        || (!alive(pid)).then_some(()),
    )
    .await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn create_cancelled_by_the_client_still_cleans_up() -> anyhow::Result<()> {
    if skip_unless_root("create_cancelled_by_the_client_still_cleans_up") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let slow_shim = stack.dir.path().join("slow-shim");
    std::fs::write(
        &slow_shim,
        "#!/bin/sh\nsleep 1\necho 'slow shim gave up' >&2\nexit 1\n",
    )?;
    std::fs::set_permissions(
        &slow_shim,
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )?;
    stack.extra_args = vec!["--shim".into(), slow_shim.to_string_lossy().into_owned()];
    let ch = stack.start().await?;
    stack.create_container(&ch, "x1", &["true"]).await?;
    let mut client = TasksClient::new(ch.clone());
    let create = client.create(req(CreateTaskRequest {
        container_id: "x1".into(),
        rootfs: stack.rootfs_mounts(),
        ..Default::default()
    }));
    // The client gives up while the shim is still starting.
    assert!(tokio::time::timeout(Duration::from_millis(200), create)
        .await
        .is_err());
    let dir = stack.state.join(NS).join("x1");
    poll(
        "the abandoned create to clean up",
        Duration::from_secs(10),
        || (!dir.exists()).then_some(()),
    )
    .await?;
    // The id is free again: the next attempt fails for the shim's reason, not AlreadyExists.
    let err = TasksClient::new(ch)
        .create(req(CreateTaskRequest {
            container_id: "x1".into(),
            ..Default::default()
        }))
        .await
        .unwrap_err();
    assert!(err.message().contains("slow shim gave up"), "{err:?}");
    Ok(())
}

/// A shim that is alive but does not answer while highd starts (here: SIGSTOPped) is
/// slow, not dead: it must be neither reported stopped nor killed.
#[tokio::test(flavor = "multi_thread")]
async fn stopped_shim_survives_highd_restart() -> anyhow::Result<()> {
    if skip_unless_root("stopped_shim_survives_highd_restart") {
        return Ok(());
    }
    use nix::sys::signal::{kill, Signal};
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let pid = stack
        .create_task(&ch, "st1", &["sleep", "1000"], "")
        .await?;
    TasksClient::new(ch).start(start_req("st1")).await?;
    let dir = stack.state.join(NS).join("st1");
    let shim_pid: i32 = std::fs::read_to_string(dir.join("shim.pid"))?
        .trim()
        .parse()?;
    let shim = nix::unistd::Pid::from_raw(shim_pid);

    stack.kill();
    kill(shim, Signal::SIGSTOP)?;
    let started = stack.start().await;
    // Resume the shim whatever happened, so a failure leaves nothing stopped behind.
    kill(shim, Signal::SIGCONT)?;
    let ch = started?;
    let mut tasks = TasksClient::new(ch);

    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    let p = loop {
        match tasks.get(get("st1")).await {
            Ok(resp) => {
                let p = resp.into_inner().process.unwrap();
                assert_ne!(
                    p.status,
                    ProcStatus::Stopped as i32,
                    "a stopped shim was reported dead: {p:?}; log:\n{}",
                    stack.log()
                );
                if p.status == ProcStatus::Running as i32 {
                    break p;
                }
            }
            // While the shim catches up, calls may time out; that is not "gone".
            Err(e) => assert_ne!(e.code(), Code::NotFound, "{e:?}"),
        }
        assert!(
            std::time::Instant::now() < deadline,
            "task not running again in time; log:\n{}",
            stack.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert_eq!(p.pid, pid);
    assert!(alive(shim_pid as u32), "the stopped shim was killed");
    assert!(alive(pid), "the container of the stopped shim was killed");
    Ok(())
}

/// Two Deletes of one task at once: exactly one tears it down, the other is refused,
/// and the id can be reused right after.
#[tokio::test(flavor = "multi_thread")]
async fn concurrent_deletes_of_one_task() -> anyhow::Result<()> {
    if skip_unless_root("concurrent_deletes_of_one_task") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    stack.create_task(&ch, "dd1", &["true"], "").await?;
    let mut tasks = TasksClient::new(ch.clone());
    let mut events = subscribe_tasks(&ch).await?;
    tasks.start(start_req("dd1")).await?;
    next_exit(&mut events, "dd1").await?;

    let delete = || {
        let mut tasks = tasks.clone();
        async move {
            tasks
                .delete(req(DeleteTaskRequest {
                    container_id: "dd1".into(),
                }))
                .await
        }
    };
    let (a, b) = tokio::join!(delete(), delete());
    let oks = [&a, &b].iter().filter(|r| r.is_ok()).count();
    assert_eq!(oks, 1, "{a:?} {b:?}");
    for r in [&a, &b] {
        if let Err(e) = r {
            assert!(
                matches!(e.code(), Code::NotFound | Code::FailedPrecondition),
                "{e:?}"
            );
        }
    }
    // The id is free again: a new task under it runs and is not torn down by anyone.
    let resp = tasks
        .create(req(CreateTaskRequest {
            container_id: "dd1".into(),
            rootfs: stack.rootfs_mounts(),
            ..CreateTaskRequest::default()
        }))
        .await?;
    assert_ne!(resp.into_inner().pid, 0);
    tasks
        .delete(req(DeleteTaskRequest {
            container_id: "dd1".into(),
        }))
        .await?;
    Ok(())
}
