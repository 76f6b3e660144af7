//! Running `berth-shim start` and cleaning up after a shim we cannot use.
//!
//! The start process daemonizes the real shim and exits; we wait for it (so it never
//! lingers as our zombie) and read the socket path it printed. The daemon must not keep
//! our stdout pipe open, but if it does we stop reading shortly after the start process
//! has exited instead of hanging on EOF.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::ShimError;

/// How long `berth-shim start` may take before we give up and kill it.
const START_TIMEOUT: Duration = Duration::from_secs(30);
/// How long to keep reading output after the start process exited.
const DRAIN_GRACE: Duration = Duration::from_millis(500);

/// Everything `berth-shim start` needs (docs/ARCHITECTURE.md, "Command lines").
#[derive(Debug, Clone)]
pub struct ShimLaunch<'a> {
    pub shim: &'a Path,
    pub runtime: &'a Path,
    pub runtime_root: &'a Path,
    pub namespace: &'a str,
    pub id: &'a str,
    pub bundle: &'a Path,
    pub highd_address: &'a Path,
    pub debug: bool,
}

/// Starts the shim daemon and returns the socket path it printed.
pub async fn start(l: &ShimLaunch<'_>) -> Result<PathBuf, ShimError> {
    let mut cmd = Command::new(l.shim);
    cmd.arg("start")
        .arg("--namespace")
        .arg(l.namespace)
        .arg("--id")
        .arg(l.id)
        .arg("--bundle")
        .arg(l.bundle)
        .arg("--address")
        .arg(l.highd_address)
        .arg("--runtime")
        .arg(l.runtime)
        .arg("--runtime-root")
        .arg(l.runtime_root);
    if l.debug {
        cmd.arg("--debug");
    }
    cmd.current_dir(l.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    let mut child = cmd.spawn().map_err(|source| ShimError::Spawn {
        shim: l.shim.to_path_buf(),
        source,
    })?;
    let out = Collector::spawn(child.stdout.take());
    let err = Collector::spawn(child.stderr.take());

    let status = match tokio::time::timeout(START_TIMEOUT, child.wait()).await {
        Ok(Ok(status)) => status,
        Ok(Err(source)) => {
            return Err(ShimError::Spawn {
                shim: l.shim.to_path_buf(),
                source,
            })
        }
        Err(_) => {
            // kill_on_drop reaps nothing by itself; kill and wait so no zombie remains.
            let _ = child.kill().await;
            return Err(ShimError::StartTimeout {
                shim: l.shim.to_path_buf(),
                seconds: START_TIMEOUT.as_secs(),
            });
        }
    };
    let out = out.finish().await;
    let err = err.finish().await;
    if !status.success() {
        let message = String::from_utf8_lossy(&err).trim().to_string();
        return Err(ShimError::StartFailed {
            status: status.to_string(),
            message: if message.is_empty() {
                "no error message on stderr".to_string()
            } else {
                message
            },
        });
    }
    let printed = String::from_utf8_lossy(&out).trim().to_string();
    let address = printed
        .strip_prefix("unix://")
        .unwrap_or(&printed)
        .to_string();
    if address.is_empty() || !address.starts_with('/') {
        return Err(ShimError::BadAddress { printed });
    }
    Ok(PathBuf::from(address))
}

/// Collects one output pipe in the background.
struct Collector {
    buf: Arc<Mutex<Vec<u8>>>,
    task: tokio::task::JoinHandle<()>,
}

impl Collector {
    fn spawn<R: AsyncRead + Unpin + Send + 'static>(reader: Option<R>) -> Collector {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let sink = buf.clone();
        let task = tokio::spawn(async move {
            let Some(mut reader) = reader else { return };
            let mut chunk = [0u8; 4096];
            while let Ok(n @ 1..) = reader.read(&mut chunk).await {
                sink.lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend_from_slice(&chunk[..n]);
            }
        });
        Collector { buf, task }
    }

    /// What was read by EOF, or by `DRAIN_GRACE` if a daemon kept the pipe open.
    async fn finish(self) -> Vec<u8> {
        let mut task = self.task;
        if tokio::time::timeout(DRAIN_GRACE, &mut task).await.is_err() {
            task.abort();
            tracing::warn!("shim daemon kept the start command's output pipe open");
        }
        std::mem::take(&mut *self.buf.lock().unwrap_or_else(|p| p.into_inner()))
    }
}

/// Kills a shim we gave up on, by the pid it recorded in the bundle. Best effort: the
/// shim may already be gone.
pub fn kill_from_pidfile(bundle: &Path) {
    let Ok(text) = std::fs::read_to_string(bundle.join("shim.pid")) else {
        return;
    };
    let Ok(pid) = text.trim().parse::<i32>() else {
        return;
    };
    if pid <= 1 {
        return;
    }
    let pid = nix::unistd::Pid::from_raw(pid);
    if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
        tracing::debug!(%pid, error = %e, "shim already gone");
    }
}
