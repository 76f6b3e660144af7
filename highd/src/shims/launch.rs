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
    /// The runtime's global `--systemd-cgroup`.
    pub systemd_cgroup: bool,
    /// The cgroup the shim moves itself into (containerd's `ShimCgroup`).
    pub cgroup: Option<&'a str>,
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
    if l.systemd_cgroup {
        cmd.arg("--systemd-cgroup");
    }
    if let Some(cgroup) = l.cgroup {
        cmd.arg("--cgroup").arg(cgroup);
    }
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

/// The pid recorded in `<bundle>/shim.pid`, if any.
pub fn pid_from_file(bundle: &Path) -> Option<i32> {
    let pid = std::fs::read_to_string(bundle.join("shim.pid"))
        .ok()?
        .trim()
        .parse::<i32>()
        .ok()?;
    (pid > 1).then_some(pid)
}

/// True if `pid` is the `berth-shim serve` daemon of `bundle`. A pid file outlives its
/// process and the pid may since belong to anything else, so the pid alone never
/// identifies our shim. A zombie has an empty cmdline and does not match.
pub fn is_shim_of(pid: i32, bundle: &Path) -> bool {
    let Ok(cmdline) = std::fs::read(format!("/proc/{pid}/cmdline")) else {
        return false;
    };
    let args: Vec<&[u8]> = cmdline.split(|b| *b == 0).collect();
    let bundle = bundle.as_os_str().as_encoded_bytes();
    args.iter().any(|a| *a == b"serve")
        && args
            .windows(2)
            .any(|w| w[0] == b"--bundle" && w[1] == bundle)
}

/// The pid recorded for `bundle` if it still is that bundle's shim.
///
/// A pidfd would close the window between this check and a signal completely, but this
/// crate forbids unsafe code and neither std (stable) nor nix offers pidfd_open; the
/// window left is the few microseconds between reading /proc and kill(2), and the pid
/// would have to die and be reused by the kernel within them.
fn verified_shim(bundle: &Path) -> Option<nix::unistd::Pid> {
    let pid = pid_from_file(bundle)?;
    is_shim_of(pid, bundle).then(|| nix::unistd::Pid::from_raw(pid))
}

/// True if the shim of `bundle` still runs (its recorded pid is alive and is that shim).
pub fn shim_running(bundle: &Path) -> bool {
    verified_shim(bundle).is_some()
}

/// Kills a shim we gave up on, by the pid it recorded in the bundle, but only if that
/// pid still is this bundle's shim. Best effort: the shim may already be gone.
pub fn kill_from_pidfile(bundle: &Path) {
    match verified_shim(bundle) {
        Some(pid) => {
            if let Err(e) = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGKILL) {
                tracing::debug!(%pid, error = %e, "shim already gone");
            }
        }
        None => {
            tracing::debug!(bundle = %bundle.display(), "no live shim of this bundle to kill")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wait_exit(child: &mut std::process::Child) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if let Some(status) = child.try_wait().unwrap() {
                return Some(status);
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        None
    }

    #[test]
    fn stale_pidfile_of_an_unrelated_process_is_not_killed() {
        let dir = tempfile::tempdir().unwrap();
        let mut sleep = std::process::Command::new("sleep")
            .arg("1000")
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join("shim.pid"), sleep.id().to_string()).unwrap();
        assert!(!shim_running(dir.path()));
        kill_from_pidfile(dir.path());
        assert!(
            sleep.try_wait().unwrap().is_none(),
            "unrelated process killed"
        );
        sleep.kill().unwrap();
        sleep.wait().unwrap();
    }

    #[test]
    fn the_bundles_own_shim_is_recognized_and_killed() {
        let dir = tempfile::tempdir().unwrap();
        // A stand-in whose command line looks like `berth-shim serve --bundle <dir>`:
        // a shell blocked in its builtin `read`, so no child outlives the kill.
        let mut fake = std::process::Command::new("sh")
            .arg("-c")
            .arg("read x")
            .arg("serve")
            .arg("--bundle")
            .arg(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        std::fs::write(dir.path().join("shim.pid"), fake.id().to_string()).unwrap();
        // The child's cmdline reads empty until its exec has fully replaced it.
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while !shim_running(dir.path()) {
            assert!(
                std::time::Instant::now() < deadline,
                "our shim not recognized: {:?}",
                std::fs::read(format!("/proc/{}/cmdline", fake.id()))
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        // Another bundle's pid file pointing here must not match.
        let other = tempfile::tempdir().unwrap();
        std::fs::write(other.path().join("shim.pid"), fake.id().to_string()).unwrap();
        assert!(!shim_running(other.path()));
        kill_from_pidfile(dir.path());
        assert!(wait_exit(&mut fake).is_some(), "our shim was not killed");
    }
}
