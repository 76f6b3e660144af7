//! The one reaper of the shim.
//!
//! As a child subreaper (prctl(2) PR_SET_CHILD_SUBREAPER) the shim inherits the container's
//! init and exec processes once the runtime exits, so every exit in the shim goes through
//! a single `waitpid(-1, WNOHANG)` loop. Callers subscribe *before* they spawn anything:
//! the exit of a short-lived process is then queued in their subscription even when it is
//! reaped before `spawn` returns, and `std::process::Child::wait` is never used.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use nix::errno::Errno;
use nix::sys::wait::{waitpid, WaitPidFlag, WaitStatus};
use nix::unistd::Pid;
use tokio::signal::unix::{signal, SignalKind};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver, UnboundedSender};

/// One reaped process.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Exit {
    pub pid: i32,
    /// The exit code, or 128 + signal number for a process killed by a signal.
    pub status: i32,
    pub at: SystemTime,
}

/// Fans every reaped exit out to all current subscribers.
#[derive(Debug, Default)]
pub struct Reaper {
    subscribers: Mutex<HashMap<u64, UnboundedSender<Exit>>>,
    next_id: AtomicU64,
}

impl Reaper {
    /// Installs the SIGCHLD handler and starts reaping. Must run inside a tokio runtime.
    pub fn start() -> std::io::Result<Arc<Reaper>> {
        let mut sigchld = signal(SignalKind::child())?;
        let reaper = Arc::new(Reaper::default());
        let weak = Arc::downgrade(&reaper);
        tokio::spawn(async move {
            loop {
                let Some(reaper) = weak.upgrade() else { return };
                reaper.reap_all();
                drop(reaper);
                if sigchld.recv().await.is_none() {
                    return;
                }
            }
        });
        Ok(reaper)
    }

    /// Returns a subscription that receives every exit reaped from now on.
    pub fn subscribe(self: &Arc<Self>) -> Subscription {
        let (tx, rx) = unbounded_channel();
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        self.lock().insert(id, tx);
        Subscription {
            id,
            rx,
            reaper: Arc::clone(self),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, UnboundedSender<Exit>>> {
        // A panic while holding this lock cannot leave the map inconsistent.
        self.subscribers.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Signals coalesce, so one SIGCHLD may stand for many exits: reap until none is left.
    fn reap_all(&self) {
        loop {
            let exit = match waitpid(Pid::from_raw(-1), Some(WaitPidFlag::WNOHANG)) {
                Ok(WaitStatus::Exited(pid, code)) => Exit {
                    pid: pid.as_raw(),
                    status: code,
                    at: SystemTime::now(),
                },
                Ok(WaitStatus::Signaled(pid, sig, _)) => Exit {
                    pid: pid.as_raw(),
                    status: 128 + sig as i32,
                    at: SystemTime::now(),
                },
                Ok(WaitStatus::StillAlive) | Err(Errno::ECHILD) => return,
                Ok(_) => continue,
                Err(Errno::EINTR) => continue,
                Err(err) => {
                    tracing::error!(%err, "waitpid failed");
                    return;
                }
            };
            tracing::debug!(pid = exit.pid, status = exit.status, "reaped");
            self.lock().retain(|_, tx| tx.send(exit).is_ok());
        }
    }
}

/// A queue of exits; unsubscribes when dropped.
#[derive(Debug)]
pub struct Subscription {
    id: u64,
    rx: UnboundedReceiver<Exit>,
    reaper: Arc<Reaper>,
}

impl Subscription {
    /// The next reaped exit.
    pub async fn recv(&mut self) -> Exit {
        match self.rx.recv().await {
            Some(exit) => exit,
            // The sender lives in the reaper's map until this subscription drops it.
            None => std::future::pending().await,
        }
    }

    /// Waits for the exit of `pid`, skipping (and dropping) every other exit.
    pub async fn wait_pid(&mut self, pid: i32) -> Exit {
        loop {
            let exit = self.recv().await;
            if exit.pid == pid {
                return exit;
            }
        }
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.reaper.lock().remove(&self.id);
    }
}

/// Every reaper reaps every child of the process: unit tests that start one (or spawn
/// children) hold this so parallel tests do not reap each other's children.
#[cfg(test)]
pub(crate) static TEST_LOCK: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;

    // The reaper, not Child::wait, collects these children: that is what is tested.
    #[allow(clippy::zombie_processes)]
    #[tokio::test(flavor = "current_thread")]
    async fn exit_codes_and_signals_reach_every_subscriber() {
        let _serial = TEST_LOCK.lock().await;
        let reaper = Reaper::start().expect("reaper");
        let mut a = reaper.subscribe();
        let mut b = reaper.subscribe();
        let quick = Command::new("/bin/sh")
            .args(["-c", "exit 7"])
            .spawn()
            .expect("sh");
        let killed = Command::new("/bin/sh")
            .args(["-c", "kill -9 $$"])
            .spawn()
            .expect("sh");
        let (qp, kp) = (quick.id() as i32, killed.id() as i32);
        let deadline = std::time::Duration::from_secs(10);
        let e = tokio::time::timeout(deadline, a.wait_pid(qp))
            .await
            .expect("exit");
        assert_eq!(e.status, 7);
        let mut seen = HashMap::new();
        while seen.len() < 2 {
            let e = tokio::time::timeout(deadline, b.recv())
                .await
                .expect("exit");
            seen.insert(e.pid, e.status);
        }
        assert_eq!(seen[&qp], 7);
        assert_eq!(seen[&kp], 128 + 9);
    }
}
