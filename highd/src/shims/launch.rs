//! Starting a shim daemon and cleaning up after a shim we cannot use.
//!
//! We spawn `berth-shim serve ... --ready-fd 1` ourselves (one exec; `berth-shim start`
//! would add a second): the daemon leaves our session at once, answers `ok` (or `error:
//! MESSAGE`) on its stdout when it serves, and then points stdout and stderr at
//! /dev/null, so we read both pipes to EOF. The shim is our child while we run (a
//! background task reaps it when it exits); when we exit or are killed it is reparented
//! like any daemon, and the container never notices (DESIGN.md invariant 1).

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;

use super::ShimError;

/// How long the shim may take to serve before we give up and kill it.
const START_TIMEOUT: Duration = Duration::from_secs(30);

/// Everything `berth-shim serve` needs (docs/ARCHITECTURE.md, "Command lines").
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

/// Starts the shim daemon and returns its socket path once it serves.
pub async fn start(l: &ShimLaunch<'_>) -> Result<PathBuf, ShimError> {
    let mut cmd = Command::new(l.shim);
    cmd.arg("serve")
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
    cmd.arg("--ready-fd")
        .arg("1")
        .current_dir(l.bundle)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        // The shim outlives this call (and us): never kill it when the handle goes.
        .kill_on_drop(false);
    let mut child = cmd.spawn().map_err(|source| ShimError::Spawn {
        shim: l.shim.to_path_buf(),
        source,
    })?;
    let out = Collector::spawn(child.stdout.take());
    let err = Collector::spawn(child.stderr.take());
    let answered = tokio::time::timeout(START_TIMEOUT, async {
        (out.finish().await, err.finish().await)
    })
    .await;
    let Ok((out, err)) = answered else {
        let _ = child.kill().await;
        return Err(ShimError::StartTimeout {
            shim: l.shim.to_path_buf(),
            seconds: START_TIMEOUT.as_secs(),
        });
    };
    let answer = String::from_utf8_lossy(&out).trim().to_string();
    if answer == "ok" {
        // Reap it whenever it exits; until then it is a live daemon, not our business.
        tokio::spawn(async move {
            let _ = child.wait().await;
        });
        return Ok(l.bundle.join("shim.sock"));
    }
    // No answer, or an error: the daemon exits (or has); collect it.
    let status = child.wait().await.ok();
    let message = match answer.strip_prefix("error: ") {
        Some(m) => m.to_string(),
        None => {
            let stderr = String::from_utf8_lossy(&err).trim().to_string();
            match (stderr.is_empty(), answer.is_empty()) {
                (false, _) => stderr,
                (true, false) => format!("unexpected answer {answer:?}"),
                (true, true) => {
                    "exited before it was ready, without a message; see shim.log in the task dir"
                        .to_string()
                }
            }
        }
    };
    Err(ShimError::StartFailed {
        status: status.map_or_else(|| "unknown status".to_string(), |s| s.to_string()),
        message,
    })
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

    /// What was read by EOF. Cancel-safe: dropping it aborts the reader.
    async fn finish(self) -> Vec<u8> {
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let mut task = AbortOnDrop(self.task);
        let _ = (&mut task.0).await;
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
