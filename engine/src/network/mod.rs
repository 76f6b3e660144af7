//! Container networking (dockerd's libnetwork job): the default `bridge` network and
//! user-defined bridge networks with NAT, isolation and published ports, plus `host`,
//! `none` and `container:`. See docs/networking.md.
//!
//! Every container on a bridge network gets a persistent network namespace under
//! `<exec-root>/netns/<id>` made at create time (the OCI spec joins it by path) and, per
//! network it is connected to, a veth pair into that network's bridge (`eth0`, `eth1`, ...
//! inside) with an address from the network's subnet. What exists is recorded in
//! `<data-root>/network/state.json` *before* it is made, so a crash at any point leaves a
//! record that start-up uses to finish or undo the work.

mod attach;
mod dns;
pub mod dns_server;
mod endpoint;
mod hooks;
pub mod ipam;
pub(crate) mod link;
mod link_hooks;
pub mod links;
mod manager;
pub(crate) mod netns;
pub mod nft;
pub mod ports;
mod records;
pub mod request;
mod state;
mod usernet;

use std::path::PathBuf;

use ipam::Ipv4Net;

pub use endpoint::{endpoint_id, inspect_settings, set_spec_netns};
pub use manager::Manager;
pub use records::DnsRecord;
pub use request::{EndpointRequest, NetworkCreate};
pub use state::{Endpoint, NetworkRecord};

/// Name of the default bridge network, as dockerd calls it.
pub const DEFAULT_NETWORK: &str = "bridge";

/// A stable 64-hex ID for a built-in network (`bridge`, `host`, `none`); dockerd's are
/// random per host, user-defined networks get random ones here too.
pub fn builtin_id(name: &str) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(format!("berth-network:{name}").as_bytes()))
}

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
    #[error("network {reference} not found")]
    NotFound { reference: String },
    #[error("network {reference} is ambiguous ({count} matches found based on ID prefix)")]
    Ambiguous { reference: String, count: usize },
    #[error("network with name {name} already exists")]
    Duplicate { name: String },
    #[error("{name} is a pre-defined network and cannot be {action}")]
    PreDefined { name: String, action: &'static str },
    #[error("plugin \"{driver}\" not found")]
    Driver { driver: String },
    /// Bad `network create` / endpoint settings (dockerd's wording in `message`).
    #[error("{message}")]
    Invalid { message: String },
    #[error("invalid pool request: Pool overlaps with other one on this address space")]
    PoolOverlap,
    #[error("could not find an available, non-overlapping IPv4 address pool among the defaults to assign to the network")]
    NoPool,
    #[error("Address already in use")]
    AddressInUse { ip: std::net::Ipv4Addr },
    #[error("error while removing network: network {name} has active endpoints ({endpoints})")]
    InUse { name: String, endpoints: String },
    #[error("endpoint with name {container} already exists in network {network}")]
    AlreadyConnected { container: String, network: String },
    #[error("container {container} is not connected to network {network}")]
    NotConnected { container: String, network: String },
    #[error("interface {name} already exists on the host: choose another com.docker.network.bridge.name")]
    BridgeTaken { name: String },
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
    #[error(transparent)]
    DnsServer(#[from] dns_server::DnsServerError),
    #[error("bad format for links: {link}")]
    LinkFormat { link: String },
    #[error("could not get container for {target}: No such container: {target}")]
    LinkTarget { target: String },
    #[error("conflicting options: {kind} can't be used with links. This would result in undefined behavior")]
    LinksConflict { kind: &'static str },
    #[error("Cannot link to a non running container: {target} AS {link}")]
    LinkNotRunning { target: String, link: String },
    #[error("Cannot link to {target}, as it does not belong to the default network")]
    LinkNotDefault { target: String },
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
                | Self::Ambiguous { .. }
                | Self::Invalid { .. }
                | Self::LinkTarget { .. }
                | Self::LinksConflict { .. }
        )
    }

    /// dockerd's HTTP status for this error.
    pub fn status(&self) -> u16 {
        match self {
            e if e.is_bad_input() => 400,
            Self::NotFound { .. } | Self::Driver { .. } => 404,
            Self::Duplicate { .. } | Self::BridgeTaken { .. } => 409,
            Self::PreDefined { .. }
            | Self::PoolOverlap
            | Self::NoPool
            | Self::AddressInUse { .. }
            | Self::InUse { .. }
            | Self::AlreadyConnected { .. }
            | Self::NotConnected { .. } => 403,
            _ => 500,
        }
    }

    pub(crate) fn invalid(message: impl Into<String>) -> Self {
        Self::Invalid {
            message: message.into(),
        }
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
    /// Where the embedded DNS server forwards (`--dns-upstream`); the host's
    /// resolv.conf when empty.
    pub dns_upstreams: Vec<std::net::SocketAddr>,
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
            dns_upstreams: Vec::new(),
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
