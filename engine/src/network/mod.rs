//! Container networking (dockerd's libnetwork job, first increment): the default `bridge`
//! network with NAT and published ports, plus `host` and `none`. See docs/networking.md.
//!
//! Every container on the bridge gets a persistent network namespace under
//! `<exec-root>/netns/<id>` made at create time (the OCI spec joins it by path), a veth
//! pair into the bridge, an address from the bridge's subnet and its published ports.
//! What exists is recorded in `<data-root>/network/state.json` *before* it is made, so a
//! crash at any point leaves a record that start-up uses to finish or undo the work.

mod dns;
pub mod dns_server;
mod endpoint;
mod hooks;
pub mod ipam;
pub(crate) mod link;
pub(crate) mod netns;
pub mod nft;
pub mod ports;
mod state;

use std::path::PathBuf;

use ipam::Ipv4Net;

pub use endpoint::{inspect_settings, set_spec_netns};
pub use state::{Endpoint, Manager};

#[derive(Debug, thiserror::Error)]
pub enum NetworkError {
    #[error(
        "network mode {mode:?} is not implemented yet (supported: default, bridge, none, host)"
    )]
    Mode { mode: String },
    #[error("No such container: {reference}")]
    JoinContainer { reference: String },
    #[error("cannot join network of a non running container: {id}")]
    JoinStopped { id: String },
    #[error("{value} is not an ip address")]
    Dns { value: String },
    #[error("invalid port specification: {spec:?}")]
    InvalidPort { spec: String },
    #[error("Bind for {addr} failed: port is already allocated ({source})")]
    PortInUse {
        addr: String,
        source: std::io::Error,
    },
    #[error("invalid bridge address {bip}: {reason}")]
    Bip { bip: String, reason: &'static str },
    #[error("bridge subnet {subnet} overlaps with the host route {route}")]
    Overlap { subnet: Ipv4Net, route: Ipv4Net },
    #[error(transparent)]
    Ipam(#[from] ipam::IpamError),
    #[error("{op} network namespace {path}: {source}")]
    Netns {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("netlink: {op} {name}: {source}")]
    Netlink {
        op: &'static str,
        name: String,
        source: rtnetlink::Error,
    },
    #[error("interface {name} vanished while being configured")]
    Vanished { name: String },
    #[error("no free host interface name for the veth of container {id}")]
    NoVethName { id: String },
    #[error("netlink runtime: {source}")]
    Runtime { source: std::io::Error },
    #[error("{what} thread panicked")]
    ThreadPanicked { what: &'static str },
    #[error("run nft (is nftables installed?): {source}")]
    NftSpawn { source: std::io::Error },
    #[error("nft rejected the ruleset: {message}")]
    Nft { message: String },
    #[error("{op} {path}: {source}")]
    Io {
        op: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network state {path}: {source}")]
    State {
        path: PathBuf,
        source: serde_json::Error,
    },
}

impl NetworkError {
    /// The user asked for something impossible (HTTP 400), as opposed to a host failure.
    pub fn is_bad_input(&self) -> bool {
        matches!(
            self,
            Self::Mode { .. }
                | Self::InvalidPort { .. }
                | Self::Bip { .. }
                | Self::Dns { .. }
                | Self::JoinContainer { .. }
                | Self::JoinStopped { .. }
        )
    }
}

/// Engine flags for networking.
#[derive(Debug, Clone)]
pub struct NetworkConfig {
    /// The default bridge's interface name (`--bridge-name`, dockerd's `docker0`).
    pub bridge_name: String,
    /// The bridge's address and prefix (`--bip`); picked from `pool` when `None`.
    pub bip: Option<Ipv4Net>,
    /// Candidate subnets for the default bridge (`--default-address-pool`).
    pub pool: Vec<Ipv4Net>,
    /// Name of the nftables table the engine owns (`--firewall-table`).
    pub table: String,
    /// MTU of container interfaces (`--mtu`); the default route's MTU when `None`.
    pub mtu: Option<u32>,
    /// Set net.ipv4.ip_forward=1 at start (`--ip-forward`), as dockerd does.
    pub ip_forward: bool,
    /// Masquerade the bridge's outbound traffic (`--ip-masq`).
    pub ip_masq: bool,
}

impl NetworkConfig {
    /// dockerd's defaults with Berth's names.
    pub fn new(bridge_name: String, table: String) -> Self {
        Self {
            bridge_name,
            bip: None,
            pool: ipam::default_pool(),
            table,
            mtu: None,
            ip_forward: true,
            ip_masq: true,
        }
    }
}

/// Parses `--bip`: an address with its prefix, e.g. `10.20.0.1/24`.
pub fn parse_bip(s: &str) -> Result<Ipv4Net, NetworkError> {
    let bad = |reason| NetworkError::Bip {
        bip: s.into(),
        reason,
    };
    let net: Ipv4Net = s.parse().map_err(|_| bad("expected ADDRESS/PREFIX"))?;
    if net.prefix > 30 || net.prefix < 8 {
        return Err(bad("the prefix must be between /8 and /30"));
    }
    Ok(net)
}
