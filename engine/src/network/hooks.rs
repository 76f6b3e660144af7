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
        self.apply_dns(id, host)?;
        let Some(mgr) = self.network_manager() else {
            return Ok(());
        };
        if let Some(target) = host.network_mode.strip_prefix("container:") {
            let path = self.shared_netns(&mgr, target)?;
            if let Some(list) = spec
                .pointer_mut("/linux/namespaces")
                .and_then(Value::as_array_mut)
            {
                for ns in list.iter_mut().filter(|n| n["type"] == "network") {
                    ns["path"] = Value::String(path.clone());
                }
            }
            return Ok(());
        }
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

    /// `--network container:X`: X's persistent namespace when it is on the bridge, else
    /// the namespace of its running init (`none`, `host`).
    fn shared_netns(&self, mgr: &Manager, target: &str) -> Result<String, NetworkError> {
        let rec = self
            .container(target)
            .map_err(|_| NetworkError::JoinContainer {
                reference: target.into(),
            })?;
        if let Some(ep) = mgr.endpoint(&rec.id) {
            return Ok(ep.netns.to_string_lossy().into_owned());
        }
        if rec.state.status.is_running() && rec.state.pid > 0 {
            return Ok(format!("/proc/{}/ns/net", rec.state.pid));
        }
        Err(NetworkError::JoinStopped { id: rec.id })
    }

    /// `--dns*`: rewrites the resolv.conf written at create (the host's, filtered).
    fn apply_dns(&self, id: &str, host: &HostConfig) -> Result<(), NetworkError> {
        let dns = super::dns::DnsSettings::from_host_extra(&host.extra)?;
        if dns.is_empty() {
            return Ok(());
        }
        let path = self.store.container_dir(id).join("resolv.conf");
        let io = |op| {
            let path = path.clone();
            move |source| NetworkError::Io { op, path, source }
        };
        let old = std::fs::read_to_string(&path).map_err(io("read"))?;
        crate::store::write_atomic(&path, dns.apply(&old).as_bytes()).map_err(io("write"))
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
