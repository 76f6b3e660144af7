//! Task state machine tests through the runtime seam: no processes, no root.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};

use berth_proto::containerd::v1::types::Status;

use crate::error::TaskError;
use crate::events::Publisher;
use crate::reaper::{Reaper, TEST_LOCK};
use crate::runtime::{CreateOpts, ExecOpts, RuntimeCli, RuntimeError};
use crate::task::{CreateRequest, Task, TaskConfig};

#[derive(Default)]
struct FakeRuntime {
    fail_create: AtomicBool,
    calls: Mutex<Vec<String>>,
}

impl FakeRuntime {
    fn record(&self, call: &str) {
        self.calls
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(call.to_owned());
    }
}

/// A pid no process of this test will ever have, so no exit arrives for it.
const FAKE_PID: u32 = 0x3fff_fff0;

impl RuntimeCli for FakeRuntime {
    async fn create(&self, opts: CreateOpts<'_>) -> Result<u32, RuntimeError> {
        self.record("create");
        drop(opts.stdio);
        if self.fail_create.load(Ordering::SeqCst) {
            return Err(RuntimeError::Failed {
                command: "create",
                message: "fake create failure".into(),
            });
        }
        Ok(FAKE_PID)
    }
    async fn start(&self, _: &str) -> Result<(), RuntimeError> {
        self.record("start");
        Ok(())
    }
    async fn kill(&self, _: &str, signal: u32, _: bool) -> Result<(), RuntimeError> {
        self.record(&format!("kill {signal}"));
        Ok(())
    }
    async fn delete(&self, _: &str, force: bool) -> Result<(), RuntimeError> {
        self.record(&format!("delete force={force}"));
        Ok(())
    }
    async fn exec(&self, opts: ExecOpts<'_>) -> Result<u32, RuntimeError> {
        self.record("exec");
        drop(opts.stdio);
        Ok(FAKE_PID + 1)
    }
    async fn pause(&self, _: &str) -> Result<(), RuntimeError> {
        self.record("pause");
        Ok(())
    }
    async fn resume(&self, _: &str) -> Result<(), RuntimeError> {
        self.record("resume");
        Ok(())
    }
    async fn ps(&self, _: &str) -> Result<Vec<u32>, RuntimeError> {
        Ok(vec![FAKE_PID])
    }
    async fn update(&self, _: &str, file: &std::path::Path) -> Result<(), RuntimeError> {
        let json = std::fs::read_to_string(file).unwrap_or_default();
        self.record(&format!("update {json}"));
        Ok(())
    }
}

fn task(dir: &std::path::Path) -> Arc<Task<FakeRuntime>> {
    let cfg = TaskConfig {
        id: "c1".into(),
        namespace: "ns".into(),
        bundle: dir.to_owned(),
    };
    let reaper = Reaper::start().expect("reaper");
    let events = Publisher::start(dir.join("no-highd.sock"), "ns".into());
    Task::start(cfg, FakeRuntime::default(), &reaper, events)
}

fn create_req() -> CreateRequest {
    CreateRequest {
        id: "c1".into(),
        ..Default::default()
    }
}

#[tokio::test(flavor = "current_thread")]
async fn failed_create_leaves_no_task_and_can_be_retried() {
    let _serial = TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let task = task(dir.path());
    task.runtime.fail_create.store(true, Ordering::SeqCst);
    let err = task.create(create_req()).await.expect_err("fails");
    assert_eq!(tonic::Status::from(err).message(), "fake create failure");
    assert!(matches!(
        task.process("c1", ""),
        Err(TaskError::NotFound { .. })
    ));

    task.runtime.fail_create.store(false, Ordering::SeqCst);
    assert_eq!(task.create(create_req()).await.expect("create"), FAKE_PID);
    let again = task.create(create_req()).await.expect_err("second create");
    assert!(matches!(again, TaskError::AlreadyExists { .. }));
    let wrong = CreateRequest {
        id: "other".into(),
        ..Default::default()
    };
    assert!(matches!(
        task.create(wrong).await,
        Err(TaskError::WrongTask { .. })
    ));
    assert_eq!(
        task.process("c1", "").expect("init").state().status,
        Status::Created
    );
}

#[tokio::test(flavor = "current_thread")]
async fn operations_check_the_state_first() {
    let _serial = TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let task = task(dir.path());
    task.create(create_req()).await.expect("create");
    // Exec needs a running init; pause too.
    let err = task
        .add_exec("e1", Default::default(), b"{}".to_vec())
        .expect_err("exec");
    assert!(
        matches!(err, TaskError::WrongState { action: "exec", .. }),
        "{err}"
    );
    assert!(matches!(
        task.pause().await,
        Err(TaskError::WrongState { .. })
    ));

    task.start_init().await.expect("start");
    assert!(matches!(
        task.start_init().await,
        Err(TaskError::WrongState { .. })
    ));
    let bad = task.add_exec("../e1", Default::default(), b"{}".to_vec());
    assert!(matches!(bad, Err(TaskError::BadExecId { .. })));
    task.add_exec("e1", Default::default(), b"{}".to_vec())
        .expect("exec");
    let dup = task.add_exec("e1", Default::default(), b"{}".to_vec());
    assert!(matches!(dup, Err(TaskError::ExecExists { .. })));
    assert_eq!(
        task.start_exec("e1").await.expect("start exec"),
        FAKE_PID + 1
    );
    assert!(
        !dir.path().join("exec-e1.json").exists(),
        "spec file left behind"
    );
    assert!(matches!(
        task.delete_exec("e1"),
        Err(TaskError::WrongState { .. })
    ));

    task.pause().await.expect("pause");
    assert_eq!(
        task.process("c1", "").expect("init").state().status,
        Status::Paused
    );
    task.resume().await.expect("resume");
    assert!(matches!(
        task.delete_init().await,
        Err(TaskError::WrongState { .. })
    ));
    assert!(matches!(
        task.shutdown(false),
        Err(TaskError::WrongState { .. })
    ));
    task.kill("", 15, false).await.expect("kill");
    task.update(br#"{"pids":{"limit":10}}"#)
        .await
        .expect("update");
    let calls = task.runtime.calls.lock().expect("calls").clone();
    let want = ["create", "start", "exec", "pause", "resume", "kill 15"];
    let mut want: Vec<String> = want.map(String::from).to_vec();
    want.push(r#"update {"pids":{"limit":10}}"#.to_owned());
    assert_eq!(calls, want);
    assert!(!dir.path().join("update-resources.json").exists());
    task.shutdown(true).expect("shutdown now");
}

#[tokio::test(flavor = "current_thread")]
async fn stats_need_a_task_and_its_cgroup() {
    let _serial = TEST_LOCK.lock().await;
    let dir = tempfile::tempdir().expect("tempdir");
    let task = task(dir.path());
    assert!(matches!(task.stats(), Err(TaskError::NotFound { .. })));
    // The fake init pid does not exist, so the cgroup comes from the spec's cgroupsPath;
    // it names a cgroup nobody created, which reads as gone, not as zeros.
    let spec = format!(
        r#"{{"linux":{{"cgroupsPath":"/berth-test-absent-{}/c1"}}}}"#,
        std::process::id()
    );
    std::fs::write(dir.path().join("config.json"), spec).expect("spec");
    task.create(create_req()).await.expect("create");
    let err = task.stats().expect_err("no such cgroup");
    let status = tonic::Status::from(err);
    assert_eq!(status.code(), tonic::Code::FailedPrecondition, "{status:?}");
    assert!(status.message().contains("berth-test-absent"), "{status:?}");

    let bare = tempfile::tempdir().expect("tempdir");
    let task = self::task(bare.path());
    task.create(create_req()).await.expect("create");
    let err = task.stats().expect_err("no cgroup at all");
    assert!(matches!(err, TaskError::NoCgroup), "{err}");
}
