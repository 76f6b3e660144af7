//! One process of the task (init or an exec) and its observable state.

use std::sync::{Arc, Mutex};

use berth_proto::containerd::v1::types::Status;
use chrono::{DateTime, Utc};
use tokio::sync::watch;

use crate::stdio::{IoSpec, ProcessIo};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ExitInfo {
    pub status: u32,
    pub at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProcState {
    pub pid: u32,
    pub status: Status,
    pub exit: Option<ExitInfo>,
}

#[derive(Debug)]
pub struct Process {
    /// Empty for the init process.
    pub exec_id: String,
    pub io_spec: IoSpec,
    /// An exec's OCI process spec (JSON), written out at start.
    pub spec: Option<Vec<u8>>,
    state: watch::Sender<ProcState>,
    io: Mutex<Option<Arc<ProcessIo>>>,
    /// Held while the process is being started: its exit (which may come first) is
    /// recorded and published only after TaskStart/TaskExecStarted, as containerd does.
    pub start_gate: tokio::sync::Mutex<()>,
}

impl Process {
    pub fn new(exec_id: &str, io_spec: IoSpec, spec: Option<Vec<u8>>) -> Arc<Process> {
        let (state, _) = watch::channel(ProcState {
            pid: 0,
            status: Status::Created,
            exit: None,
        });
        Arc::new(Process {
            exec_id: exec_id.to_owned(),
            io_spec,
            spec,
            state,
            io: Mutex::new(None),
            start_gate: tokio::sync::Mutex::new(()),
        })
    }

    pub fn is_init(&self) -> bool {
        self.exec_id.is_empty()
    }

    pub fn state(&self) -> ProcState {
        self.state.borrow().clone()
    }

    pub fn pid(&self) -> u32 {
        self.state.borrow().pid
    }

    /// The process exists (has a pid) and has not been reaped yet.
    pub fn is_alive(&self) -> bool {
        let s = self.state.borrow();
        s.pid != 0 && s.exit.is_none()
    }

    pub fn set_pid(&self, pid: u32, io: Arc<ProcessIo>) {
        *self.io.lock().unwrap_or_else(|e| e.into_inner()) = Some(io);
        self.state.send_modify(|s| s.pid = pid);
    }

    pub fn io(&self) -> Option<Arc<ProcessIo>> {
        self.io.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Moves to `to` only from `from`: an exit recorded meanwhile always wins.
    pub fn transition(&self, from: Status, to: Status) -> bool {
        self.state.send_if_modified(|s| {
            let ok = s.status == from && s.exit.is_none();
            if ok {
                s.status = to;
            }
            ok
        })
    }

    pub fn set_exited(&self, exit: ExitInfo) {
        self.state.send_modify(|s| {
            s.status = Status::Stopped;
            s.exit = Some(exit);
        });
    }

    /// Waits for the exit to be recorded (output drained, exit.json written).
    pub async fn wait(&self) -> ExitInfo {
        let mut rx = self.state.subscribe();
        loop {
            if let Some(exit) = rx.borrow_and_update().exit {
                return exit;
            }
            if rx.changed().await.is_err() {
                // The sender lives as long as `self`; unreachable while borrowed.
                return std::future::pending().await;
            }
        }
    }

    pub fn close_io(&self) {
        if let Some(io) = self.io() {
            io.shutdown();
        }
    }
}
