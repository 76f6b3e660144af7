//! Invariant 3: highd SIGKILLed in the middle of an operation leaves nothing half-made
//! visible after restart, cleans the leftovers, and the same operation then succeeds.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_proto::containerd::services::tasks::v1::{
    tasks_client::TasksClient, CreateTaskRequest, DeleteTaskRequest, GetRequest, WaitRequest,
};
use tonic::Code;

use crate::common::{bin, poll, req, skip_unless_root, Stack, NS};
use crate::tasks::start_req;

fn alive(pid: i32) -> bool {
    nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_ok()
}

fn read_pid(path: &Path) -> Option<i32> {
    std::fs::read_to_string(path).ok()?.trim().parse().ok()
}

fn executable(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text)?;
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(0o755))?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn sigkill_during_task_create() -> Result<()> {
    if skip_unless_root("sigkill_during_task_create") {
        return Ok(());
    }
    let mut stack = Stack::new();
    // The runtime's `create` waits at a gate, so highd is surely killed mid-Create: the
    // shim is up and the runtime is creating the container.
    let real = std::env::var_os("BERTH_TEST_RUNTIME")
        .map(Into::into)
        .unwrap_or_else(|| bin("berth-lowrt"));
    let (gate, entered) = (
        stack.dir.path().join("gate"),
        stack.dir.path().join("entered"),
    );
    let wrapper = stack.dir.path().join("gated-runtime");
    executable(
        &wrapper,
        &format!(
            "#!/bin/sh\ncase \" $* \" in *\" create \"*)\n  touch {entered}\n  while [ ! -e {gate} ]; do sleep 0.05; done;;\nesac\nexec {real} \"$@\"\n",
            entered = entered.display(),
            gate = gate.display(),
            real = real.display()
        ),
    )?;
    let config = stack.dir.path().join("config.toml");
    std::fs::write(
        &config,
        format!(
            "[runtimes.\"io.containerd.runc.v2\"]\nruntime = \"{}\"\n",
            wrapper.display()
        ),
    )?;
    stack.extra_args = vec!["--config".into(), config.to_string_lossy().into_owned()];
    let ch = stack.start().await?;
    stack
        .create_container(&ch, "cc1", &["sh", "-c", "exit 3"])
        .await?;
    let create = {
        let mut client = TasksClient::new(ch.clone());
        let mounts = stack.rootfs_mounts();
        tokio::spawn(async move {
            client
                .create(req(CreateTaskRequest {
                    container_id: "cc1".into(),
                    rootfs: mounts,
                    ..Default::default()
                }))
                .await
        })
    };
    poll(
        "the runtime's create to start",
        Duration::from_secs(20),
        || entered.exists().then_some(()),
    )
    .await?;
    stack.kill();
    ensure!(
        create.await?.is_err(),
        "create answered ok although highd died"
    );
    let dir = stack.state.join(NS).join("cc1");
    let shim_pid = read_pid(&dir.join("shim.pid")).context("shim.pid")?;
    // Let the orphaned create finish: a created container and a live shim are left over.
    std::fs::write(&gate, b"")?;
    let init_pid = poll(
        "the container to be created",
        Duration::from_secs(20),
        || read_pid(&dir.join("init.pid")),
    )
    .await?;

    let ch = stack.start().await?;
    let mut tasks = TasksClient::new(ch.clone());
    let err = tasks
        .get(req(GetRequest {
            container_id: "cc1".into(),
            exec_id: String::new(),
        }))
        .await
        .unwrap_err();
    ensure!(
        err.code() == Code::NotFound,
        "half-made task visible: {err:?}"
    );
    ensure!(!dir.exists(), "task dir left behind");
    for (what, pid) in [("shim", shim_pid), ("container", init_pid)] {
        poll(
            &format!("the orphaned {what} to go"),
            Duration::from_secs(10),
            || (!alive(pid)).then_some(()),
        )
        .await?;
    }

    // The client's retry works and the task runs to completion.
    let created = tasks
        .create(req(CreateTaskRequest {
            container_id: "cc1".into(),
            rootfs: stack.rootfs_mounts(),
            ..Default::default()
        }))
        .await?;
    ensure!(created.into_inner().pid > 0);
    tasks.start(start_req("cc1")).await?;
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "cc1".into(),
            exec_id: String::new(),
        }))
        .await?;
    ensure!(waited.into_inner().exit_status == 3);
    tasks
        .delete(req(DeleteTaskRequest {
            container_id: "cc1".into(),
        }))
        .await?;
    Ok(())
}
