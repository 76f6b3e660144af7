//! `docker update` (`POST /containers/{id}/update`): new cgroup limits and restart policy.
//! A running (or paused) container gets the limits at once through highd's Tasks.Update
//! (shim → runtime `update`); every container gets them in its highd spec, so the next
//! task starts with them, and in its record, so inspect shows them.

use serde_json::{Map, Value};

use super::{Daemon, DaemonError, DaemonResult, RestartPolicy};
use crate::backend::Backend;
use crate::resources::{HostCpus, ResourceError, Resources, UpdateConflict};

/// Why an update was refused or failed after the request was found valid.
#[derive(Debug, thiserror::Error)]
pub enum UpdateError {
    /// dockerd's `verifyContainerSettings` refusal: 400, unwrapped.
    #[error(transparent)]
    Invalid(#[from] ResourceError),
    /// The update conflicts with the container's settings: 409.
    #[error("Cannot update container {id}: {source}")]
    Conflict { id: String, source: UpdateConflict },
    #[error(
        "Cannot update container {id}: container is marked for removal and cannot be \"update\""
    )]
    Removing { id: String },
    /// highd (the shim, the runtime) refused the new limits: 500 with its words.
    #[error("Cannot update container {id}: {message}")]
    Failed { id: String, message: String },
}

/// Body of `POST /containers/{id}/update` (dockerd's `container.UpdateConfig`): the
/// resource fields plus `RestartPolicy`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct UpdateRequest {
    pub resources: Resources,
    pub restart_policy: RestartPolicy,
}

impl UpdateRequest {
    pub fn from_map(map: &Map<String, Value>) -> Result<Self, serde_json::Error> {
        let restart_policy = match map.get("RestartPolicy") {
            None | Some(Value::Null) => RestartPolicy::default(),
            Some(v) => serde_json::from_value(v.clone())?,
        };
        Ok(Self {
            resources: Resources::from_map(map),
            restart_policy,
        })
    }
}

/// The engine's `--cpu-rt-period`/`--cpu-rt-runtime`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RtBudget {
    pub period: Option<i64>,
    pub runtime: Option<i64>,
}

/// Where the cgroup v1 cpu controller is mounted.
const CPU_CGROUP_ROOT: &str = "/sys/fs/cgroup/cpu";

/// dockerd's warning when it drops a kernel memory limit.
pub const KERNEL_MEMORY_WARNING: &str = "Your kernel does not support kernel memory limit capabilities or the cgroup is not mounted. Limitation discarded.";

/// `KernelMemory` of a create or update body (`--kernel-memory`): never applied, as no
/// host Berth runs on enforces it (cgroup v2 has no such limit; on v1, Linux 6.1 made
/// `memory.kmem.limit_in_bytes` a no-op). dockerd 28 zeroes the field silently for API
/// 1.42 and newer; older clients (`legacy`) get its "discarded" warning instead.
pub fn discard_kernel_memory(fields: &mut Map<String, Value>, legacy: bool) -> Vec<String> {
    // Removed rather than zeroed: dockerd 28 omits the deprecated field when it is 0.
    let Some(v) = fields.remove("KernelMemory") else {
        return Vec::new();
    };
    if v.as_i64().is_some_and(|n| n > 0) && legacy {
        tracing::warn!("{KERNEL_MEMORY_WARNING}");
        vec![KERNEL_MEMORY_WARNING.to_string()]
    } else {
        Vec::new()
    }
}

/// Puts `resources` into a spec's `linux.resources`, keeping what else is there
/// (the device rules).
fn set_spec_resources(spec: &mut Value, resources: Map<String, Value>) {
    let Some(linux) = spec.get_mut("linux").and_then(Value::as_object_mut) else {
        return;
    };
    let slot = linux
        .entry("resources")
        .or_insert_with(|| Value::Object(Map::new()));
    if let Some(obj) = slot.as_object_mut() {
        for key in ["memory", "cpu", "pids", "blockIO"] {
            obj.remove(key);
        }
        obj.extend(resources);
    }
}

impl<B: Backend> Daemon<B> {
    /// dockerd's `initCPURtController`: a new cgroup has no real-time budget, so the
    /// configured one is written into every level of the cgroup parent, top down (a
    /// child can have no more than its parent), before a container that asks for
    /// real-time CPU starts. Nothing is touched when neither is configured or the
    /// container has no real-time settings (the common start stays free of it).
    pub(super) fn init_rt_budget(&self, rec: &crate::record::ContainerRecord) -> DaemonResult<()> {
        let RtBudget { period, runtime } = self.config.rt_budget;
        let wants = Resources::of(&rec.host_config);
        if (period.is_none() && runtime.is_none())
            || (wants.cpu_rt_period == 0 && wants.cpu_rt_runtime == 0)
        {
            return Ok(());
        }
        let mut dir = std::path::PathBuf::from(CPU_CGROUP_ROOT);
        for part in self
            .config
            .cgroup_parent
            .split('/')
            .filter(|p| !p.is_empty())
        {
            dir.push(part);
            std::fs::create_dir_all(&dir).map_err(|source| DaemonError::Io {
                op: "create",
                path: dir.clone(),
                source,
            })?;
            for (file, value) in [("cpu.rt_period_us", period), ("cpu.rt_runtime_us", runtime)] {
                let Some(v) = value else { continue };
                let path = dir.join(file);
                std::fs::write(&path, v.to_string()).map_err(|source| DaemonError::Io {
                    op: "write",
                    path,
                    source,
                })?;
            }
        }
        Ok(())
    }

    pub async fn update_container(
        &self,
        reference: &str,
        req: UpdateRequest,
    ) -> DaemonResult<Vec<String>> {
        req.resources
            .verify(true, &HostCpus::probe())
            .map_err(UpdateError::from)?;
        req.restart_policy.validate()?;
        let id = self.container(reference)?.id;
        let lock = self.lock_for(&id);
        let _guard = lock.lock().await;
        let rec = self.container(&id)?;
        if rec.state.status == crate::record::Status::Removing {
            return Err(UpdateError::Removing { id }.into());
        }
        let conflict = |source| UpdateError::Conflict {
            id: id.clone(),
            source,
        };
        let mut merged = Resources::of(&rec.host_config);
        merged.merge(&req.resources).map_err(conflict)?;
        let policy = (!req.restart_policy.name.is_empty()).then_some(&req.restart_policy);
        if policy.is_some_and(|p| !p.is_none()) && rec.host_config.auto_remove {
            return Err(conflict(UpdateConflict::RestartWithAutoRemove).into());
        }
        let failed = |e: crate::backend::BackendError| UpdateError::Failed {
            id: id.clone(),
            message: match e {
                crate::backend::BackendError::Failed { message, .. } => message,
                other => other.to_string(),
            },
        };
        // Like dockerd, the live task gets only what the request changes; a container
        // that is not running (or waits for its restart) gets everything at its next start.
        let delta = req.resources.to_oci();
        if rec.state.status.is_running() && !rec.state.restarting && !delta.is_empty() {
            let json = serde_json::to_vec(&delta).unwrap_or_default();
            self.backend.task_update(&id, json).await.map_err(failed)?;
        }
        if merged != Resources::of(&rec.host_config) {
            let raw = self.backend.container_get_spec(&id).await.map_err(failed)?;
            let mut spec: Value =
                serde_json::from_slice(&raw).map_err(|e| UpdateError::Failed {
                    id: id.clone(),
                    message: format!("decode the container's spec: {e}"),
                })?;
            set_spec_resources(&mut spec, merged.to_oci());
            let raw = serde_json::to_vec(&spec).unwrap_or_default();
            self.backend
                .container_set_spec(&id, raw)
                .await
                .map_err(failed)?;
        }
        self.store.update(&id, |r| {
            merged.store(&mut r.host_config);
            if let Some(p) = policy {
                r.host_config.restart_policy = p.clone();
            }
        })?;
        self.event_log.container("update", &id, &[]);
        tracing::info!(%id, "container updated");
        Ok(Vec::new())
    }
}

impl From<UpdateError> for DaemonError {
    fn from(e: UpdateError) -> Self {
        Self::Update(e)
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn spec_resources_keep_devices() {
        let mut spec = json!({"linux": {"resources": {"devices": [1], "memory": {"limit": 1}}}});
        let r = Resources {
            pids_limit: Some(5),
            ..Resources::default()
        };
        set_spec_resources(&mut spec, r.to_oci());
        assert_eq!(
            spec["linux"]["resources"],
            json!({"devices": [1], "pids": {"limit": 5}})
        );
    }

    #[tokio::test]
    async fn running_gets_the_delta_stopped_gets_the_spec_and_record() {
        let e = crate::daemon::tests::env().await;
        let id = e
            .daemon
            .create_container(None, crate::daemon::tests::req(&["top"], false))
            .await
            .unwrap();
        let upd = |v: Value| UpdateRequest::from_map(v.as_object().unwrap()).unwrap();
        // Created: record and spec only.
        e.daemon
            .update_container(&id, upd(json!({"PidsLimit": 30})))
            .await
            .unwrap();
        assert!(e.fake.task_updates().is_empty());
        let spec: Value = serde_json::from_slice(&e.fake.container_spec(&id).unwrap()).unwrap();
        assert_eq!(spec["linux"]["resources"]["pids"], json!({"limit": 30}));
        assert!(spec["linux"]["resources"]["devices"].is_array());
        e.daemon.start_container(&id).await.unwrap();
        e.daemon
            .update_container(&id[..6], upd(json!({"CpuShares": 512})))
            .await
            .unwrap();
        let (tid, res) = e.fake.task_updates().pop().unwrap();
        assert_eq!(tid, id);
        assert_eq!(
            serde_json::from_slice::<Value>(&res).unwrap(),
            json!({"cpu": {"shares": 512}})
        );
        let rec = e.daemon.container(&id).unwrap();
        let r = Resources::of(&rec.host_config);
        assert_eq!((r.cpu_shares, r.pids_limit), (512, Some(30)));
        let err = e
            .daemon
            .update_container(&id, upd(json!({"Memory": 64 << 20})))
            .await
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("Cannot update container {id}: Memory limit should be smaller than already set memoryswap limit, update the memoryswap at the same time")
        );
        let err = e
            .daemon
            .update_container("nope", upd(json!({"CpuShares": 2})))
            .await
            .unwrap_err();
        assert!(matches!(err, DaemonError::NoSuchContainer { .. }));
    }

    #[tokio::test]
    async fn restart_policy_and_auto_remove() {
        let e = crate::daemon::tests::env().await;
        let id = e
            .daemon
            .create_container(None, crate::daemon::tests::req(&["top"], true))
            .await
            .unwrap();
        let upd = |v: Value| UpdateRequest::from_map(v.as_object().unwrap()).unwrap();
        let err = e
            .daemon
            .update_container(&id, upd(json!({"RestartPolicy": {"Name": "always"}})))
            .await
            .unwrap_err();
        assert_eq!(err.to_string(), format!("Cannot update container {id}: Restart policy cannot be updated because AutoRemove is enabled for the container"));
        let id = e
            .daemon
            .create_container(None, crate::daemon::tests::req(&["top"], false))
            .await
            .unwrap();
        e.daemon
            .update_container(
                &id,
                upd(json!({"RestartPolicy": {"Name": "on-failure", "MaximumRetryCount": 3}})),
            )
            .await
            .unwrap();
        let rec = e.daemon.container(&id).unwrap();
        assert_eq!(rec.host_config.restart_policy.maximum_retry_count, 3);
        assert!(e
            .daemon
            .update_container(&id, upd(json!({"RestartPolicy": {"Name": "sometimes"}})))
            .await
            .is_err());
    }

    #[test]
    fn kernel_memory_is_dropped_with_a_warning_for_old_clients() {
        let mut body = json!({"KernelMemory": 8 << 20, "Memory": 0});
        let fields = body.as_object_mut().unwrap();
        assert!(discard_kernel_memory(fields, false).is_empty());
        assert!(!fields.contains_key("KernelMemory"));
        fields.insert("KernelMemory".into(), json!(8 << 20));
        assert_eq!(
            discard_kernel_memory(fields, true),
            vec![KERNEL_MEMORY_WARNING.to_string()]
        );
        assert!(!fields.contains_key("KernelMemory"));
        fields.insert("KernelMemory".into(), json!(0));
        assert!(discard_kernel_memory(fields, true).is_empty());
    }

    #[test]
    fn request_from_the_clis_body() {
        let body = json!({"Memory": 0, "CpuShares": 512, "PidsLimit": 10,
                          "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0}});
        let req = UpdateRequest::from_map(body.as_object().unwrap()).unwrap();
        assert_eq!(req.resources.cpu_shares, 512);
        assert_eq!(req.resources.pids_limit, Some(10));
        assert_eq!(req.restart_policy.name, "always");
    }
}
