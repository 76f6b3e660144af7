//! Recovery at scale: highd SIGKILLed under 20 running containers while 5 more exit, then
//! restarted: every task's state is right (gRPC and `ctr tasks ls`), exec and kill work,
//! a deleted task's shim exits, and shims outlive a highd that never comes back.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_proto::any::{pack_json, PROCESS_TYPE_URL};
use berth_proto::containerd::services::tasks::v1::{
    tasks_client::TasksClient, DeleteTaskRequest, ExecProcessRequest, KillRequest,
    ListTasksRequest, StartRequest, WaitRequest,
};
use berth_proto::containerd::task::v2::{task_client::TaskClient, StateRequest};
use berth_proto::containerd::v1::types::Status as ProcStatus;

use crate::common::{poll, req, skip_unless_root, Stack, NS};
use crate::ctr::find_ctr;
use crate::tasks::start_req;

const RUNNING: usize = 20;
const EXITING: usize = 5;

fn alive(pid: i32) -> bool {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // An exited daemon may wait a while for init to reap it: a zombie is gone.
    !stat.is_empty()
        && !stat
            .rsplit_once(')')
            .is_some_and(|(_, r)| r.trim_start().starts_with('Z'))
}

fn shim_pid(stack: &Stack, id: &str) -> Result<i32> {
    let path = stack.state.join(NS).join(id).join("shim.pid");
    Ok(std::fs::read_to_string(&path)
        .with_context(|| format!("{}", path.display()))?
        .trim()
        .parse()?)
}

fn wait_req(id: &str) -> tonic::Request<WaitRequest> {
    req(WaitRequest {
        container_id: id.into(),
        exec_id: String::new(),
    })
}

#[tokio::test(flavor = "multi_thread")]
async fn recovery_of_25_tasks_after_sigkill() -> Result<()> {
    if skip_unless_root("recovery_of_25_tasks_after_sigkill") {
        return Ok(());
    }
    let mut stack = Stack::new();
    let ch = stack.start().await?;
    let mut tasks = TasksClient::new(ch.clone());
    let mut pids = BTreeMap::new();
    for i in 0..RUNNING + EXITING {
        let id = format!("s{i:02}");
        let script = format!(
            "while [ ! -e /tmp/go-{id} ]; do sleep 0.1; done; exit {}",
            10 + i
        );
        let args: Vec<&str> = if i < RUNNING {
            vec!["sleep", "1000"]
        } else {
            vec!["sh", "-c", &script]
        };
        let pid = stack.create_task(&ch, &id, &args, "").await?;
        tasks.start(start_req(&id)).await?;
        pids.insert(id, pid);
    }

    stack.kill();
    for i in RUNNING..RUNNING + EXITING {
        std::fs::write(stack.rootfs().join(format!("tmp/go-s{i:02}")), b"")?;
    }
    for i in RUNNING..RUNNING + EXITING {
        let exit_json = stack
            .state
            .join(NS)
            .join(format!("s{i:02}"))
            .join("exit.json");
        poll(
            "the shims to record the exits",
            Duration::from_secs(20),
            || exit_json.exists().then_some(()),
        )
        .await?;
    }

    let ch = stack.start().await?;
    let mut tasks = TasksClient::new(ch.clone());
    let listed = tasks
        .list(req(ListTasksRequest::default()))
        .await?
        .into_inner()
        .tasks;
    ensure!(
        listed.len() == RUNNING + EXITING,
        "{} tasks listed",
        listed.len()
    );
    for (i, (id, pid)) in pids.iter().enumerate() {
        let p = listed
            .iter()
            .find(|p| &p.id == id)
            .context("task missing")?;
        let want = if i < RUNNING {
            (ProcStatus::Running as i32, 0)
        } else {
            (ProcStatus::Stopped as i32, 10 + i as u32)
        };
        ensure!(p.pid == *pid, "{id}: pid {} != {pid}", p.pid);
        ensure!((p.status, p.exit_status) == want, "{id}: {p:?}");
    }
    if let Some(bin) = find_ctr() {
        let out = std::process::Command::new(bin)
            .arg("--address")
            .arg(&stack.address)
            .args(["-n", NS, "tasks", "ls"])
            .output()?;
        let text = String::from_utf8_lossy(&out.stdout);
        for (i, id) in pids.keys().enumerate() {
            let want = if i < RUNNING { "RUNNING" } else { "STOPPED" };
            ensure!(
                text.lines()
                    .any(|l| l.starts_with(id.as_str()) && l.contains(want)),
                "ctr tasks ls: {id} not {want}: {text}"
            );
        }
    } else {
        eprintln!("recovery_of_25_tasks_after_sigkill: no ctr in $PATH, gRPC checks only");
    }

    // Exec in a recovered task.
    let out = stack.dir.path().join("exec.out");
    let process = serde_json::json!({
        "args": ["sh", "-c", "echo recovered; exit 5"], "env": ["PATH=/bin"], "cwd": "/",
        "user": {"uid": 0, "gid": 0}
    });
    tasks
        .exec(req(ExecProcessRequest {
            container_id: "s00".into(),
            exec_id: "e1".into(),
            stdout: format!("file://{}", out.display()),
            spec: Some(pack_json(PROCESS_TYPE_URL, serde_json::to_vec(&process)?)),
            ..Default::default()
        }))
        .await?;
    tasks
        .start(req(StartRequest {
            container_id: "s00".into(),
            exec_id: "e1".into(),
        }))
        .await?;
    let waited = tasks
        .wait(req(WaitRequest {
            container_id: "s00".into(),
            exec_id: "e1".into(),
        }))
        .await?;
    ensure!(waited.into_inner().exit_status == 5);
    ensure!(std::fs::read_to_string(&out)? == "recovered\n");

    // Kill a recovered task; then delete it and one that exited while we were down:
    // their shims exit.
    tasks
        .kill(req(KillRequest {
            container_id: "s01".into(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        }))
        .await?;
    ensure!(tasks.wait(wait_req("s01")).await?.into_inner().exit_status == 137);
    let last = format!("s{:02}", RUNNING + EXITING - 1);
    for id in ["s01", last.as_str()] {
        let shim = shim_pid(&stack, id)?;
        tasks
            .delete(req(DeleteTaskRequest {
                container_id: id.into(),
            }))
            .await?;
        poll(
            &format!("{id}'s shim to exit"),
            Duration::from_secs(10),
            || (!alive(shim)).then_some(()),
        )
        .await?;
    }

    // highd gone for good: the shims keep their containers and answer on their sockets.
    stack.kill();
    let (id, pid) = ("s02", pids["s02"] as i32);
    let shim = shim_pid(&stack, id)?;
    let sock = stack.state.join(NS).join(id).join("shim.sock");
    let channel = berth_proto::transport::connect_unix(&sock).await?;
    let state = TaskClient::new(channel)
        .state(StateRequest {
            id: id.into(),
            exec_id: String::new(),
        })
        .await?
        .into_inner();
    ensure!(
        state.pid as i32 == pid && state.status == ProcStatus::Running as i32,
        "{state:?}"
    );
    ensure!(
        alive(shim) && alive(pid),
        "shim or container died without highd"
    );
    Ok(())
}
