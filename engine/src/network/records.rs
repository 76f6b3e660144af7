//! Who is on which network under which names: what the embedded DNS server answers
//! from. Built on demand from the network state and the container records, so a rename,
//! connect or disconnect is visible at the next query.

use std::net::Ipv4Addr;

use crate::backend::Backend;
use crate::daemon::Daemon;

/// One container's endpoint on one network, with every name it answers to there.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DnsRecord {
    pub network_id: String,
    pub network_name: String,
    /// False for the default `bridge` network, where dockerd resolves no names.
    pub user_defined: bool,
    pub container_id: String,
    /// Without the leading slash.
    pub container_name: String,
    /// The container's hostname (its `Config.Hostname`, or the short ID).
    pub hostname: String,
    /// `--network-alias` / `network connect --alias` on this network.
    pub aliases: Vec<String>,
    pub ip: Ipv4Addr,
    pub prefix: u8,
}

impl DnsRecord {
    /// Every name this endpoint answers to on its network, as dockerd's embedded DNS
    /// does: the container's name, its 12-character ID, then the aliases.
    pub fn names(&self) -> Vec<String> {
        let mut out = vec![
            self.container_name.clone(),
            self.container_id.chars().take(12).collect(),
        ];
        out.extend(self.aliases.iter().cloned());
        out
    }
}

impl<B: Backend> Daemon<B> {
    /// Every endpoint of every container on every network (the default bridge included,
    /// marked `user_defined: false`). For the DNS server: a query from address A is
    /// answered from the records whose `network_id` is one of A's networks (the records
    /// with `ip == A`).
    pub fn network_dns_records(&self) -> Vec<DnsRecord> {
        let Some(mgr) = self.network.get() else {
            return Vec::new();
        };
        let networks = mgr.networks();
        mgr.endpoints()
            .into_iter()
            .filter_map(|ep| {
                let net = networks.iter().find(|n| n.id == ep.network_id)?;
                let rec = self.store.get(&ep.container_id)?;
                let hostname = if rec.config.hostname.is_empty() {
                    rec.short_id().to_string()
                } else {
                    rec.config.hostname.clone()
                };
                Some(DnsRecord {
                    network_id: net.id.clone(),
                    network_name: net.name.clone(),
                    user_defined: !net.is_default(),
                    container_id: ep.container_id.clone(),
                    container_name: rec.name.trim_start_matches('/').to_string(),
                    hostname,
                    aliases: ep.aliases.clone(),
                    ip: ep.ip,
                    prefix: ep.prefix,
                })
            })
            .collect()
    }
}
