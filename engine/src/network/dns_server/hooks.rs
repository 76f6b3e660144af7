//! Where the daemon meets the embedded DNS server: resolv.conf at create, sockets opened
//! at start (and for running containers after an engine restart), closed at exit and
//! removal, and the container records the server answers from.

use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::sync::{Arc, Weak};

use super::{DnsServers, Records};
use crate::backend::Backend;
use crate::daemon::Daemon;
use crate::network::dns::DnsSettings;
use crate::network::{DnsRecord, NetworkError};
use crate::record::ContainerRecord;
use crate::types::HostConfig;

/// The records of the daemon's networks; weak, as the daemon owns the servers.
struct DaemonRecords<B: Backend>(Weak<Daemon<B>>);

impl<B: Backend> DaemonRecords<B> {
    /// Records on the user-defined networks `asker` is on (dockerd resolves no names on
    /// the default bridge).
    fn visible(&self, asker: &str) -> Vec<DnsRecord> {
        let Some(daemon) = self.0.upgrade() else {
            return Vec::new();
        };
        let all = daemon.network_dns_records();
        let mine: Vec<&str> = all
            .iter()
            .filter(|r| r.user_defined && r.container_id == asker)
            .map(|r| r.network_id.as_str())
            .collect();
        all.iter()
            .filter(|r| mine.contains(&r.network_id.as_str()))
            .cloned()
            .collect()
    }
}

impl<B: Backend> Records for DaemonRecords<B> {
    fn resolve_name(&self, asker: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        let mut found: Vec<Ipv4Addr> = Vec::new();
        for r in self.visible(asker) {
            let net = r.network_name.to_ascii_lowercase();
            let hit = r.names().iter().any(|n| {
                let n = n.to_ascii_lowercase();
                // `NAME.NETWORK` asks for NAME on that network only, as with dockerd.
                name == n || name.strip_suffix(net.as_str()) == Some(&format!("{n}."))
            });
            if hit && !found.contains(&r.ip) {
                found.push(r.ip);
            }
        }
        (!found.is_empty()).then_some(found)
    }

    fn resolve_addr(&self, asker: &str, addr: Ipv4Addr) -> Option<String> {
        self.visible(asker)
            .into_iter()
            .find(|r| r.ip == addr)
            .map(|r| format!("{}.{}", r.container_name, r.network_name))
    }
}

/// Gives the daemon its DNS servers, forwarding to `upstreams` (empty: the host's
/// resolv.conf).
pub fn install<B: Backend>(daemon: &Arc<Daemon<B>>, upstreams: Vec<std::net::SocketAddr>) {
    let upstreams = if upstreams.is_empty() {
        super::upstreams_from_resolv_conf(&crate::daemon::etc::host_resolv_conf())
    } else {
        upstreams
    };
    tracing::info!(?upstreams, "embedded DNS forwards to");
    let records = Arc::new(DaemonRecords(Arc::downgrade(daemon)));
    let _ = daemon
        .dns
        .set(Arc::new(DnsServers::new(records, upstreams)));
}

impl<B: Backend> Daemon<B> {
    /// The container's namespace if it is on a user-defined network (the ones with the
    /// embedded DNS server).
    fn embedded_dns_netns(&self, id: &str) -> Option<PathBuf> {
        let mgr = self.network.get()?;
        let user_nets: Vec<String> = mgr
            .networks()
            .into_iter()
            .filter(|n| !n.is_default())
            .map(|n| n.id)
            .collect();
        mgr.endpoints_of(id)
            .into_iter()
            .find(|ep| user_nets.contains(&ep.network_id))
            .map(|ep| ep.netns)
    }

    /// Container create, after the endpoints exist: on a user-defined network the
    /// container's resolv.conf names the embedded server (dockerd's 127.0.0.11).
    pub(crate) fn resolv_for_embedded_dns(
        &self,
        id: &str,
        host: &HostConfig,
    ) -> Result<(), NetworkError> {
        if self.embedded_dns_netns(id).is_none() {
            return Ok(());
        }
        let dns = DnsSettings::from_host_extra(&host.extra)?;
        let text = dns.embedded(&crate::daemon::etc::host_resolv_conf());
        let path = self.store.container_dir(id).join("resolv.conf");
        crate::store::write_atomic(&path, text.as_bytes()).map_err(|source| NetworkError::Io {
            op: "write",
            path,
            source,
        })
    }

    /// Container start (before its task) and engine start-up for running containers:
    /// opens the container's DNS sockets when it is on a user-defined network.
    pub(crate) async fn dns_start(&self, rec: &ContainerRecord) -> Result<(), NetworkError> {
        let (Some(servers), Some(netns)) = (self.dns.get(), self.embedded_dns_netns(&rec.id))
        else {
            return Ok(());
        };
        let user = DnsSettings::from_host_extra(&rec.host_config.extra)?;
        servers
            .start(&rec.id, &netns, &user.servers)
            .await
            .map_err(NetworkError::from)
    }

    /// After `network connect`/`disconnect`: a running container on a user-defined
    /// network serves DNS, any other does not.
    pub(crate) async fn dns_refresh(&self, id: &str) -> Result<(), NetworkError> {
        match self.store.get(id) {
            Some(rec) if rec.state.status.is_running() && self.embedded_dns_netns(id).is_some() => {
                self.dns_start(&rec).await
            }
            _ => {
                self.dns_stop(id);
                Ok(())
            }
        }
    }

    /// Container exit and removal: its DNS sockets close.
    pub(crate) fn dns_stop(&self, id: &str) {
        if let Some(servers) = self.dns.get() {
            servers.stop(id);
        }
    }
}
