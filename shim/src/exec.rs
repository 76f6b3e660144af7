//! Exec processes: registered by Exec, started by Start, forgotten by Delete.

use std::sync::Arc;

use berth_proto::containerd::events::{TaskExecAdded, TaskExecStarted};
use berth_proto::containerd::v1::types::Status;

use crate::error::TaskError;
use crate::process::{ExitInfo, Process};
use crate::runtime::{ExecOpts, RuntimeCli};
use crate::stdio::IoSpec;
use crate::task::{wrong_state, Task};

impl<R: RuntimeCli> Task<R> {
    pub fn add_exec(&self, exec_id: &str, io: IoSpec, spec: Vec<u8>) -> Result<(), TaskError> {
        // The exec id names files in the bundle: it must be a plain identifier.
        berth_proto::namespace::validate_identifier(exec_id).map_err(|e| TaskError::BadExecId {
            exec_id: exec_id.to_owned(),
            reason: e.to_string(),
        })?;
        let mut inner = self.lock();
        let Some(init) = &inner.init else {
            return Err(TaskError::NotFound {
                id: self.cfg.id.clone(),
            });
        };
        let state = init.state();
        if state.status != Status::Running {
            return Err(wrong_state(init, &state, "exec"));
        }
        if inner.execs.contains_key(exec_id) {
            return Err(TaskError::ExecExists {
                exec_id: exec_id.to_owned(),
            });
        }
        inner
            .execs
            .insert(exec_id.to_owned(), Process::new(exec_id, io, Some(spec)));
        drop(inner);
        self.events.publish(TaskExecAdded {
            container_id: self.cfg.id.clone(),
            exec_id: exec_id.to_owned(),
        });
        Ok(())
    }

    pub async fn start_exec(self: &Arc<Self>, exec_id: &str) -> Result<u32, TaskError> {
        let process = self.process(&self.cfg.id, exec_id)?;
        let _starting = process.start_gate.lock().await;
        let state = process.state();
        if state.status != Status::Created || state.pid != 0 {
            return Err(wrong_state(&process, &state, "start"));
        }
        let process_file = self.cfg.bundle.join(format!("exec-{exec_id}.json"));
        let pid_file = self.cfg.bundle.join(format!("exec-{exec_id}.pid"));
        let spec = process.spec.as_deref().unwrap_or_default();
        crate::state_files::write_atomic_nosync(&process_file, spec)?;
        let id = self.cfg.id.clone();
        let console_name = format!("exec-{exec_id}");
        let result = self
            .launch(&process, &console_name, |stdio, console| {
                let (process_file, pid_file) = (process_file.clone(), pid_file.clone());
                async move {
                    let opts = ExecOpts {
                        id: &id,
                        process_file: &process_file,
                        pid_file: &pid_file,
                        console_socket: console.as_deref(),
                        stdio,
                    };
                    self.runtime.exec(opts).await
                }
            })
            .await;
        let _ = std::fs::remove_file(&process_file);
        let _ = std::fs::remove_file(&pid_file);
        let pid = result?;
        process.transition(Status::Created, Status::Running);
        self.events.publish(TaskExecStarted {
            container_id: self.cfg.id.clone(),
            exec_id: exec_id.to_owned(),
            pid,
        });
        Ok(pid)
    }

    /// Forgets a finished (or never started) exec.
    pub fn delete_exec(&self, exec_id: &str) -> Result<(u32, ExitInfo), TaskError> {
        let process = self.process(&self.cfg.id, exec_id)?;
        let state = process.state();
        if process.is_alive() {
            return Err(wrong_state(&process, &state, "delete"));
        }
        self.lock().execs.remove(exec_id);
        process.close_io();
        let exit = state.exit.unwrap_or(ExitInfo {
            status: 0,
            at: chrono::Utc::now(),
        });
        Ok((state.pid, exit))
    }
}
