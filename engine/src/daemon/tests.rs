//! Daemon logic against the in-memory fake highd.

use std::sync::Arc;
use std::time::Duration;

use super::*;
use crate::api::route::WaitCondition;
use crate::backend::fake::FakeBackend;
use crate::backend::Backend;
use crate::record::Status;
use crate::types::{ContainerConfig, CreateRequest, HostConfig, StrSlice};

pub struct Env {
    pub _dir: tempfile::TempDir,
    pub fake: Arc<FakeBackend>,
    pub daemon: Arc<Daemon<FakeBackend>>,
}

pub fn tar_with(files: &[(&str, &[u8])]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, data) in files {
        let mut h = tar::Header::new_gnu();
        h.set_size(data.len() as u64);
        h.set_mode(0o755);
        h.set_cksum();
        b.append_data(&mut h, name, *data).unwrap();
    }
    b.into_inner().unwrap()
}

pub async fn env() -> Env {
    let dir = tempfile::tempdir().unwrap();
    let fake = Arc::new(FakeBackend::default());
    let daemon = Arc::new(
        Daemon::new(
            Arc::clone(&fake),
            DaemonConfig {
                data_root: dir.path().join("data"),
                exec_root: dir.path().join("exec"),
                cgroup_parent: "/berth-test".into(),
                init: Default::default(),
                rt_budget: Default::default(),
            },
        )
        .unwrap(),
    );
    let d = Arc::clone(&daemon);
    tokio::spawn(d.run_event_loop());
    daemon
        .import_image("busybox", "", &tar_with(&[("bin/sh", b"x")]))
        .await
        .unwrap();
    Env {
        _dir: dir,
        fake,
        daemon,
    }
}

pub fn req(cmd: &[&str], auto_remove: bool) -> CreateRequest {
    CreateRequest {
        config: ContainerConfig {
            image: "busybox".into(),
            cmd: StrSlice(Some(cmd.iter().map(|s| s.to_string()).collect())),
            ..Default::default()
        },
        host_config: HostConfig {
            auto_remove,
            ..Default::default()
        },
        networking_config: None,
    }
}

/// Polls `f` until it holds, failing after a generous deadline.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while !f() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "timed out waiting for {what}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

#[tokio::test]
async fn import_creates_image_snapshot_and_normalized_name() {
    let e = env().await;
    let img = e.daemon.image("busybox").await.unwrap();
    assert_eq!(img.repo_tags(), ["busybox:latest"]);
    assert!(e.fake.has_snapshot(&img.chain_id()));
    assert_eq!(img.config.os, "linux");
    assert!(img.runtime_config().env[0].starts_with("PATH="));
    // By ID and by ID prefix, too.
    assert_eq!(e.daemon.image(&img.id).await.unwrap().id, img.id);
    assert_eq!(e.daemon.image(&img.id[7..19]).await.unwrap().id, img.id);
    let err = e.daemon.image("nothere").await.unwrap_err();
    assert_eq!(err.to_string(), "No such image: nothere:latest");
    let err = e
        .daemon
        .import_image("x", "", b"definitely not a tar archive at all, no sir")
        .await;
    assert!(err.is_err());
}

#[tokio::test]
async fn create_errors_match_dockerd() {
    let e = env().await;
    let mut r = req(&["true"], false);
    r.config.image = "busybox:1.0".into();
    let err = e.daemon.create_container(None, r).await.unwrap_err();
    assert_eq!(err.to_string(), "No such image: busybox:1.0");
    let id = e
        .daemon
        .create_container(Some("web"), req(&["true"], false))
        .await
        .unwrap();
    let err = e
        .daemon
        .create_container(Some("web"), req(&["true"], false))
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("Conflict. The container name \"/web\" is already in use by container \"{id}\". You have to remove (or rename) that container to be able to reuse that name.")
    );
    let err = e
        .daemon
        .create_container(Some("-x"), req(&["true"], false))
        .await
        .unwrap_err();
    assert!(matches!(err, DaemonError::InvalidName { .. }));
    let err = e
        .daemon
        .create_container(None, req(&[], false))
        .await
        .unwrap_err();
    assert_eq!(err.to_string(), "No command specified");
    // Failed creates leave nothing behind.
    assert_eq!(e.daemon.store.list().len(), 1);
}

#[tokio::test]
async fn create_start_exit_records_state_and_spec() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(Some("c1"), req(&["echo", "hi"], false))
        .await
        .unwrap();
    let rec = e.daemon.container("c1").unwrap();
    assert_eq!(rec.state.status, Status::Created);
    assert_eq!(
        (rec.path.as_str(), rec.args.as_slice()),
        ("echo", &["hi".to_string()][..])
    );
    let spec: serde_json::Value =
        serde_json::from_slice(&e.fake.container_spec(&id).unwrap()).unwrap();
    assert_eq!(spec["hostname"], id[..12]);
    assert_eq!(spec["linux"]["cgroupsPath"], format!("/berth-test/{id}"));
    assert!(std::path::Path::new(&rec.hosts_path).exists());

    let wait = e
        .daemon
        .wait_container(&id, WaitCondition::NextExit)
        .unwrap();
    assert!(e.daemon.start_container(&id).await.unwrap());
    assert!(
        !e.daemon.start_container(&id).await.unwrap(),
        "second start is 304"
    );
    let stdio = e.fake.task_stdio(&id).unwrap();
    assert_eq!(stdio.stdout, format!("jsonfile://{}", rec.log_path));
    assert_eq!(stdio.stdout, stdio.stderr);
    let rec = e.daemon.container(&id[..8]).unwrap();
    assert_eq!(rec.state.status, Status::Running);
    assert!(rec.state.pid > 0);

    e.fake.exit(&id, "", 3);
    assert_eq!(wait.await.status_code, 3);
    let rec = e.daemon.container(&id).unwrap();
    assert_eq!(
        (rec.state.status, rec.state.exit_code, rec.state.pid),
        (Status::Exited, 3, 0)
    );
    assert!(rec.state.finished_at.is_some());
    assert!(!e.fake.has_task(&id), "the exited task is deleted");
    let out = e
        .daemon
        .wait_container(&id, WaitCondition::NotRunning)
        .unwrap()
        .await;
    assert_eq!(out.status_code, 3);
}

#[tokio::test]
async fn auto_remove_removes_everything_after_exit() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["true"], true))
        .await
        .unwrap();
    let wait = e
        .daemon
        .wait_container(&id, WaitCondition::Removed)
        .unwrap();
    e.daemon.start_container(&id).await.unwrap();
    e.fake.exit(&id, "", 0);
    assert_eq!(wait.await.status_code, 0);
    assert!(matches!(
        e.daemon.container(&id),
        Err(DaemonError::NoSuchContainer { .. })
    ));
    assert!(!e.fake.has_container(&id));
    assert!(!e.fake.has_snapshot(&id));
    assert!(!e.daemon.store.container_dir(&id).exists());
}

#[tokio::test]
async fn start_failure_has_dockerds_shape_and_auto_removes() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["nope"], true))
        .await
        .unwrap();
    let wait = e
        .daemon
        .wait_container(&id, WaitCondition::Removed)
        .unwrap();
    e.fake
        .fail_next_task_create("exec: \"nope\": executable file not found in $PATH");
    let err = e.daemon.start_container(&id).await.unwrap_err();
    assert_eq!(
        err.to_string(),
        "failed to create task for container: failed to create shim task: OCI runtime create failed: exec: \"nope\": executable file not found in $PATH: unknown"
    );
    assert_eq!(wait.await.status_code, 127);
    assert!(!e.fake.has_container(&id));

    let id = e
        .daemon
        .create_container(None, req(&["nope"], false))
        .await
        .unwrap();
    e.fake.fail_next_task_create("open /x: permission denied");
    e.daemon.start_container(&id).await.unwrap_err();
    let rec = e.daemon.container(&id).unwrap();
    assert_eq!(
        (rec.state.status, rec.state.exit_code),
        (Status::Created, 126)
    );
    assert!(rec.state.error.contains("permission denied"));
}

#[tokio::test]
async fn stop_kill_and_remove() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(Some("sv"), req(&["sleep", "1000"], false))
        .await
        .unwrap();
    assert!(matches!(
        e.daemon.kill_container("sv", None).await,
        Err(DaemonError::NotRunning { .. })
    ));
    assert!(
        !e.daemon.stop_container("sv", Some(1), None).await.unwrap(),
        "stop of a created container is 304"
    );
    e.daemon.start_container("sv").await.unwrap();
    let err = e
        .daemon
        .remove_container("sv", false, false)
        .await
        .unwrap_err();
    assert_eq!(
        err.to_string(),
        "cannot remove container \"sv\": container is running: stop the container before removing or force remove"
    );
    assert!(e.daemon.kill_container("sv", Some("bogus")).await.is_err());
    e.daemon.kill_container("sv", Some("USR1")).await.unwrap();
    let (fake, cid) = (Arc::clone(&e.fake), id.clone());
    // The fake process "exits" on SIGTERM.
    let stopper = tokio::spawn(async move {
        loop {
            if fake.kills().iter().any(|k| k.2 == 15) {
                fake.exit(&cid, "", 143);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    assert!(e.daemon.stop_container("sv", Some(30), None).await.unwrap());
    stopper.await.unwrap();
    let kills: Vec<u32> = e.fake.kills().iter().map(|k| k.2).collect();
    assert_eq!(kills, [10, 15]);
    assert_eq!(e.daemon.container("sv").unwrap().state.exit_code, 143);
    e.daemon.remove_container("sv", false, false).await.unwrap();
    assert!(!e.fake.has_snapshot(&id));
}

#[tokio::test]
async fn stop_escalates_to_sigkill_after_the_timeout() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["sleep", "1000"], false))
        .await
        .unwrap();
    e.daemon.start_container(&id).await.unwrap();
    let (fake, cid) = (Arc::clone(&e.fake), id.clone());
    let killer = tokio::spawn(async move {
        loop {
            if fake.kills().iter().any(|k| k.2 == 9) {
                fake.exit(&cid, "", 137);
                return;
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    });
    e.daemon.stop_container(&id, Some(0), None).await.unwrap();
    killer.await.unwrap();
    assert_eq!(e.daemon.container(&id).unwrap().state.exit_code, 137);
}

#[tokio::test]
async fn reconcile_keeps_running_tasks_and_records_missed_exits() {
    let e = env().await;
    let mut ids = Vec::new();
    for _ in 0..3 {
        let id = e
            .daemon
            .create_container(None, req(&["sleep", "1"], false))
            .await
            .unwrap();
        e.daemon.start_container(&id).await.unwrap();
        ids.push(id);
    }
    // A new engine over the same data root, while highd changed underneath it.
    let dir = e.daemon.config.clone();
    let fresh = Daemon::new(Arc::clone(&e.fake), dir).unwrap();
    // ids[1] exited while the engine was down; nobody deleted its task.
    e.fake.exit(&ids[1], "", 7);
    e.fake.forget_task(&ids[2]);
    fresh.reconcile().await.unwrap();
    let r0 = fresh.container(&ids[0]).unwrap();
    assert_eq!(r0.state.status, Status::Running);
    assert!(r0.state.pid > 0);
    assert!(e.fake.kills().is_empty(), "reconcile never kills");
    let r1 = fresh.container(&ids[1]).unwrap();
    assert_eq!((r1.state.status, r1.state.exit_code), (Status::Exited, 7));
    assert!(!e.fake.has_task(&ids[1]));
    let r2 = fresh.container(&ids[2]).unwrap();
    assert_eq!((r2.state.status, r2.state.exit_code), (Status::Exited, 255));
}

/// A `--rm` exit writes nothing before the removal: an engine that died in between finds
/// the record still running and finishes the removal from highd's state.
#[tokio::test]
async fn reconcile_finishes_auto_removes_the_engine_died_in() {
    let e = env().await;
    let mut ids = Vec::new();
    for _ in 0..2 {
        let id = e
            .daemon
            .create_container(None, req(&["true"], true))
            .await
            .unwrap();
        e.daemon.start_container(&id).await.unwrap();
        ids.push(id);
    }
    // One task stopped (exit never handled), one already deleted by the removal.
    e.fake.exit_unannounced(&ids[0], 0);
    e.fake.forget_task(&ids[1]);
    let fresh = Daemon::new(Arc::clone(&e.fake), e.daemon.config.clone()).unwrap();
    fresh.reconcile().await.unwrap();
    for id in &ids {
        assert!(matches!(
            fresh.container(id),
            Err(DaemonError::NoSuchContainer { .. })
        ));
        assert!(!e.fake.has_container(id));
        assert!(!e.fake.has_snapshot(id));
        assert!(!fresh.store.container_dir(id).exists());
    }
}

#[tokio::test]
async fn exec_lifecycle() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["sleep", "1000"], false))
        .await
        .unwrap();
    let exec_cfg = crate::types::ExecConfig {
        cmd: StrSlice(Some(vec!["true".into()])),
        ..Default::default()
    };
    assert!(matches!(
        e.daemon.create_exec(&id, exec_cfg.clone()),
        Err(DaemonError::ExecNotRunning { .. })
    ));
    e.daemon.start_container(&id).await.unwrap();
    let empty = crate::types::ExecConfig::default();
    assert_eq!(
        e.daemon.create_exec(&id, empty).unwrap_err().to_string(),
        "No exec command specified"
    );
    let exec_id = e.daemon.create_exec(&id, exec_cfg).unwrap();
    assert!(e.daemon.start_exec(&exec_id, true).await.unwrap().is_none());
    assert!(e.daemon.exec(&exec_id).unwrap().running);
    e.fake.exit(&id, &exec_id, 4);
    let d = Arc::clone(&e.daemon);
    let x = exec_id.clone();
    eventually("exec exit code", move || {
        d.exec(&x).unwrap().exit_code == Some(4)
    })
    .await;
    assert!(!e.daemon.exec(&exec_id).unwrap().running);
    assert!(matches!(
        e.daemon.exec("nope"),
        Err(DaemonError::NoSuchExec { .. })
    ));
}

#[test]
fn signals() {
    assert_eq!(parse_signal("SIGKILL").unwrap(), 9);
    assert_eq!(parse_signal("term").unwrap(), 15);
    assert_eq!(parse_signal("10").unwrap(), 10);
    assert!(parse_signal("0").is_err());
    assert_eq!(
        parse_signal("SIGBOGUS").unwrap_err().to_string(),
        "Invalid signal: SIGBOGUS"
    );
}

#[tokio::test]
async fn reconcile_adopts_started_tasks_and_collects_orphans() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["sleep", "1"], false))
        .await
        .unwrap();
    // The engine died after tasks.Start but before recording "running".
    e.fake
        .task_create(&id, vec![], Default::default())
        .await
        .unwrap();
    e.fake.task_start(&id, "").await.unwrap();
    // ... and another one after containers.Create but before writing its record.
    let orphan = "f".repeat(64);
    e.fake
        .snapshot_prepare(&orphan, "", Default::default())
        .await
        .unwrap();
    e.fake
        .container_create(crate::backend::NewContainer {
            id: orphan.clone(),
            labels: [(create::ENGINE_LABEL.to_string(), "1".to_string())].into(),
            ..Default::default()
        })
        .await
        .unwrap();
    e.daemon.reconcile().await.unwrap();
    let r = e.daemon.container(&id).unwrap();
    assert_eq!(r.state.status, Status::Running);
    assert!(r.state.pid > 0);
    assert!(!e.fake.has_container(&orphan));
    assert!(!e.fake.has_snapshot(&orphan));
    assert!(e.fake.has_container(&id));
}

#[tokio::test]
async fn failed_removal_marks_dead_and_rm_retries() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(Some("dd"), req(&["true"], false))
        .await
        .unwrap();
    e.fake.fail_next_container_delete("it has a task");
    let err = e
        .daemon
        .remove_container("dd", false, false)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("it has a task"), "{err}");
    let rec = e.daemon.container("dd").unwrap();
    assert_eq!(rec.state.status, Status::Dead);
    assert!(rec.state.error.starts_with("removal failed"));
    e.daemon.remove_container("dd", false, false).await.unwrap();
    assert!(!e.fake.has_container(&id));
    assert!(e.daemon.container("dd").is_err());
}

#[tokio::test]
async fn tag_and_remove_images_like_dockerd() {
    let e = env().await;
    let id = e.daemon.image("busybox").await.unwrap().id;
    e.daemon.tag_image("busybox", "me/bb", "v1").await.unwrap();
    let img = e.daemon.image("me/bb:v1").await.unwrap();
    assert_eq!(img.id, id);
    assert_eq!(
        e.daemon.list_images().await.unwrap()[0].repo_tags(),
        ["busybox:latest", "me/bb:v1"]
    );
    // By ID with two names: refused without force.
    let err = e.daemon.remove_image(&id, false).await.unwrap_err();
    assert!(
        err.to_string()
            .contains("image is referenced in multiple repositories"),
        "{err}"
    );
    // By name: untag only.
    let out = e.daemon.remove_image("me/bb:v1", false).await.unwrap();
    assert_eq!(out, [image_ops::ImageDeleted::Untagged("me/bb:v1".into())]);
    // The last name of an image a container uses: refused without force.
    e.daemon
        .create_container(Some("user"), req(&["true"], false))
        .await
        .unwrap();
    let err = e.daemon.remove_image("busybox", false).await.unwrap_err();
    assert!(
        err.to_string().starts_with(
            "conflict: unable to remove repository reference \"busybox\" (must force) - container "
        ),
        "{err}"
    );
    // Prune removes the stopped container, then the image can go.
    assert_eq!(e.daemon.prune_containers(|_| true).await.unwrap().len(), 1);
    let out = e.daemon.remove_image("busybox", false).await.unwrap();
    assert_eq!(
        out,
        [
            image_ops::ImageDeleted::Untagged("busybox:latest".into()),
            image_ops::ImageDeleted::Deleted(id)
        ]
    );
    assert!(matches!(
        e.daemon.image("busybox").await,
        Err(DaemonError::NoSuchImage { .. })
    ));
}

#[tokio::test]
async fn exec_stdin_reaches_the_process_and_closes() {
    use tokio::io::AsyncWriteExt;
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["sleep", "1000"], false))
        .await
        .unwrap();
    e.daemon.start_container(&id).await.unwrap();
    let cfg = crate::types::ExecConfig {
        cmd: StrSlice(Some(vec!["cat".into()])),
        attach_stdin: true,
        attach_stdout: true,
        ..Default::default()
    };
    let exec_id = e.daemon.create_exec(&id, cfg).unwrap();
    let (mut rx, stdin) = e.daemon.start_exec(&exec_id, false).await.unwrap().unwrap();
    let mut sink = stdin.expect("stdin attached");
    sink.fifo.write_all(b"through stdin\n").await.unwrap();
    (sink.close.expect("exec stdin closes"))().await;
    drop(sink.fifo);
    let mut out = Vec::new();
    while let Some(chunk) = rx.recv().await {
        out.extend_from_slice(&chunk);
    }
    assert_eq!(
        crate::stdcopy::demux(&out).unwrap(),
        vec![(1, b"through stdin\n".to_vec())]
    );
    assert_eq!(e.daemon.exec(&exec_id).unwrap().exit_code, Some(0));
}

#[tokio::test]
async fn an_event_stream_error_resubscribes_and_reconciles_missed_exits() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["sleep", "1000"], false))
        .await
        .unwrap();
    e.daemon.start_container(&id).await.unwrap();
    // The exit is lost (highd dropped it for a lagging subscriber) and the stream then
    // fails: only a reconcile can find out.
    e.fake.exit_unannounced(&id, 3);
    e.fake
        .break_exit_streams("subscriber fell behind: 1 events were dropped");
    let d = Arc::clone(&e.daemon);
    let x = id.clone();
    eventually("the missed exit recorded", move || {
        let r = d.container(&x).unwrap();
        (r.state.status, r.state.exit_code) == (Status::Exited, 3)
    })
    .await;
    let f = Arc::clone(&e.fake);
    let x = id.clone();
    eventually("the exited task deleted", move || !f.has_task(&x)).await;
    // And the new subscription delivers exits again.
    e.daemon.start_container(&id).await.unwrap();
    e.fake.exit(&id, "", 4);
    let d = Arc::clone(&e.daemon);
    eventually("the next exit recorded", move || {
        d.container(&id).unwrap().state.exit_code == 4
    })
    .await;
}

#[tokio::test(flavor = "current_thread")]
async fn reconcile_waits_for_a_start_in_flight() {
    let e = env().await;
    let id = e
        .daemon
        .create_container(None, req(&["sleep", "1000"], false))
        .await
        .unwrap();
    // start_container holds the lock between tasks.Create and tasks.Start; play that
    // window by hand.
    let lock = e.daemon.lock_for(&id);
    let guard = lock.lock().await;
    e.fake
        .task_create(&id, vec![], Default::default())
        .await
        .unwrap();
    let d = Arc::clone(&e.daemon);
    let reconcile = tokio::spawn(async move { d.reconcile().await });
    // On this single-threaded runtime, yielding lets the reconcile run as far as it can:
    // without the lock it would see a `created` task and delete it here.
    for _ in 0..100 {
        tokio::task::yield_now().await;
    }
    assert!(
        e.fake.has_task(&id),
        "reconcile deleted a task being started"
    );
    e.fake.task_start(&id, "").await.unwrap();
    e.daemon
        .store
        .update(&id, |r| r.state.status = Status::Running)
        .unwrap();
    drop(guard);
    reconcile.await.unwrap().unwrap();
    assert!(e.fake.has_task(&id));
    assert_eq!(
        e.daemon.container(&id).unwrap().state.status,
        Status::Running
    );
}

#[tokio::test]
async fn a_create_failing_after_containers_create_rolls_highd_back() {
    let e = env().await;
    // Make the json log impossible to create: a directory where the file goes (found
    // through the /etc/hostname bind mount, which lives in the container's directory).
    let made = Arc::new(std::sync::Mutex::new(None::<String>));
    let m = Arc::clone(&made);
    e.fake.after_next_container_create(move |c| {
        let spec: serde_json::Value = serde_json::from_slice(&c.spec).unwrap();
        let hostname = spec["mounts"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["destination"] == "/etc/hostname")
            .unwrap()["source"]
            .as_str()
            .unwrap()
            .to_string();
        let dir = std::path::Path::new(&hostname).parent().unwrap();
        std::fs::create_dir(dir.join(format!("{}-json.log", c.id))).unwrap();
        *m.lock().unwrap() = Some(c.id.clone());
    });
    let err = e
        .daemon
        .create_container(Some("broken"), req(&["true"], false))
        .await
        .unwrap_err();
    assert!(err.to_string().contains("json.log"), "{err}");
    let id = made.lock().unwrap().clone().expect("containers.Create ran");
    assert!(!e.fake.has_container(&id), "highd container leaked");
    assert!(!e.fake.has_snapshot(&id), "snapshot leaked");
    assert!(e.daemon.container("broken").is_err());
    // The name is free again.
    e.daemon
        .create_container(Some("broken"), req(&["true"], false))
        .await
        .unwrap();
}
