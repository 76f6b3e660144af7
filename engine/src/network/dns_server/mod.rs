//! The embedded DNS server of user-defined networks (dockerd's 127.0.0.11): one UDP and
//! one TCP socket on 127.0.0.11:53 inside each running container's network namespace,
//! served from the engine's runtime. It answers container names, short ids and aliases
//! on the networks the asking container shares with them (A, empty AAAA, PTR) and
//! forwards everything else to the upstream resolvers. See docs/networking.md, "DNS".

mod answer;
mod forward;
mod hooks;
mod listen;

use std::collections::HashMap;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use tokio::task::JoinHandle;

pub use forward::{parse_upstream, upstreams_from_resolv_conf};
pub use hooks::install;

/// The address containers' resolv.conf names, as dockerd's.
pub const ADDRESS: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 11);

#[derive(Debug, thiserror::Error)]
pub enum DnsServerError {
    #[error("{op} network namespace {path}: {source}")]
    Netns {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("bind the embedded DNS server on {proto} {ADDRESS}:53 in {path}: {source}")]
    Bind {
        proto: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the thread binding the embedded DNS server's sockets died")]
    ThreadDied,
}

/// What the server knows about containers, as seen from one asking container: only
/// containers on a network it is on are visible.
pub trait Records: Send + Sync {
    /// Addresses of `name` (lowercase, no trailing dot: a container name, short id or
    /// alias, possibly `NAME.NETWORK`). `None` when no visible container has that name.
    fn resolve_name(&self, asker: &str, name: &str) -> Option<Vec<Ipv4Addr>>;
    /// The name PTR answers for `addr` (dockerd's `NAME.NETWORK`), if a visible
    /// container has it.
    fn resolve_addr(&self, asker: &str, addr: Ipv4Addr) -> Option<String>;
}

/// The sockets' tasks of one container; dropping it closes them.
struct Serving {
    tasks: Vec<JoinHandle<()>>,
}

impl Drop for Serving {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Every container's embedded DNS server.
pub struct DnsServers {
    records: Arc<dyn Records>,
    /// The engine's upstreams (`--dns-upstream`, else the host's resolv.conf).
    upstreams: Vec<SocketAddr>,
    serving: Mutex<HashMap<String, Serving>>,
}

impl DnsServers {
    pub fn new(records: Arc<dyn Records>, upstreams: Vec<SocketAddr>) -> Self {
        Self {
            records,
            upstreams,
            serving: Mutex::new(HashMap::new()),
        }
    }

    fn serving(&self) -> std::sync::MutexGuard<'_, HashMap<String, Serving>> {
        self.serving.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Opens container `id`'s sockets inside the namespace at `netns` and serves them.
    /// `user_servers` are the container's `--dns` servers, which replace the engine's
    /// upstreams for it (as with dockerd). Already serving: nothing to do.
    pub async fn start(
        &self,
        id: &str,
        netns: &Path,
        user_servers: &[String],
    ) -> Result<(), DnsServerError> {
        if self.serving().contains_key(id) {
            return Ok(());
        }
        let (udp, tcp) = listen::bind_in(netns).await?;
        let upstreams: Vec<SocketAddr> = if user_servers.is_empty() {
            self.upstreams.clone()
        } else {
            user_servers
                .iter()
                .filter_map(|s| parse_upstream(s))
                .collect()
        };
        let ctx = Arc::new(listen::Context {
            asker: id.to_string(),
            records: self.records.clone(),
            upstreams,
            permits: Arc::new(tokio::sync::Semaphore::new(listen::MAX_CONCURRENT)),
        });
        let tasks = vec![
            tokio::spawn(listen::serve_udp(udp, ctx.clone())),
            tokio::spawn(listen::serve_tcp(tcp, ctx)),
        ];
        // A racing start for the same id: the first one's sockets stay, ours close.
        self.serving()
            .entry(id.to_string())
            .or_insert(Serving { tasks });
        tracing::debug!(%id, "embedded DNS server listening");
        Ok(())
    }

    /// Closes container `id`'s sockets (stop, removal). Not serving: nothing to do.
    pub fn stop(&self, id: &str) {
        if self.serving().remove(id).is_some() {
            tracing::debug!(%id, "embedded DNS server closed");
        }
    }

    pub fn is_serving(&self, id: &str) -> bool {
        self.serving().contains_key(id)
    }
}

#[cfg(test)]
mod tests;
