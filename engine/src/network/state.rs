//! The persisted network state: every network (the default bridge and user-defined
//! ones) with its allocations, and every container's endpoints. Written atomically
//! *before* the interfaces and rules it describes exist.

use std::collections::{BTreeMap, HashSet};
use std::net::Ipv4Addr;
use std::path::PathBuf;

use serde::{Deserialize, Deserializer, Serialize};

use super::ipam::{Allocations, Ipv4Net};
use super::ports::PortBinding;

pub(super) const STATE_VERSION: u32 = 2;

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// Hashed names tried after the id-prefix one before giving up.
const VETH_NAME_ATTEMPTS: u32 = 256;

/// Picks the host veth name for container `id`: `veth` + the id's first 7 characters, as
/// before, unless that name is in `taken` (ids sharing a prefix would collide); then `veth` + 7 hex digits of a hash of the id and a counter. `None` when
/// every candidate is taken.
pub(super) fn choose_veth_name(id: &str, taken: &HashSet<String>) -> Option<String> {
    use sha2::{Digest, Sha256};
    // The container side never has a name in the host namespace: it is created as
    // `ethN` inside the container's (link::create_veth).
    let free = |host: &String| host.len() <= IFNAME_MAX && !taken.contains(host);
    let prefix: String = id.chars().take(7).collect();
    let first = format!("veth{prefix}");
    if !prefix.is_empty() && free(&first) {
        return Some(first);
    }
    (0..VETH_NAME_ATTEMPTS)
        .map(|n| {
            let digest = Sha256::new()
                .chain_update(id.as_bytes())
                .chain_update(n.to_be_bytes())
                .finalize();
            format!("veth{}", &hex::encode(digest)[..7])
        })
        .find(free)
}

fn default_network_id() -> String {
    super::builtin_id(super::DEFAULT_NETWORK)
}

fn eth0() -> String {
    "eth0".into()
}

fn yes() -> bool {
    true
}

/// A container's place on one network. Persisted before any of it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_id: String,
    /// The network's ID (state files of the first version only knew the default bridge).
    #[serde(default = "default_network_id")]
    pub network_id: String,
    /// The interface's name inside the container: `eth0`, `eth1`, ... in connect order.
    #[serde(default = "eth0")]
    pub ifname: String,
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    /// The user chose `ip` (`--ip`, `network connect --ip`).
    #[serde(default)]
    pub ip_given: bool,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub host_veth: String,
    /// Published ports: only on the container's first endpoint, like dockerd's.
    #[serde(default)]
    pub ports: Vec<PortBinding>,
    /// `--network-alias` / `network connect --alias`: extra names on this network.
    #[serde(default)]
    pub aliases: Vec<String>,
    /// Whether the container's default route goes through this endpoint's gateway.
    #[serde(default = "yes")]
    pub default_route: bool,
}

/// A network: the default bridge (name `bridge`) or a user-defined bridge network.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NetworkRecord {
    pub id: String,
    pub name: String,
    /// The Linux bridge: `br-<12 hex of id>` unless `com.docker.network.bridge.name`.
    pub bridge: String,
    /// Network address and prefix.
    pub subnet: Ipv4Net,
    pub gateway: Ipv4Addr,
    #[serde(default)]
    pub ip_range: Option<Ipv4Net>,
    /// The user gave the subnet (`IPAM.Config`), as opposed to one from the pool.
    #[serde(default)]
    pub subnet_given: bool,
    #[serde(default)]
    pub gateway_given: bool,
    #[serde(default)]
    pub internal: bool,
    #[serde(default)]
    pub attachable: bool,
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    #[serde(default)]
    pub options: BTreeMap<String, String>,
    /// RFC 3339.
    #[serde(default)]
    pub created: String,
    #[serde(default)]
    pub alloc: Allocations,
}

impl NetworkRecord {
    pub fn is_default(&self) -> bool {
        self.name == super::DEFAULT_NETWORK
    }

    /// The bridge's address with the subnet's prefix.
    pub fn gateway_net(&self) -> Ipv4Net {
        Ipv4Net::new(self.gateway, self.subnet.prefix)
    }

    fn option_bool(&self, key: &str) -> Option<bool> {
        self.options.get(key).and_then(|v| v.parse().ok())
    }

    /// Outbound masquerade: never for internal networks.
    pub fn masquerade(&self, engine_default: bool) -> bool {
        !self.internal
            && self
                .option_bool(super::request::MASQUERADE_OPTION)
                .unwrap_or(engine_default)
    }

    pub fn mtu(&self) -> Option<u32> {
        self.options
            .get(super::request::MTU_OPTION)
            .and_then(|v| v.parse().ok())
    }
}

/// A container's sandbox entry: present from create to remove (its namespace exists),
/// with one endpoint per network it is connected to, possibly none after disconnects.
fn endpoints_compat<'de, D>(d: D) -> Result<BTreeMap<String, Vec<Endpoint>>, D::Error>
where
    D: Deserializer<'de>,
{
    #[derive(Deserialize)]
    #[serde(untagged)]
    enum OneOrMany {
        Many(Vec<Endpoint>),
        // The first version kept exactly one (default bridge) endpoint per container.
        One(Box<Endpoint>),
    }
    let raw: BTreeMap<String, OneOrMany> = BTreeMap::deserialize(d)?;
    Ok(raw
        .into_iter()
        .map(|(k, v)| match v {
            OneOrMany::Many(list) => (k, list),
            OneOrMany::One(ep) => (k, vec![*ep]),
        })
        .collect())
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub(super) struct State {
    pub version: u32,
    /// The default bridge's address (gateway) and prefix, kept across restarts.
    pub bridge: Option<Ipv4Net>,
    /// First version only: the default bridge's allocations (now in its record).
    #[serde(default, skip_serializing)]
    pub alloc: Allocations,
    /// By network ID, the default bridge included.
    #[serde(default)]
    pub networks: BTreeMap<String, NetworkRecord>,
    /// By container ID.
    #[serde(default, deserialize_with = "endpoints_compat")]
    pub endpoints: BTreeMap<String, Vec<Endpoint>>,
    /// Bridges of removed networks not yet deleted (a crash in between): start-up
    /// deletes them.
    #[serde(default)]
    pub doomed_bridges: Vec<String>,
}

impl State {
    /// A network by name, full ID or unique ID prefix.
    pub fn find(&self, reference: &str) -> Result<&NetworkRecord, super::NetworkError> {
        let not_found = || super::NetworkError::NotFound {
            reference: reference.into(),
        };
        if reference.is_empty() {
            return Err(not_found());
        }
        if let Some(n) = self.networks.values().find(|n| n.name == reference) {
            return Ok(n);
        }
        if let Some(n) = self.networks.get(reference) {
            return Ok(n);
        }
        let matches: Vec<&NetworkRecord> = self
            .networks
            .values()
            .filter(|n| n.id.starts_with(reference))
            .collect();
        match matches.as_slice() {
            [one] => Ok(one),
            [] => Err(not_found()),
            many => Err(super::NetworkError::Ambiguous {
                reference: reference.into(),
                count: many.len(),
            }),
        }
    }

    pub fn all_endpoints(&self) -> impl Iterator<Item = &Endpoint> {
        self.endpoints.values().flatten()
    }

    /// Every host veth name the state knows.
    pub fn veth_names(&self) -> HashSet<String> {
        self.all_endpoints().map(|e| e.host_veth.clone()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn set(names: &[&str]) -> HashSet<String> {
        names.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn veth_name_is_the_id_prefix_when_free() {
        assert_eq!(
            choose_veth_name("0123456789abcdef", &set(&["eth0", "lo"])).as_deref(),
            Some("veth0123456")
        );
    }

    #[test]
    fn ids_sharing_a_prefix_get_different_free_names() {
        let mut taken = set(&["lo"]);
        let mut chosen = Vec::new();
        for id in ["abcdef0000", "abcdef0111", "abcdef0222"] {
            let name = choose_veth_name(id, &taken).expect("a free name");
            assert!(name.len() <= IFNAME_MAX, "{name} too long");
            assert!(!taken.contains(&name), "{name} was taken");
            taken.insert(name.clone());
            chosen.push(name);
        }
        assert_eq!(chosen[0], "vethabcdef0");
        assert_ne!(chosen[1], chosen[0]);
        assert_ne!(chosen[2], chosen[1]);
        assert!(chosen.iter().all(|n| n.starts_with("veth")));
    }

    #[test]
    fn the_choice_is_stable_for_the_same_taken_set() {
        let taken = set(&["vethabcdef0"]);
        assert_eq!(
            choose_veth_name("abcdef0123", &taken),
            choose_veth_name("abcdef0123", &taken)
        );
    }

    #[test]
    fn no_name_when_every_candidate_is_taken() {
        let id = "abcdef0123";
        let mut taken = set(&["vethabcdef0"]);
        while let Some(n) = choose_veth_name(id, &taken) {
            taken.insert(n);
        }
        assert_eq!(taken.len() as u32, VETH_NAME_ATTEMPTS + 1);
    }

    #[test]
    fn first_version_state_files_still_load() {
        let v1 = r#"{"version":1,"bridge":"10.1.0.1/24","alloc":{"used":["10.1.0.2"]},
            "endpoints":{"abc":{"container_id":"abc","netns":"/x/abc","ip":"10.1.0.2",
            "prefix":24,"gateway":"10.1.0.1","mac":"02:42:0a:01:00:02","host_veth":"vethabc",
            "ports":[]}}}"#;
        let st: State = serde_json::from_str(v1).unwrap();
        assert_eq!(st.alloc.used.len(), 1);
        let eps = &st.endpoints["abc"];
        assert_eq!(eps.len(), 1);
        assert_eq!(eps[0].ifname, "eth0");
        assert_eq!(eps[0].network_id, default_network_id());
        assert!(eps[0].default_route);
        let again: State = serde_json::from_str(&serde_json::to_string(&st).unwrap()).unwrap();
        assert_eq!(again.endpoints, st.endpoints);
    }
}
