//! The daemon's calls into networking, kept here so the daemon's files only carry one
//! line per hook. Netlink and nft block, so they run on the blocking pool.

use std::sync::Arc;

use serde_json::Value;

use super::{Endpoint, Manager, NetworkError};
use crate::backend::Backend;
use crate::daemon::Daemon;
use crate::types::{ContainerConfig, HostConfig};

impl<B: Backend> Daemon<B> {
    fn network_manager(&self) -> Option<Arc<Manager>> {
        self.network.get().cloned()
    }

    /// Container create: makes the endpoint and points the spec at its namespace.
    /// Without a network manager (unit tests) the runtime's empty namespace is used.
    pub(crate) async fn attach_network(
        &self,
        id: &str,
        host: &HostConfig,
        config: &ContainerConfig,
        spec: &mut Value,
    ) -> Result<(), NetworkError> {
        let Some(mgr) = self.network_manager() else {
            return Ok(());
        };
        let id_for_hosts = id;
        let (id, mode) = (id.to_string(), host.network_mode.clone());
        let (host_extra, config_extra) = (host.extra.clone(), config.extra.clone());
        let ep =
            tokio::task::spawn_blocking(move || mgr.attach(&id, &mode, &host_extra, &config_extra))
                .await
                .map_err(|_| NetworkError::ThreadPanicked { what: "attach" })??;
        if let Some(ep) = ep {
            super::set_spec_netns(spec, &ep);
            let hostname = spec["hostname"].as_str().unwrap_or_default();
            self.hosts_to_endpoint(id_for_hosts, hostname, &ep)?;
        }
        Ok(())
    }

    /// The container's /etc/hosts (written before the endpoint existed) maps its hostname
    /// to loopback; on the bridge it maps to the container's address, as with dockerd.
    fn hosts_to_endpoint(
        &self,
        id: &str,
        hostname: &str,
        ep: &Endpoint,
    ) -> Result<(), NetworkError> {
        let path = self.store.container_dir(id).join("hosts");
        let io = |op| {
            let path = path.clone();
            move |source| NetworkError::Io { op, path, source }
        };
        let old = std::fs::read_to_string(&path).map_err(io("read"))?;
        let loopback = format!("127.0.0.1\t{hostname}");
        let new: Vec<String> = old
            .lines()
            .map(|l| {
                if l == loopback {
                    format!("{}\t{hostname}", ep.ip)
                } else {
                    l.to_string()
                }
            })
            .collect();
        crate::store::write_atomic(&path, format!("{}\n", new.join("\n")).as_bytes())
            .map_err(io("write"))
    }

    /// Container removal (and a failed create): removes the endpoint if there is one.
    pub(crate) async fn detach_network(&self, id: &str) -> Result<(), NetworkError> {
        let Some(mgr) = self.network_manager() else {
            return Ok(());
        };
        let id = id.to_string();
        tokio::task::spawn_blocking(move || mgr.detach(&id))
            .await
            .map_err(|_| NetworkError::ThreadPanicked { what: "detach" })?
    }

    pub fn network_endpoint(&self, id: &str) -> Option<Endpoint> {
        self.network_manager().and_then(|m| m.endpoint(id))
    }

    /// `docker inspect`'s NetworkSettings for a container.
    pub fn network_settings(&self, id: &str, mode: &str) -> Value {
        super::inspect_settings(self.network_endpoint(id).as_ref(), mode)
    }
}
