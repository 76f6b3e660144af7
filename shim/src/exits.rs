//! Turning reaped exits into recorded process exits.
//!
//! Order matters (docs/ARCHITECTURE.md): drain the process's output to EOF, then write
//! `exit.json` (init only), then let Wait return, then publish TaskExit.

use std::sync::Arc;
use std::time::Duration;

use berth_proto::containerd::events::TaskExit;

use crate::process::{ExitInfo, Process};
use crate::reaper::{Exit, Subscription};
use crate::runtime::RuntimeCli;
use crate::state_files::ExitRecord;
use crate::task::{timestamp, Task};

/// An output pipe that stays open but silent this long after the exit is held by a
/// grandchild; the exit is recorded without waiting for it. Output still flowing is
/// waited for without limit, so the log is complete before the engine may delete it.
const DRAIN_IDLE: Duration = Duration::from_secs(2);

impl<R: RuntimeCli> Task<R> {
    pub(crate) async fn monitor(self: Arc<Self>, mut exits: Subscription) {
        loop {
            let exit = exits.recv().await;
            let mut inner = self.lock();
            let pid = exit.pid as u32;
            let owner = inner
                .init
                .iter()
                .chain(inner.execs.values())
                .find(|p| p.pid() == pid && p.is_alive())
                .cloned();
            match owner {
                Some(process) => {
                    drop(inner);
                    tokio::spawn(Arc::clone(&self).handle_exit(process, exit));
                }
                None if inner.pending_launches > 0 => {
                    inner.unmatched.insert(exit.pid, exit);
                }
                // The runtime itself, or an orphan reparented to us: nothing to record.
                None => {}
            }
        }
    }

    pub(crate) async fn handle_exit(self: Arc<Self>, process: Arc<Process>, exit: Exit) {
        let pid = process.pid();
        tracing::info!(pid, exec_id = %process.exec_id, status = exit.status, "process exited");
        if let Some(io) = process.io() {
            if !io.wait_output(DRAIN_IDLE).await {
                tracing::warn!(
                    pid,
                    "output still open but idle after exit; not waiting for it"
                );
            }
        }
        // An exit during Start waits for the start event to go out first.
        drop(process.start_gate.lock().await);
        let info = ExitInfo {
            status: exit.status as u32,
            at: exit.at.into(),
        };
        if process.is_init() {
            let record = ExitRecord::new(pid, info.status, info.at);
            if let Err(err) = record.write(&self.cfg.bundle.join("exit.json")) {
                tracing::error!(error = %err, "cannot record the exit");
            }
        }
        process.set_exited(info);
        self.events.publish(TaskExit {
            container_id: self.cfg.id.clone(),
            id: if process.is_init() {
                self.cfg.id.clone()
            } else {
                process.exec_id.clone()
            },
            pid,
            exit_status: info.status,
            exited_at: Some(timestamp(info.at)),
        });
    }
}
