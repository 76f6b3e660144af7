//! The daemon's side of legacy links (links.rs): resolving them at create, checking the
//! targets at start.

use serde_json::Value;

use super::links::{self, Link};
use super::{builtin_id, NetworkError, DEFAULT_NETWORK};
use crate::backend::Backend;
use crate::daemon::Daemon;
use crate::record::ContainerRecord;
use crate::types::HostConfig;

/// `--network container:X` chains followed before giving up (they cannot loop: a
/// container only joins one that existed before it, but a record may be damaged).
const MAX_CHAIN: usize = 16;

fn is_default(mode: &str) -> bool {
    matches!(mode, "" | "default" | DEFAULT_NETWORK)
}

impl<B: Backend> Daemon<B> {
    /// Create: checks `HostConfig.Links` as dockerd does (targets must exist; no links
    /// with `host` or `container:` networking), rewrites them into dockerd's stored form
    /// `/target:/name/alias` and returns what the default bridge applies. On a
    /// user-defined network they are kept as given and not checked (dockerd's rule).
    pub(crate) fn resolve_links(
        &self,
        name: &str,
        host: &mut HostConfig,
    ) -> Result<Vec<Link>, NetworkError> {
        let requested = links::requested(&host.extra);
        if requested.is_empty() {
            return Ok(Vec::new());
        }
        let mode = host.network_mode.as_str();
        if mode == "host" {
            return Err(NetworkError::LinksConflict {
                kind: "host type networking",
            });
        }
        if mode.starts_with("container:") {
            return Err(NetworkError::LinksConflict {
                kind: "container type network",
            });
        }
        let default = is_default(mode);
        if !default && mode != "none" {
            return Ok(Vec::new());
        }
        let bridge = builtin_id(DEFAULT_NETWORK);
        let mut stored = Vec::new();
        let mut out = Vec::new();
        for raw in requested {
            let req = links::parse(&raw)?;
            let target = self.link_target(&req.target)?;
            let link_name = format!("/{name}/{}", req.alias);
            stored.push(Value::String(format!("{}:{link_name}", target.name)));
            let ep = self
                .network_endpoints(&target.id)
                .into_iter()
                .find(|e| e.network_id == bridge);
            // A target off the default bridge fails the start instead, as with dockerd.
            let (true, Some(ep)) = (default, ep) else {
                continue;
            };
            let ports = match target.config.extra.get("ExposedPorts") {
                Some(Value::Object(m)) => m.keys().cloned().collect(),
                _ => Vec::new(),
            };
            let hostname = if target.config.hostname.is_empty() {
                target.id.chars().take(12).collect()
            } else {
                target.config.hostname.clone()
            };
            out.push(Link {
                name: link_name,
                alias: req.alias,
                ip: ep.ip,
                ports,
                target_env: target.config.env.clone(),
                target_hostname: hostname,
                target_name: target.name.trim_start_matches('/').to_string(),
            });
        }
        host.extra.insert("Links".into(), Value::Array(stored));
        Ok(out)
    }

    /// The container whose network a link target uses (following `container:` modes);
    /// `host` networking cannot be linked to.
    fn link_target(&self, reference: &str) -> Result<ContainerRecord, NetworkError> {
        let missing = |target: &str| NetworkError::LinkTarget {
            target: target.into(),
        };
        let mut target = self.container(reference).map_err(|_| missing(reference))?;
        for _ in 0..MAX_CHAIN {
            let Some(next) = target.host_config.network_mode.strip_prefix("container:") else {
                break;
            };
            let next = next.to_string();
            target = self.container(&next).map_err(|_| missing(&next))?;
        }
        if target.host_config.network_mode == "host" {
            return Err(NetworkError::LinksConflict {
                kind: "host type networking",
            });
        }
        Ok(target)
    }

    fn network_endpoints(&self, id: &str) -> Vec<super::Endpoint> {
        self.network
            .get()
            .map(|m| m.endpoints_of(id))
            .unwrap_or_default()
    }

    /// Start: every linked container that still exists must be running and on the
    /// default bridge (dockerd drops the link of a removed target).
    pub(crate) fn check_links(&self, rec: &ContainerRecord) -> Result<(), NetworkError> {
        if !is_default(&rec.host_config.network_mode) {
            return Ok(());
        }
        let bridge = builtin_id(DEFAULT_NETWORK);
        for stored in links::requested(&rec.host_config.extra) {
            let req = links::parse(&stored)?;
            let Ok(target) = self.link_target(&req.target) else {
                continue;
            };
            if !target.state.status.is_running() {
                return Err(NetworkError::LinkNotRunning {
                    target: target.name,
                    link: format!("{}/{}", rec.name, req.alias),
                });
            }
            if !self
                .network_endpoints(&target.id)
                .iter()
                .any(|e| e.network_id == bridge)
            {
                return Err(NetworkError::LinkNotDefault {
                    target: target.name,
                });
            }
        }
        Ok(())
    }
}
