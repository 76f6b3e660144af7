//! `start` (re-execute as a detached daemon and wait until it serves) and `serve` (the
//! daemon itself).
//!
//! `start` never forks inside tokio: it spawns `/proc/self/exe serve ...` in a new session
//! and exits once the daemon reports readiness over an inherited pipe, so the daemon is
//! reparented away from the caller (DESIGN.md invariant 1: daemon restarts never kill
//! containers).

use std::fs::File;
use std::io::{Read, Write};
use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Notify;

use berth_proto::containerd::task::v2::task_server::TaskServer;
use berth_proto::transport::{bind_unix, serve_unix_with_shutdown};
use nix::fcntl::{fcntl, FcntlArg, FdFlag, OFlag};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

use crate::config::{ConfigError, ShimConfig};
use crate::events::Publisher;
use crate::reaper::Reaper;
use crate::runtime::ProcessRuntime;
use crate::service::TaskService;
use crate::state_files::{write_atomic_nosync, StateFileError};
use crate::task::{Task, TaskConfig};

/// How long `start` waits for the daemon to come up.
const READY_TIMEOUT: Duration = Duration::from_secs(30);
/// How long in-flight calls (a Wait nobody will satisfy) may delay the exit after Shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(2);
/// How long queued events may delay the exit after Shutdown.
const EVENTS_FLUSH: Duration = Duration::from_secs(5);
/// epoll events handled per reactor turn.
const IO_EVENTS: usize = 64;
/// How long the task API must be quiet before the heap is trimmed.
const TRIM_AFTER: Duration = Duration::from_secs(1);

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Config(#[from] ConfigError),
    #[error("cannot create the readiness pipe")]
    Pipe(#[source] nix::errno::Errno),
    #[error("cannot start the shim daemon")]
    Spawn(#[source] std::io::Error),
    #[error("cannot read the daemon's readiness")]
    Ready(#[source] std::io::Error),
    #[error("shim daemon failed: {message}")]
    Daemon { message: String },
    #[error("shim daemon exited before it was ready; see {log}")]
    DaemonDied { log: PathBuf },
    #[error("shim daemon not ready after {secs}s; see {log}")]
    Timeout { secs: u64, log: PathBuf },
    #[error("readiness descriptor {fd} is not open")]
    ReadyFd { fd: RawFd },
    #[error("cannot join the shim cgroup")]
    Cgroup(#[source] crate::cgroup::CgroupError),
    #[error("cannot leave the caller's session")]
    Session(#[source] std::io::Error),
    #[error("cannot become a child subreaper")]
    Subreaper(#[source] nix::errno::Errno),
    #[error("cannot build the async runtime")]
    AsyncRuntime(#[source] std::io::Error),
    #[error("cannot start the reaper")]
    Reaper(#[source] std::io::Error),
    #[error("cannot listen on the shim socket")]
    Listen(#[source] berth_proto::ProtoError),
    #[error(transparent)]
    StateFile(#[from] StateFileError),
    #[error("serving the task API failed")]
    Serve(#[source] berth_proto::ProtoError),
}

/// `berth-shim start`: returns the socket path once the daemon serves on it.
pub fn start(mut cfg: ShimConfig) -> Result<PathBuf, DaemonError> {
    cfg.validate()?;
    let (ready_r, ready_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(DaemonError::Pipe)?;
    // Exec our own binary through /proc/self/exe (immune to the file being replaced
    // meanwhile), but show its real path in ps.
    let mut cmd = Command::new("/proc/self/exe");
    if let Ok(exe) = std::fs::read_link("/proc/self/exe") {
        std::os::unix::process::CommandExt::arg0(&mut cmd, exe);
    }
    cmd.arg("serve")
        .args(cfg.to_args())
        .arg("--ready-fd")
        .arg(ready_w.as_raw_fd().to_string())
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .current_dir(&cfg.bundle);
    crate::sys::detach_on_exec(&mut cmd, ready_w.as_raw_fd());
    let mut child = cmd.spawn().map_err(DaemonError::Spawn)?;
    drop(ready_w);
    let answer = read_ready(ready_r).map_err(DaemonError::Ready)?;
    let log = cfg.log_path();
    match answer {
        Some(line) if line == "ok" => Ok(cfg.socket_path()),
        Some(line) if line.is_empty() => {
            let _ = child.wait();
            Err(DaemonError::DaemonDied { log })
        }
        Some(line) => {
            let _ = child.wait();
            Err(DaemonError::Daemon {
                message: line.strip_prefix("error: ").unwrap_or(&line).to_owned(),
            })
        }
        None => {
            let _ = child.kill();
            let _ = child.wait();
            Err(DaemonError::Timeout {
                secs: READY_TIMEOUT.as_secs(),
                log,
            })
        }
    }
}

/// Reads the daemon's one-line answer; `None` on timeout, `Some("")` on silent EOF.
fn read_ready(fd: OwnedFd) -> std::io::Result<Option<String>> {
    let deadline = std::time::Instant::now() + READY_TIMEOUT;
    let mut file = File::from(fd);
    let mut text = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        if left.is_zero() {
            return Ok(None);
        }
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        let mut fds = [PollFd::new(file.as_fd(), PollFlags::POLLIN)];
        match poll(&mut fds, PollTimeout::from(ms)) {
            Ok(0) => continue,
            Ok(_) => {}
            Err(nix::errno::Errno::EINTR) => continue,
            Err(e) => return Err(e.into()),
        }
        let mut buf = [0u8; 512];
        match file.read(&mut buf)? {
            0 => break,
            n => text.extend_from_slice(&buf[..n]),
        }
    }
    Ok(Some(String::from_utf8_lossy(&text).trim().to_owned()))
}

/// First thing the daemon does, before it opens anything: drop every descriptor it
/// inherited except stdio and the readiness pipe.
pub fn close_inherited_fds(ready_fd: RawFd) {
    crate::sys::close_inherited_fds(ready_fd);
}

/// `berth-shim serve`: the daemon. Reports readiness (or its start-up error) on `ready_fd`.
pub fn serve(cfg: ShimConfig, ready_fd: RawFd) -> Result<(), DaemonError> {
    crate::sys::tune_malloc();
    let ready = crate::sys::adopt_fd(ready_fd).ok_or(DaemonError::ReadyFd { fd: ready_fd })?;
    // Nothing we spawn may inherit it: `start` waits for its EOF.
    let _ = fcntl(&ready, FcntlArg::F_SETFD(FdFlag::FD_CLOEXEC));
    let mut ready = Some(File::from(ready));
    let result = crate::sys::leave_session()
        .map_err(DaemonError::Session)
        .and_then(|()| serve_inner(cfg, &mut ready));
    if let (Err(err), Some(pipe)) = (&result, ready) {
        answer(pipe, &format!("error: {}", crate::error_chain(err)));
    }
    result
}

/// Writes the one-line readiness answer and lets the caller go: the pipe is closed and,
/// when it is our stdout (highd spawns `serve --ready-fd 1` directly), stdout and stderr
/// are pointed at /dev/null so the caller sees EOF on both.
fn answer(mut pipe: File, line: &str) {
    let _ = writeln!(pipe, "{line}");
    let fd = std::os::fd::IntoRawFd::into_raw_fd(pipe);
    if fd > libc::STDERR_FILENO {
        drop(crate::sys::adopt_fd(fd));
        return;
    }
    if let Err(e) = crate::sys::detach_stdio() {
        tracing::warn!(error = %e, "cannot point stdout and stderr at /dev/null");
    }
}

fn serve_inner(mut cfg: ShimConfig, ready: &mut Option<File>) -> Result<(), DaemonError> {
    cfg.validate()?;
    // First, so that what the daemon allocates from here on is charged to its own cgroup
    // (v1 memory charges stay where a page was first touched) and the runtime and
    // everything it spawns start there too.
    if let Some(cgroup) = &cfg.cgroup {
        let dirs = crate::cgroup::place_self(cgroup).map_err(DaemonError::Cgroup)?;
        tracing::info!(cgroup, hierarchies = dirs.len(), "joined the shim cgroup");
    }
    // Before anything is spawned, so every orphan of the container is ours to reap.
    nix::sys::prctl::set_child_subreaper(true).map_err(DaemonError::Subreaper)?;
    // One thread: an idle shim must stay small, and a single-threaded reactor also keeps
    // the reaper from running while std's spawn waits for its own child (runtime.rs).
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        // A shim watches a handful of descriptors; tokio's default sizes the epoll event
        // buffer for 1024.
        .max_io_events_per_tick(IO_EVENTS)
        .on_thread_park(crate::idle::release_if_requested)
        .build()
        .map_err(DaemonError::AsyncRuntime)?;
    rt.block_on(async move {
        let reaper = Reaper::start().map_err(DaemonError::Reaper)?;
        let events = Publisher::start(cfg.address.clone(), cfg.namespace.clone());
        let runtime = ProcessRuntime {
            binary: cfg.runtime.clone(),
            root: cfg.runtime_root.clone(),
            systemd_cgroup: cfg.systemd_cgroup,
            log: cfg.bundle.join("log.json"),
            reaper: Arc::clone(&reaper),
        };
        let task_cfg = TaskConfig {
            id: cfg.id.clone(),
            namespace: cfg.namespace.clone(),
            bundle: cfg.bundle.clone(),
        };
        let task = Task::start(task_cfg, runtime, &reaper, events.clone());
        let socket = cfg.socket_path();
        let listener = bind_unix(&socket).map_err(DaemonError::Listen)?;
        let bound = file_id(&socket);
        let pid = std::process::id().to_string();
        write_atomic_nosync(&cfg.bundle.join("shim.pid"), pid.as_bytes())?;
        write_atomic_nosync(
            &cfg.bundle.join("address"),
            socket.as_os_str().as_encoded_bytes(),
        )?;
        if let Some(pipe) = ready.take() {
            answer(pipe, "ok");
        }
        tracing::info!(socket = %socket.display(), pid = std::process::id(), "serving");

        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let requested = task.shutdown_requested();
        tokio::spawn(async move {
            requested.notified().await;
            let _ = stop_tx.send(true);
        });
        let stopped = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
            let _ = rx.wait_for(|stop| *stop).await;
        };
        let activity = Arc::new(Notify::new());
        activity.notify_one();
        tokio::spawn(trim_when_quiet(Arc::clone(&activity)));
        let on_call = move |req: tonic::Request<()>| {
            activity.notify_one();
            Ok(req)
        };
        let router = tonic::transport::Server::builder().add_service(TaskServer::with_interceptor(
            TaskService::new(task),
            on_call,
        ));
        let serve = serve_unix_with_shutdown(router, listener, stopped(stop_rx.clone()));
        let grace = async {
            stopped(stop_rx).await;
            tokio::time::sleep(SHUTDOWN_GRACE).await;
        };
        let result = tokio::select! {
            r = serve => r.map_err(DaemonError::Serve),
            () = grace => Ok(()),
        };
        // highd does not wait for a deleted task's shim to exit: by now the path may be
        // the socket of a new task with the same id. Only ours is removed.
        if bound.is_some() && file_id(&socket) == bound {
            let _ = std::fs::remove_file(&socket);
        }
        if !events.flush(EVENTS_FLUSH).await {
            tracing::warn!("exiting with events highd has not acknowledged");
        }
        tracing::info!("shim exiting");
        result
    })
}

/// The device and inode of `path`, to recognise our own socket file later.
fn file_id(path: &std::path::Path) -> Option<(u64, u64)> {
    use std::os::unix::fs::MetadataExt;
    std::fs::symlink_metadata(path)
        .ok()
        .map(|m| (m.dev(), m.ino()))
}

/// Gives the heap's free pages back once the task API has been quiet for [`TRIM_AFTER`]:
/// an idle shim should not keep the high-water mark of its last burst of calls. Waits on
/// `activity` (one notification per call) and never wakes up while nothing happens.
async fn trim_when_quiet(activity: Arc<Notify>) {
    loop {
        activity.notified().await;
        while tokio::time::timeout(TRIM_AFTER, activity.notified())
            .await
            .is_ok()
        {}
        let (in_use, mmapped, free) = crate::sys::trim_heap();
        let text = crate::idle::request_text_release();
        tracing::debug!(
            in_use,
            mmapped,
            free,
            text,
            "idle: heap trimmed, text release requested"
        );
    }
}
