//! Start-up: rebuild the task table from `<state>/<ns>/<id>/` (invariant 1).
//!
//! A task whose shim answers on the socket named in `address`, or whose shim is merely
//! slow (something listens, or its process still runs), is live and keeps running
//! untouched; only one whose socket refuses and whose process is gone is stopped, with
//! exit.json's status or 255.
//! Nothing here kills or deletes anything: a stopped task stays until a client deletes it.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use berth_proto::containerd::task::v2 as shim;

use super::create::Cleanup;
use super::{Bundle, Task, TaskManager};
use crate::config::DEFAULT_RUNTIMES;
use crate::shims::{self, ShimClient};

/// A live shim answers State at once; one that does not within this time is hung (or
/// stopped): it is kept, with its status unknown until it answers.
const STATE_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct RecoveryReport {
    pub live: usize,
    pub stopped: usize,
}

fn subdirs(dir: &Path) -> Vec<(String, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .flatten()
        .filter(|e| e.file_type().is_ok_and(|t| t.is_dir()))
        .filter_map(|e| Some((e.file_name().into_string().ok()?, e.path())))
        .filter(|(name, _)| berth_proto::namespace::validate_identifier(name).is_ok())
        .collect();
    out.sort();
    out
}

impl TaskManager {
    pub async fn recover(&self) -> RecoveryReport {
        let mut found = Vec::new();
        let mut abandoned = Vec::new();
        for (ns, ns_dir) in subdirs(&self.cfg.state) {
            if ns == "runtime" {
                continue;
            }
            for (id, dir) in subdirs(&ns_dir) {
                if Bundle::at(&self.cfg.state, &ns, &id).is_unfinished() {
                    abandoned.push((ns.clone(), id));
                    continue;
                }
                if !dir.join("config.json").is_file() {
                    tracing::warn!(dir = %dir.display(), "ignoring task dir without config.json");
                    continue;
                }
                found.push((ns.clone(), id));
            }
        }
        // A Create that highd died in was never acknowledged: undo it, so the client's
        // retry finds the container without a task.
        futures::future::join_all(abandoned.iter().map(|(ns, id)| self.undo_create(ns, id))).await;
        // Concurrently: a few hung shims must not add their timeouts up at start-up.
        let recovered =
            futures::future::join_all(found.iter().map(|(ns, id)| self.recover_one(ns, id))).await;
        let mut report = RecoveryReport::default();
        for task in recovered {
            if task.shim().is_some() {
                report.live += 1;
            } else {
                report.stopped += 1;
            }
            self.insert(task);
        }
        tracing::info!(
            live = report.live,
            stopped = report.stopped,
            "recovered tasks"
        );
        report
    }

    async fn undo_create(&self, ns: &str, id: &str) {
        let bundle = Bundle::at(&self.cfg.state, ns, id);
        let (runtime, runtime_root) = self.runtime_of(ns, id);
        let mut shim = None;
        if let Some(address) = bundle.address() {
            shim = ShimClient::connect(&address).await.ok();
        }
        tracing::info!(ns, id, "undoing a task create interrupted by a crash");
        Cleanup {
            bundle: &bundle,
            shim,
            id,
            runtime: &runtime,
            runtime_root: &runtime_root,
        }
        .run()
        .await;
    }

    /// The runtime binary and root a task of container `ns/id` runs with.
    fn runtime_of(&self, ns: &str, id: &str) -> (PathBuf, PathBuf) {
        // What Create recorded, with the task's runtime options applied.
        if let Some(rt) = Bundle::at(&self.cfg.state, ns, id).runtime() {
            return (rt.runtime, rt.runtime_root);
        }
        // The container record names the runtime; a record lost to a damaged DB still
        // leaves a task we must be able to clean up, so fall back to the default.
        let runtime_name = match self.containers.get(ns, id) {
            Ok(Some(rec)) => rec.runtime_name,
            _ => DEFAULT_RUNTIMES[0].to_string(),
        };
        let rt = self
            .cfg
            .runtimes
            .get(&runtime_name)
            .or_else(|| self.cfg.runtimes.get(DEFAULT_RUNTIMES[0]))
            .cloned();
        match &rt {
            Some(rt) => (rt.runtime.clone(), self.cfg.runtime_root(rt, ns)),
            None => (
                PathBuf::from("berth-lowrt"),
                self.cfg.state.join("runtime").join(ns),
            ),
        }
    }

    async fn recover_one(&self, ns: &str, id: &str) -> Arc<Task> {
        let bundle = Bundle::at(&self.cfg.state, ns, id);
        let (runtime, runtime_root) = self.runtime_of(ns, id);
        let mut pid = bundle.init_pid().unwrap_or(0);
        let mut client = None;
        let address = bundle.address();
        if let Some(address) = &address {
            match ShimClient::connect(address).await {
                Ok(c) => {
                    let req = shim::StateRequest {
                        id: id.to_string(),
                        exec_id: String::new(),
                    };
                    match tokio::time::timeout(STATE_TIMEOUT, c.rpc().state(req)).await {
                        Ok(Ok(state)) => pid = state.into_inner().pid,
                        // It answered, so it is alive; keep it and let calls report.
                        Ok(Err(status)) => {
                            tracing::warn!(ns, id, error = %status.message(), "shim answered State with an error")
                        }
                        // Slow is not dead (invariant 1): keep the shim, calls report.
                        Err(_) => {
                            tracing::warn!(ns, id, "shim did not answer State in time; keeping it")
                        }
                    }
                    client = Some(c);
                }
                Err(e) => tracing::info!(ns, id, error = %e, "shim not reachable"),
            }
        }
        if client.is_none() {
            if let Some(address) = &address {
                if !shims::shim_dead(Some(address), &bundle.dir).await {
                    // Something still listens or the shim process still runs: it is
                    // hung or stopped, not gone. Keep it with a client that connects
                    // once it answers, and never report it dead.
                    tracing::warn!(ns, id, "shim alive but not answering; keeping it");
                    client = Some(ShimClient::lazy(address));
                }
            }
        }
        let live = client.is_some();
        let task = Arc::new(Task {
            namespace: ns.to_string(),
            id: id.to_string(),
            bundle,
            pid,
            runtime,
            runtime_root,
            shim: Mutex::new(client),
            exit: Mutex::new(None),
        });
        if !live {
            let info = task.mark_shim_gone();
            tracing::info!(
                ns,
                id,
                status = info.status,
                "task stopped while highd was down"
            );
        }
        task
    }
}
