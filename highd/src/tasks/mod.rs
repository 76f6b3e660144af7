//! Task supervision: one shim per task, a client per shim, and a view of each task's
//! state that can always be rebuilt from its task directory (invariant 1).

pub mod bundle;
mod create;
pub mod error;
mod ops;
pub mod options;
pub mod recovery;
pub mod service;

use std::collections::{HashMap, HashSet};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::any::{pack, topic};
use berth_proto::containerd::events::TaskExit;
use berth_proto::containerd::task::v2::task_client::TaskClient;
use berth_proto::containerd::v1::types::{Process, Status as ProcStatus};
use tonic::transport::Channel;

pub use bundle::{Bundle, ExitRecord};
pub use error::TaskError;
pub use service::TasksService;

use crate::config::Config;
use crate::containers::ContainerStore;
use crate::events::{Event, Exchange};
use crate::shims::ShimClient;

/// Exit status reported when a shim vanished without recording one (containerd's value).
pub const SHIM_DIED_STATUS: u32 = 255;

type Key = (String, String);

/// What we know about a finished init process.
#[derive(Debug, Clone, PartialEq)]
pub struct ExitInfo {
    pub pid: u32,
    pub status: u32,
    pub exited_at: Option<prost_types::Timestamp>,
}

impl ExitInfo {
    fn from_record(rec: &ExitRecord) -> ExitInfo {
        ExitInfo {
            pid: rec.pid,
            status: rec.exit_status,
            exited_at: rec.exited_at.map(crate::containers::store::timestamp),
        }
    }
}

/// One task (a container's init process and its execs), served by one shim.
#[derive(Debug)]
pub struct Task {
    pub namespace: String,
    pub id: String,
    pub bundle: Bundle,
    pub pid: u32,
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    /// `None` once the shim is known to be gone.
    shim: Mutex<Option<ShimClient>>,
    /// Set by the shim's TaskExit event, or from exit.json when the shim is gone.
    exit: Mutex<Option<ExitInfo>>,
}

impl Task {
    fn shim(&self) -> Option<ShimClient> {
        self.shim.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    /// Forgets the shim's client, closing our connection once no call holds a clone.
    fn drop_shim(&self) {
        self.shim.lock().unwrap_or_else(|p| p.into_inner()).take();
    }

    fn exit(&self) -> Option<ExitInfo> {
        self.exit.lock().unwrap_or_else(|p| p.into_inner()).clone()
    }

    fn set_exit(&self, info: ExitInfo) {
        *self.exit.lock().unwrap_or_else(|p| p.into_inner()) = Some(info);
    }

    /// Marks the shim gone and settles the exit status: the shim's exit.json if it
    /// wrote one, else what its TaskExit said, else 255 ("shim died").
    fn mark_shim_gone(&self) -> ExitInfo {
        self.settle_gone().0
    }

    /// Like `mark_shim_gone`; also says whether this is news (no exit was known).
    fn settle_gone(&self) -> (ExitInfo, bool) {
        *self.shim.lock().unwrap_or_else(|p| p.into_inner()) = None;
        let news = self.exit().is_none();
        let info = self
            .bundle
            .exit_record()
            .map(|r| ExitInfo::from_record(&r))
            .or_else(|| self.exit())
            .unwrap_or(ExitInfo {
                pid: self.pid,
                status: SHIM_DIED_STATUS,
                exited_at: Some(crate::containers::store::timestamp(chrono::Utc::now())),
            });
        if news {
            tracing::warn!(namespace = %self.namespace, id = %self.id, status = info.status, "shim gone");
        }
        self.set_exit(info.clone());
        (info, news)
    }

    /// The init process as containerd's `Process`, for a task whose shim is gone.
    fn stopped_process(&self, info: &ExitInfo) -> Process {
        Process {
            container_id: self.id.clone(),
            id: self.id.clone(),
            // A task recovered without init.pid only knows its pid from exit.json.
            pid: if self.pid != 0 { self.pid } else { info.pid },
            status: ProcStatus::Stopped as i32,
            exit_status: info.status,
            exited_at: info.exited_at,
            ..Process::default()
        }
    }
}

#[derive(Default)]
struct Registry {
    tasks: HashMap<Key, Arc<Task>>,
    /// Ids being created, so two concurrent Creates cannot both launch a shim.
    creating: HashSet<Key>,
    /// Ids with a Delete in progress: a second Delete or a Create of the same id waits
    /// for it to finish instead of racing it (and killing the newer task).
    deleting: HashSet<Key>,
}

pub struct TaskManager {
    cfg: Arc<Config>,
    containers: ContainerStore,
    events: Exchange,
    registry: Mutex<Registry>,
    debug_shims: bool,
}

impl TaskManager {
    pub fn new(
        cfg: Arc<Config>,
        containers: ContainerStore,
        events: Exchange,
        debug_shims: bool,
    ) -> Self {
        TaskManager {
            cfg,
            containers,
            events,
            registry: Mutex::new(Registry::default()),
            debug_shims,
        }
    }

    fn registry(&self) -> std::sync::MutexGuard<'_, Registry> {
        self.registry.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Runs `f` (a containers-table delete) only if the container has no task, with
    /// task creation locked out meanwhile; `None` if there is a task.
    pub fn unless_task<R>(&self, ns: &str, id: &str, f: impl FnOnce() -> R) -> Option<R> {
        let key = (ns.to_string(), id.to_string());
        let reg = self.registry();
        if reg.tasks.contains_key(&key) || reg.creating.contains(&key) {
            return None;
        }
        Some(f())
    }

    fn task(&self, ns: &str, id: &str) -> Result<Arc<Task>, TaskError> {
        self.registry()
            .tasks
            .get(&(ns.to_string(), id.to_string()))
            .cloned()
            .ok_or_else(|| TaskError::NotFound { id: id.to_string() })
    }

    fn tasks_in(&self, ns: &str) -> Vec<Arc<Task>> {
        let mut tasks: Vec<_> = self
            .registry()
            .tasks
            .values()
            .filter(|t| t.namespace == ns)
            .cloned()
            .collect();
        tasks.sort_by(|a, b| a.id.cmp(&b.id));
        tasks
    }

    fn insert(&self, task: Arc<Task>) {
        let key = (task.namespace.clone(), task.id.clone());
        self.registry().tasks.insert(key, task);
    }

    /// Drops `task` from the table, but never a newer task that took its id meanwhile.
    fn remove(&self, task: &Arc<Task>) {
        let key = (task.namespace.clone(), task.id.clone());
        let mut reg = self.registry();
        if reg.tasks.get(&key).is_some_and(|t| Arc::ptr_eq(t, task)) {
            reg.tasks.remove(&key);
        }
    }

    /// Records what events from shims tell us; called for every published event
    /// before it is forwarded to subscribers.
    pub fn observe(&self, event: &Event) {
        let Ok(exit) = berth_proto::any::unpack::<TaskExit>(&event.event) else {
            return;
        };
        // Exec exits are the shim's business; only the init process ends the task.
        if exit.id != exit.container_id && !exit.id.is_empty() {
            return;
        }
        if let Ok(task) = self.task(&event.namespace, &exit.container_id) {
            task.set_exit(ExitInfo {
                pid: exit.pid,
                status: exit.exit_status,
                exited_at: exit.exited_at,
            });
        }
    }

    /// A client for the task's shim, or `ShimGone`.
    fn client(&self, task: &Task) -> Result<TaskClient<Channel>, TaskError> {
        task.shim()
            .map(|s| s.rpc())
            .ok_or_else(|| TaskError::ShimGone {
                id: task.id.clone(),
            })
    }

    /// Turns a failed shim call into our error, noticing a dead shim on the way.
    async fn shim_failed(&self, task: &Task, status: tonic::Status) -> TaskError {
        use tonic::Code;
        let transport = matches!(
            status.code(),
            Code::Unavailable | Code::Unknown | Code::Cancelled
        );
        if transport {
            if let Some(shim) = task.shim() {
                // Only a refused socket plus a vanished process means dead: a transport
                // error or a slow connect from a stopped or busy shim does not.
                if crate::shims::shim_dead(Some(shim.address()), &task.bundle.dir).await {
                    self.shim_gone(task);
                    return TaskError::ShimGone {
                        id: task.id.clone(),
                    };
                }
            }
        }
        TaskError::Rpc(status)
    }
}

impl TaskManager {
    /// Settles a task whose shim vanished and, if nobody heard of its exit yet, tells
    /// subscribers the way containerd does: a TaskExit the shim could not send.
    fn shim_gone(&self, task: &Task) -> ExitInfo {
        let (info, news) = task.settle_gone();
        if news {
            let exit = TaskExit {
                container_id: task.id.clone(),
                id: task.id.clone(),
                pid: info.pid,
                exit_status: info.status,
                exited_at: info.exited_at,
            };
            self.events
                .emit(&task.namespace, topic::TASK_EXIT, pack(&exit));
        }
        info
    }
}

/// Waits (polling, with a deadline) until `pid` no longer exists. The shim is not our
/// child, so we cannot waitpid it.
/// A daemonized shim's parent is init, which may reap it late (seconds, on some VMs'
/// inits): an exited, unreaped shim is gone for us.
fn zombie(pid: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
        // The state follows the parenthesised command name, which may contain spaces.
        stat.rsplit_once(')')
            .is_some_and(|(_, rest)| rest.trim_start().starts_with('Z'))
    })
}

async fn wait_gone(pid: i32, deadline: Duration) {
    let until = tokio::time::Instant::now() + deadline;
    // A shim told to shut down exits within a few ms: poll tightly at first (this wait is
    // on the path of every `ctr run --rm`), then back off.
    let mut pause = Duration::from_millis(1);
    while tokio::time::Instant::now() < until {
        if nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None).is_err() || zombie(pid) {
            return;
        }
        tokio::time::sleep(pause).await;
        pause = (pause * 2).min(Duration::from_millis(20));
    }
}
