//! The daemon's calls into networking, kept here so the daemon's files only carry one
//! line per hook. Netlink and nft block, so they run on the blocking pool.

use std::sync::Arc;

use serde_json::Value;

use super::{Endpoint, EndpointRequest, Manager, NetworkCreate, NetworkError, NetworkRecord};
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
        name: &str,
        host: &mut HostConfig,
        config: &ContainerConfig,
        networking: Option<Value>,
        spec: &mut Value,
    ) -> Result<(), NetworkError> {
        let links = self.resolve_links(name, host)?;
        let host = &*host;
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
        let (id, mode, name) = (id.to_string(), host.network_mode.clone(), name.to_string());
        let (host_extra, config_extra) = (host.extra.clone(), config.extra.clone());
        let eps = tokio::task::spawn_blocking(move || {
            mgr.attach(
                &id,
                &name,
                &mode,
                &host_extra,
                &config_extra,
                networking.as_ref(),
            )
        })
        .await
        .map_err(|_| NetworkError::ThreadPanicked { what: "attach" })??;
        if let Some(first) = eps.first() {
            super::set_spec_netns(spec, first);
            let hostname = spec["hostname"].as_str().unwrap_or_default();
            let link_lines: Vec<String> = links.iter().map(|l| l.hosts_line()).collect();
            self.hosts_to_endpoints(id_for_hosts, hostname, &eps, &link_lines)?;
            let env: Vec<String> = links.iter().flat_map(|l| l.env()).collect();
            super::links::add_env(spec, &env);
            self.resolv_for_embedded_dns(id_for_hosts, host)?;
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

    /// The container's /etc/hosts (written before the endpoints existed) maps its
    /// hostname to loopback; on a network it maps to the container's first address, and
    /// each further endpoint adds a line, as with dockerd. `links` (legacy links' lines)
    /// go just before them, where dockerd puts them.
    fn hosts_to_endpoints(
        &self,
        id: &str,
        hostname: &str,
        eps: &[Endpoint],
        links: &[String],
    ) -> Result<(), NetworkError> {
        let loopback = format!("127.0.0.1\t{hostname}");
        self.edit_hosts(id, |lines| {
            let mut out: Vec<String> = Vec::new();
            for l in lines {
                if l == loopback {
                    out.extend(links.iter().cloned());
                    out.extend(eps.iter().map(|ep| format!("{}\t{hostname}", ep.ip)));
                } else {
                    out.push(l);
                }
            }
            out
        })
    }

    fn edit_hosts(
        &self,
        id: &str,
        edit: impl FnOnce(Vec<String>) -> Vec<String>,
    ) -> Result<(), NetworkError> {
        let path = self.store.container_dir(id).join("hosts");
        let io = |op| {
            let path = path.clone();
            move |source| NetworkError::Io { op, path, source }
        };
        let old = std::fs::read_to_string(&path).map_err(io("read"))?;
        let new = edit(old.lines().map(String::from).collect());
        // In place, not by rename: a running container has this very inode bind-mounted
        // on its /etc/hosts (dockerd rewrites it in place too).
        std::fs::write(&path, format!("{}\n", new.join("\n"))).map_err(io("write"))
    }

    /// Container removal (and a failed create): removes the endpoint if there is one.
    pub(crate) async fn detach_network(&self, id: &str) -> Result<(), NetworkError> {
        self.dns_stop(id);
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
        let name = self
            .store
            .get(id)
            .map(|r| r.name.trim_start_matches('/').to_string())
            .unwrap_or_default();
        let (eps, nets) = match self.network_manager() {
            Some(m) => (m.endpoints_of(id), m.networks()),
            None => (Vec::new(), Vec::new()),
        };
        super::inspect_settings(&eps, &nets, mode, &name)
    }

    fn require_manager(&self) -> Result<Arc<Manager>, NetworkError> {
        self.network_manager().ok_or_else(|| {
            NetworkError::invalid("networking is disabled in this engine (no network manager)")
        })
    }

    /// `POST /networks/create`.
    pub async fn create_network(&self, req: NetworkCreate) -> Result<NetworkRecord, NetworkError> {
        let mgr = self.require_manager()?;
        blocking("network create", move || mgr.create_network(&req)).await
    }

    /// `DELETE /networks/{id}`.
    pub async fn remove_network(&self, reference: &str) -> Result<(), NetworkError> {
        let mgr = self.require_manager()?;
        let labels: std::collections::HashMap<String, String> = mgr
            .endpoints()
            .into_iter()
            .map(|ep| {
                let name = self
                    .store
                    .get(&ep.container_id)
                    .map(|r| r.name.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                let id12: String = ep.container_id.chars().take(12).collect();
                (ep.container_id, format!("name:\"{name}\" id:\"{id12}\""))
            })
            .collect();
        let reference = reference.to_string();
        blocking("network rm", move || {
            mgr.remove_network(&reference, &|id| {
                labels.get(id).cloned().unwrap_or_else(|| id.to_string())
            })
            .map(|_| ())
        })
        .await
    }

    /// `POST /networks/prune`: the names of the removed networks.
    pub async fn prune_networks(
        &self,
        selected: impl Fn(&NetworkRecord) -> bool + Send + 'static,
    ) -> Result<Vec<String>, NetworkError> {
        let mgr = self.require_manager()?;
        blocking("network prune", move || mgr.prune_networks(&selected)).await
    }

    /// The container a connect/disconnect names, checked to have a namespace of the
    /// engine's own (dockerd's messages for host, none and container: modes).
    fn connectable(
        &self,
        mgr: &Manager,
        container: &str,
        network: &str,
    ) -> Result<crate::record::ContainerRecord, NetworkError> {
        let rec = self
            .container(container)
            .map_err(|_| NetworkError::JoinContainer {
                reference: container.into(),
            })?;
        if matches!(network, "host" | "none") {
            return Err(NetworkError::invalid(
                "container cannot be disconnected from host network or connected to host network",
            ));
        }
        let mode = rec.host_config.network_mode.as_str();
        if mode == "host" || mode.starts_with("container:") {
            return Err(NetworkError::invalid(
                "container sharing network namespace with another container or host cannot be connected to any other network",
            ));
        }
        if mode == "none" || !mgr.has_sandbox(&rec.id) {
            return Err(NetworkError::invalid(
                "container cannot be connected to multiple networks with one of the networks in private (none) mode",
            ));
        }
        Ok(rec)
    }

    /// `POST /networks/{id}/connect`: a new interface (`ethN`) in the container's
    /// namespace, running or not, and a line for it in its /etc/hosts.
    pub async fn connect_network(
        &self,
        network: &str,
        container: &str,
        req: EndpointRequest,
    ) -> Result<(), NetworkError> {
        let mgr = self.require_manager()?;
        mgr.network(network)?;
        let rec = self.connectable(&mgr, container, network)?;
        let (id, name, net) = (
            rec.id.clone(),
            rec.name.trim_start_matches('/').to_string(),
            network.to_string(),
        );
        let ep = blocking("network connect", move || {
            mgr.connect(&id, &name, &net, &req)
        })
        .await?;
        let hostname = std::fs::read_to_string(self.store.container_dir(&rec.id).join("hostname"))
            .unwrap_or_default()
            .trim()
            .to_string();
        self.edit_hosts(&rec.id, |mut lines| {
            lines.push(format!("{}\t{hostname}", ep.ip));
            lines
        })?;
        self.dns_refresh(&rec.id).await
    }

    /// `POST /networks/{id}/disconnect`: removes the interface and its /etc/hosts line.
    pub async fn disconnect_network(
        &self,
        network: &str,
        container: &str,
    ) -> Result<(), NetworkError> {
        let mgr = self.require_manager()?;
        let net = mgr.network(network)?;
        let rec = self.connectable(&mgr, container, network)?;
        let ip = mgr
            .endpoints_of(&rec.id)
            .into_iter()
            .find(|e| e.network_id == net.id)
            .map(|e| e.ip);
        let (id, name, n) = (
            rec.id.clone(),
            rec.name.trim_start_matches('/').to_string(),
            network.to_string(),
        );
        blocking("network disconnect", move || mgr.disconnect(&id, &name, &n)).await?;
        if let Some(ip) = ip {
            let prefix = format!("{ip}\t");
            self.edit_hosts(&rec.id, |lines| {
                lines
                    .into_iter()
                    .filter(|l| !l.starts_with(&prefix))
                    .collect()
            })?;
        }
        self.dns_refresh(&rec.id).await
    }
}

/// Netlink and nft block: run on the blocking pool.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    f: impl FnOnce() -> Result<T, NetworkError> + Send + 'static,
) -> Result<T, NetworkError> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|_| NetworkError::ThreadPanicked { what })?
}
