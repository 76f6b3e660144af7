//! containerd's runc options (`containerd.runc.v1.Options`) in a container's runtime
//! options: BinaryName, Root and ShimCgroup reach the shim and the runtime; NoPivotRoot,
//! NoNewKeyring and IoUid/IoGid are accepted; checkpoint paths are refused by name.

use anyhow::{ensure, Context, Result};
use berth_proto::containerd::runc::v1::Options;
use berth_proto::containerd::services::containers::v1::{
    container::Runtime, containers_client::ContainersClient, Container, CreateContainerRequest,
};
use berth_proto::containerd::services::tasks::v1::{
    tasks_client::TasksClient, CreateTaskRequest, DeleteTaskRequest, KillRequest, StartRequest,
    WaitRequest,
};
use prost::Message;
use tonic::transport::Channel;
use tonic::Code;

use crate::common::{req, skip_unless_root, Stack, NS, RUNTIME_NAME};

async fn create_with_options(stack: &Stack, ch: &Channel, id: &str, opts: Options) -> Result<()> {
    let container = Container {
        id: id.into(),
        runtime: Some(Runtime {
            name: RUNTIME_NAME.into(),
            options: Some(prost_types::Any {
                type_url: "containerd.runc.v1.Options".into(),
                value: opts.encode_to_vec(),
            }),
        }),
        spec: Some(berth_proto::any::pack_json(
            berth_proto::any::SPEC_TYPE_URL,
            stack.spec(id, &["sleep", "1000"]),
        )),
        ..Container::default()
    };
    ContainersClient::new(ch.clone())
        .create(req(CreateContainerRequest {
            container: Some(container),
        }))
        .await?;
    Ok(())
}

fn runc_available() -> bool {
    std::process::Command::new("runc")
        .arg("--version")
        .output()
        .is_ok_and(|o| o.status.success())
}

#[tokio::test(flavor = "multi_thread")]
async fn runc_options_pick_binary_root_and_shim_cgroup() -> Result<()> {
    if skip_unless_root("runc_options_pick_binary_root_and_shim_cgroup") {
        return Ok(());
    }
    if !runc_available() {
        eprintln!("SKIPPED runc_options_pick_binary_root_and_shim_cgroup: no runc in $PATH");
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut tasks = TasksClient::new(ch.clone());
    let runc_root = stack.dir.path().join("runc-root");
    let shim_cgroup = format!("{}/shims", stack.cgroup_parent);
    create_with_options(
        &stack,
        &ch,
        "o1",
        Options {
            binary_name: "runc".into(),
            root: runc_root.display().to_string(),
            shim_cgroup: shim_cgroup.clone(),
            // Applied by the shim (its own tests check how); here: accepted end to end.
            no_pivot_root: true,
            no_new_keyring: true,
            io_uid: 1234,
            io_gid: 5678,
            ..Options::default()
        },
    )
    .await?;
    let pid = tasks
        .create(req(CreateTaskRequest {
            container_id: "o1".into(),
            rootfs: stack.rootfs_mounts(),
            ..CreateTaskRequest::default()
        }))
        .await?
        .into_inner()
        .pid;
    tasks
        .start(req(StartRequest {
            container_id: "o1".into(),
            exec_id: String::new(),
        }))
        .await?;

    // runc itself knows the container, under <Root>/<namespace> (containerd's layout).
    let ns_root = runc_root.join(NS);
    let out = std::process::Command::new("runc")
        .arg("--root")
        .arg(&ns_root)
        .args(["state", "o1"])
        .output()?;
    ensure!(
        out.status.success(),
        "runc does not know o1: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let state: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    ensure!(
        state["status"] == "running" && state["pid"] == pid,
        "runc state {state}, task pid {pid}"
    );
    // The shim moved itself into ShimCgroup.
    let task_dir = stack.state.join(NS).join("o1");
    let shim_pid = std::fs::read_to_string(task_dir.join("shim.pid"))?;
    let cgroups = std::fs::read_to_string(format!("/proc/{}/cgroup", shim_pid.trim()))?;
    ensure!(
        cgroups
            .lines()
            .any(|l| l.ends_with(&format!(":{shim_cgroup}"))),
        "shim not in {shim_cgroup}: {cgroups}"
    );

    // Kill and delete go through runc too: afterwards runc has forgotten it.
    tasks
        .kill(req(KillRequest {
            container_id: "o1".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        }))
        .await?;
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "o1".into(),
            exec_id: String::new(),
        }))
        .await?
        .into_inner();
    ensure!(waited.exit_status == 137, "{waited:?}");
    tasks
        .delete(req(DeleteTaskRequest {
            container_id: "o1".into(),
        }))
        .await?;
    ensure!(
        !ns_root.join("o1").exists(),
        "runc state left behind in {}",
        ns_root.display()
    );
    ensure!(!task_dir.exists(), "task dir left behind");
    Ok(())
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_runc_options_are_refused_by_name() -> Result<()> {
    if skip_unless_root("bad_runc_options_are_refused_by_name") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut tasks = TasksClient::new(ch.clone());
    let cases = [
        (
            "b1",
            Options {
                root: "relative/root".into(),
                ..Options::default()
            },
            Code::InvalidArgument,
            "root",
        ),
        (
            "b2",
            Options {
                criu_path: "/usr/sbin/criu".into(),
                ..Options::default()
            },
            Code::Unimplemented,
            "criu_path",
        ),
        (
            "b3",
            Options {
                binary_name: "no-such-runtime-xyz".into(),
                ..Options::default()
            },
            // The shim's start refuses it; containerd's fails later, also Internal.
            Code::Internal,
            "no-such-runtime-xyz",
        ),
    ];
    for (id, opts, code, word) in cases {
        create_with_options(&stack, &ch, id, opts).await?;
        let err = tasks
            .create(req(CreateTaskRequest {
                container_id: id.into(),
                rootfs: stack.rootfs_mounts(),
                ..CreateTaskRequest::default()
            }))
            .await
            .err()
            .with_context(|| format!("{id}: task created"))?;
        ensure!(
            err.code() == code && err.message().contains(word),
            "{id}: {err:?}"
        );
        ensure!(
            !stack.state.join(NS).join(id).exists(),
            "{id}: task dir left behind"
        );
    }
    Ok(())
}
