//! The task: its init process, its exec processes, and the operations of the task API,
//! free of any gRPC types (service.rs converts).

use std::collections::HashMap;
use std::path::PathBuf;
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use berth_proto::containerd::events::{
    TaskCreate, TaskDelete, TaskIo, TaskOom, TaskPaused, TaskResumed, TaskStart,
};
use berth_proto::containerd::v1::types::Status;
use tokio::sync::Notify;

use crate::cgroup::CgroupPaths;
use crate::console::ConsoleSocket;
use crate::error::TaskError;
use crate::events::Publisher;
use crate::mount::{self, RootfsMount};
use crate::options::CreateOptions;
use crate::process::{ExitInfo, ProcState, Process};
use crate::reaper::{Exit, Reaper};
use crate::runtime::{CreateOpts, RuntimeCli, RuntimeError};
use crate::stdio::{IoOwner, IoSpec, ProcessIo, RuntimeStdio};

/// How long the runtime may take to send a terminal's pty master after it exited.
const CONSOLE_GRACE: Duration = Duration::from_secs(5);
/// How long a forced delete of a created task waits for its init to be reaped.
const DELETE_REAP: Duration = Duration::from_secs(5);

/// Who the shim is: fixed for its whole life.
#[derive(Debug, Clone)]
pub struct TaskConfig {
    pub id: String,
    pub namespace: String,
    pub bundle: PathBuf,
}

impl TaskConfig {
    pub fn rootfs(&self) -> PathBuf {
        self.bundle.join("rootfs")
    }
}

#[derive(Debug, Default)]
pub(crate) struct Inner {
    pub(crate) init: Option<Arc<Process>>,
    pub(crate) execs: HashMap<String, Arc<Process>>,
    /// A Create is running; a second one must fail rather than race it.
    creating: bool,
    rootfs_mounted: bool,
    /// Runtime calls under way that will start a process. While there are any, exits of
    /// unknown pids are kept: they may belong to a process whose pid is not known yet.
    pub(crate) pending_launches: usize,
    /// Publishes TaskOOM while the task exists.
    oom_watch: Option<tokio::task::AbortHandle>,
    /// The container's cgroup, located once its init exists (for Stats and OOM events).
    pub(crate) cgroup: Option<CgroupPaths>,
    pub(crate) unmatched: HashMap<i32, Exit>,
    /// From Create's options: the owner of every process's stdio pipes.
    io_owner: Option<IoOwner>,
}

pub struct Task<R> {
    pub cfg: TaskConfig,
    pub(crate) runtime: R,
    pub(crate) events: Publisher,
    pub(crate) inner: Mutex<Inner>,
    pub(crate) shutdown: Arc<Notify>,
}

/// A Create request, gRPC-free.
#[derive(Debug, Clone, Default)]
pub struct CreateRequest {
    pub id: String,
    pub rootfs: Vec<RootfsMount>,
    pub io: IoSpec,
    pub options: CreateOptions,
}

impl<R: RuntimeCli> Task<R> {
    /// Builds the task and starts watching the reaper for its processes' exits.
    pub fn start(
        cfg: TaskConfig,
        runtime: R,
        reaper: &Arc<Reaper>,
        events: Publisher,
    ) -> Arc<Self> {
        let task = Arc::new(Task {
            cfg,
            runtime,
            events,
            inner: Mutex::new(Inner::default()),
            shutdown: Arc::new(Notify::new()),
        });
        let exits = reaper.subscribe();
        tokio::spawn(Arc::clone(&task).monitor(exits));
        task
    }

    pub(crate) fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Resolves the process an RPC names.
    pub fn process(&self, id: &str, exec_id: &str) -> Result<Arc<Process>, TaskError> {
        self.check_id(id)?;
        let inner = self.lock();
        if exec_id.is_empty() {
            return inner
                .init
                .clone()
                .ok_or_else(|| TaskError::NotFound { id: id.to_owned() });
        }
        inner
            .execs
            .get(exec_id)
            .cloned()
            .ok_or_else(|| TaskError::ExecNotFound {
                exec_id: exec_id.to_owned(),
            })
    }

    pub fn check_id(&self, id: &str) -> Result<(), TaskError> {
        if id == self.cfg.id {
            Ok(())
        } else {
            Err(TaskError::WrongTask {
                expected: self.cfg.id.clone(),
                got: id.to_owned(),
            })
        }
    }

    pub async fn create(self: &Arc<Self>, req: CreateRequest) -> Result<u32, TaskError> {
        self.check_id(&req.id)?;
        {
            let mut inner = self.lock();
            if inner.init.is_some() || inner.creating {
                return Err(TaskError::AlreadyExists { id: req.id });
            }
            inner.creating = true;
        }
        let result = self.create_inner(&req).await;
        let mut inner = self.lock();
        inner.creating = false;
        match result {
            Ok(process) => {
                let pid = process.pid();
                inner.init = Some(process);
                drop(inner);
                let cgroup = self.locate_cgroup(pid);
                let oom_watch = self.watch_oom(cgroup.as_ref());
                let mut inner = self.lock();
                inner.cgroup = cgroup;
                inner.oom_watch = oom_watch;
                drop(inner);
                self.events.publish(TaskCreate {
                    container_id: self.cfg.id.clone(),
                    bundle: self.cfg.bundle.display().to_string(),
                    rootfs: req.rootfs.iter().map(to_proto_mount).collect(),
                    io: Some(TaskIo {
                        stdin: req.io.stdin.clone(),
                        stdout: req.io.stdout.clone(),
                        stderr: req.io.stderr.clone(),
                        terminal: req.io.terminal,
                    }),
                    checkpoint: String::new(),
                    pid,
                });
                Ok(pid)
            }
            Err(err) => {
                if inner.rootfs_mounted {
                    if let Err(e) = mount::unmount_all(&self.cfg.rootfs()) {
                        tracing::error!(error = %e, "cannot unmount rootfs after failed create");
                    } else {
                        inner.rootfs_mounted = false;
                    }
                }
                Err(err)
            }
        }
    }

    async fn create_inner(
        self: &Arc<Self>,
        req: &CreateRequest,
    ) -> Result<Arc<Process>, TaskError> {
        if !req.rootfs.is_empty() {
            mount::mount_all(&req.rootfs, &self.cfg.rootfs())?;
            self.lock().rootfs_mounted = true;
        }
        self.lock().io_owner = req.options.io_owner;
        let process = Process::new("", req.io.clone(), None);
        let pid_file = self.cfg.bundle.join("init.pid");
        let bundle = self.cfg.bundle.clone();
        let id = self.cfg.id.clone();
        self.launch(&process, "init", |stdio, console| async move {
            let opts = CreateOpts {
                id: &id,
                bundle: &bundle,
                pid_file: &pid_file,
                console_socket: console.as_deref(),
                no_pivot: req.options.no_pivot_root,
                no_new_keyring: req.options.no_new_keyring,
                stdio,
            };
            self.runtime.create(opts).await
        })
        .await?;
        Ok(process)
    }

    /// The init's cgroup as the runtime placed it; the spec's `cgroupsPath` when the init
    /// is already gone. `None` (no Stats, no OOM events) when neither works.
    fn locate_cgroup(&self, pid: u32) -> Option<CgroupPaths> {
        let by_pid = CgroupPaths::for_pid(pid);
        let found = by_pid.or_else(|err| {
            tracing::debug!(pid, error = %crate::error_chain(&err), "trying cgroupsPath");
            CgroupPaths::from_bundle(&self.cfg.bundle)
        });
        match found {
            Ok(paths) => Some(paths),
            Err(err) => {
                tracing::warn!(error = %crate::error_chain(&err), "container cgroup not found");
                None
            }
        }
    }

    fn watch_oom(&self, cgroup: Option<&CgroupPaths>) -> Option<tokio::task::AbortHandle> {
        let mut watcher = match cgroup.map(crate::oom::OomWatcher::for_cgroup) {
            Some(Ok(Some(w))) => w,
            None | Some(Ok(None)) => {
                tracing::debug!("no memory controller for the task; no OOM events");
                return None;
            }
            Some(Err(err)) => {
                tracing::warn!(error = %crate::error_chain(&err), "cannot watch for OOM");
                return None;
            }
        };
        let events = self.events.clone();
        let container_id = self.cfg.id.clone();
        let task = tokio::spawn(async move {
            while watcher.next().await.is_some() {
                tracing::info!("container hit its memory limit");
                events.publish(TaskOom {
                    container_id: container_id.clone(),
                });
            }
        });
        Some(task.abort_handle())
    }

    /// Runs a runtime call that starts `process` (create or exec) and adopts the pid it
    /// reports, with the process's stdio (and pty) connected.
    pub(crate) async fn launch<F, Fut>(
        self: &Arc<Self>,
        process: &Arc<Process>,
        console_name: &str,
        run: F,
    ) -> Result<u32, TaskError>
    where
        F: FnOnce(RuntimeStdio, Option<PathBuf>) -> Fut,
        Fut: std::future::Future<Output = Result<u32, RuntimeError>>,
    {
        let owner = self.lock().io_owner;
        let (io, stdio) = ProcessIo::prepare(&process.io_spec, owner)?;
        let console = match process.io_spec.terminal {
            true => Some(ConsoleSocket::bind(
                &self.cfg.bundle,
                &format!("{console_name}.console.sock"),
            )?),
            false => None,
        };
        self.lock().pending_launches += 1;
        let result = self
            .run_with_console(
                console.as_ref(),
                &io,
                run(stdio, console.as_ref().map(|c| c.path().to_owned())),
            )
            .await;
        let mut inner = self.lock();
        inner.pending_launches -= 1;
        let pid = match result {
            Ok(pid) => pid,
            Err(err) => {
                io.shutdown();
                if inner.pending_launches == 0 {
                    inner.unmatched.clear();
                }
                return Err(err);
            }
        };
        process.set_pid(pid, io);
        let early = inner.unmatched.remove(&(pid as i32));
        if inner.pending_launches == 0 {
            inner.unmatched.clear();
        }
        drop(inner);
        if let Some(exit) = early {
            tokio::spawn(Arc::clone(self).handle_exit(Arc::clone(process), exit));
        }
        Ok(pid)
    }

    /// Awaits the runtime call while accepting the pty master it sends meanwhile.
    async fn run_with_console(
        &self,
        console: Option<&ConsoleSocket>,
        io: &ProcessIo,
        call: impl std::future::Future<Output = Result<u32, RuntimeError>>,
    ) -> Result<u32, TaskError> {
        let Some(console) = console else {
            return Ok(call.await?);
        };
        let mut call = pin!(call);
        let mut receive = pin!(console.receive());
        let mut master = None;
        let pid = loop {
            tokio::select! {
                m = &mut receive, if master.is_none() => match m {
                    Ok(m) => master = Some(m),
                    // The runtime's own error, if it fails, says more than ours.
                    Err(err) => {
                        call.await?;
                        return Err(err.into());
                    }
                },
                r = &mut call => break r?,
            }
        };
        let master = match master {
            Some(m) => m,
            None => tokio::time::timeout(CONSOLE_GRACE, receive)
                .await
                .map_err(|_| TaskError::ConsoleTimeout)??,
        };
        io.attach_terminal(master)?;
        Ok(pid)
    }

    pub async fn start_init(self: &Arc<Self>) -> Result<u32, TaskError> {
        let init = self.process(&self.cfg.id, "")?;
        let _starting = init.start_gate.lock().await;
        let state = init.state();
        if state.status != Status::Created {
            return Err(wrong_state(&init, &state, "start"));
        }
        self.runtime.start(&self.cfg.id).await?;
        init.transition(Status::Created, Status::Running);
        self.events.publish(TaskStart {
            container_id: self.cfg.id.clone(),
            pid: state.pid,
        });
        Ok(state.pid)
    }

    pub async fn kill(&self, exec_id: &str, signal: u32, all: bool) -> Result<(), TaskError> {
        let process = self.process(&self.cfg.id, exec_id)?;
        let state = process.state();
        if state.exit.is_some() {
            return Err(TaskError::Finished);
        }
        if process.is_init() {
            self.runtime.kill(&self.cfg.id, signal, all).await?;
            return Ok(());
        }
        if state.pid == 0 {
            return Err(wrong_state(&process, &state, "kill"));
        }
        let sig = i32::try_from(signal)
            .ok()
            .and_then(|s| nix::sys::signal::Signal::try_from(s).ok())
            .ok_or(TaskError::BadSignal { signal })?;
        let pid = nix::unistd::Pid::from_raw(state.pid as i32);
        nix::sys::signal::kill(pid, sig).map_err(|source| TaskError::Signal {
            pid: state.pid,
            source,
        })
    }

    pub async fn delete_init(self: &Arc<Self>) -> Result<(u32, ExitInfo), TaskError> {
        let init = self.process(&self.cfg.id, "")?;
        let state = init.state();
        let exit = match state.status {
            Status::Stopped => {
                if let Err(err) = self.runtime.delete(&self.cfg.id, false).await {
                    tracing::warn!(error = %err, "runtime delete failed; forcing");
                    self.runtime.delete(&self.cfg.id, true).await?;
                }
                state.exit
            }
            Status::Created => {
                // Never started: the forced delete kills the waiting init; collect its exit.
                self.runtime.delete(&self.cfg.id, true).await?;
                tokio::time::timeout(DELETE_REAP, init.wait()).await.ok()
            }
            _ => return Err(wrong_state(&init, &state, "delete")),
        };
        let exit = exit.unwrap_or(ExitInfo {
            status: 255,
            at: chrono::Utc::now(),
        });
        let mut inner = self.lock();
        if inner.rootfs_mounted {
            mount::release_in_background(mount::detach_all(&self.cfg.rootfs())?);
            inner.rootfs_mounted = false;
        }
        inner.init = None;
        inner.cgroup = None;
        if let Some(watch) = inner.oom_watch.take() {
            watch.abort();
        }
        for exec in inner.execs.drain() {
            exec.1.close_io();
        }
        drop(inner);
        init.close_io();
        self.events.publish(TaskDelete {
            container_id: self.cfg.id.clone(),
            pid: state.pid,
            exit_status: exit.status,
            exited_at: Some(timestamp(exit.at)),
            id: String::new(),
        });
        Ok((state.pid, exit))
    }

    pub async fn pause(&self) -> Result<(), TaskError> {
        let init = self.process(&self.cfg.id, "")?;
        let state = init.state();
        if state.status != Status::Running {
            return Err(wrong_state(&init, &state, "pause"));
        }
        self.runtime.pause(&self.cfg.id).await?;
        init.transition(Status::Running, Status::Paused);
        self.events.publish(TaskPaused {
            container_id: self.cfg.id.clone(),
        });
        Ok(())
    }

    pub async fn resume(&self) -> Result<(), TaskError> {
        let init = self.process(&self.cfg.id, "")?;
        let state = init.state();
        if state.status != Status::Paused {
            return Err(wrong_state(&init, &state, "resume"));
        }
        self.runtime.resume(&self.cfg.id).await?;
        init.transition(Status::Paused, Status::Running);
        self.events.publish(TaskResumed {
            container_id: self.cfg.id.clone(),
        });
        Ok(())
    }

    pub async fn pids(&self) -> Result<Vec<u32>, TaskError> {
        let init = self.process(&self.cfg.id, "")?;
        let state = init.state();
        if state.exit.is_some() {
            return Ok(Vec::new());
        }
        Ok(self.runtime.ps(&self.cfg.id).await?)
    }

    /// Stats: the container cgroup's metrics, packed as containerd packs them.
    pub fn stats(&self) -> Result<prost_types::Any, TaskError> {
        self.process(&self.cfg.id, "")?;
        let cgroup = self.lock().cgroup.clone().ok_or(TaskError::NoCgroup)?;
        Ok(cgroup.metrics()?)
    }

    /// Update: new OCI LinuxResources (JSON) for the running (or paused) task.
    pub async fn update(&self, resources: &[u8]) -> Result<(), TaskError> {
        let init = self.process(&self.cfg.id, "")?;
        let state = init.state();
        if !matches!(
            state.status,
            Status::Running | Status::Paused | Status::Created
        ) || state.exit.is_some()
        {
            return Err(wrong_state(&init, &state, "update"));
        }
        let file = self.cfg.bundle.join("update-resources.json");
        crate::state_files::write_atomic_nosync(&file, resources)?;
        let result = self.runtime.update(&self.cfg.id, &file).await;
        let _ = std::fs::remove_file(&file);
        Ok(result?)
    }

    /// Shutdown: allowed once the task is deleted (or never created), or with `now`.
    pub fn shutdown(&self, now: bool) -> Result<(), TaskError> {
        let inner = self.lock();
        if let Some(init) = &inner.init {
            if !now {
                let state = init.state();
                return Err(wrong_state(
                    init,
                    &state,
                    "shut down the shim before delete",
                ));
            }
        }
        drop(inner);
        self.shutdown.notify_one();
        Ok(())
    }

    pub fn shutdown_requested(&self) -> Arc<Notify> {
        Arc::clone(&self.shutdown)
    }
}

pub(crate) fn wrong_state(p: &Process, state: &ProcState, action: &'static str) -> TaskError {
    TaskError::WrongState {
        process: if p.is_init() {
            "init".to_owned()
        } else {
            p.exec_id.clone()
        },
        state: status_name(state.status),
        action,
    }
}

pub fn status_name(status: Status) -> &'static str {
    match status {
        Status::Unknown => "unknown",
        Status::Created => "created",
        Status::Running => "running",
        Status::Stopped => "stopped",
        Status::Paused => "paused",
        Status::Pausing => "pausing",
    }
}

pub fn timestamp(at: chrono::DateTime<chrono::Utc>) -> prost_types::Timestamp {
    prost_types::Timestamp {
        seconds: at.timestamp(),
        nanos: at.timestamp_subsec_nanos() as i32,
    }
}

fn to_proto_mount(m: &RootfsMount) -> berth_proto::containerd::types::Mount {
    berth_proto::containerd::types::Mount {
        r#type: m.fstype.clone(),
        source: m.source.clone(),
        target: m.target.clone(),
        options: m.options.clone(),
    }
}
