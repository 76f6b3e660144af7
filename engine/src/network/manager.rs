//! The network manager: loads the persisted state, sets up every network's bridge and
//! the rules at start, repairs what a crash left, and cleans up at a clean stop.
//! Attaching containers is in `attach.rs`, user-defined networks in `usernet.rs`.

use std::collections::{HashMap, HashSet};
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use super::ipam::{self, Allocations, Ipv4Net};
use super::netns::with_netlink;
use super::ports;
use super::state::{Endpoint, NetworkRecord, State, STATE_VERSION};
use super::{link, netns, nft, NetworkConfig, NetworkError, DEFAULT_NETWORK};

pub struct Manager {
    pub(super) config: NetworkConfig,
    state_path: PathBuf,
    pub(super) netns_dir: PathBuf,
    pub(super) mtu: u32,
    pub(super) state: Mutex<State>,
    /// Sockets holding each container's host ports.
    pub(super) held: Mutex<HashMap<String, Vec<OwnedFd>>>,
}

pub(super) fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.to_path_buf();
    move |source| NetworkError::Io { op, path, source }
}

fn write_sysctl(path: &str) -> Result<(), NetworkError> {
    std::fs::write(path, "1").map_err(io("write", Path::new(path)))
}

/// Lets DNATed 127.0.0.1 traffic be routed into the bridge (see nft.rs).
pub(super) fn route_localnet(bridge: &str) -> Result<(), NetworkError> {
    write_sysctl(&format!("/proc/sys/net/ipv4/conf/{bridge}/route_localnet"))
}

/// Subnets routed on the host other than through one of `ours` (our bridges' own
/// routes are no conflict), never the default route.
pub(super) fn foreign_routes(routes: Routes, ours: &HashSet<u32>) -> Vec<Ipv4Net> {
    routes
        .into_iter()
        .filter(|(_, oif)| oif.is_none_or(|i| !ours.contains(&i)))
        .map(|(n, _)| n)
        .filter(|n| n.prefix > 0)
        .collect()
}

/// IPv4 routes of the host's main table as (network, output interface).
pub(super) type Routes = Vec<(Ipv4Net, Option<u32>)>;

/// The host's routes, the indexes of the named bridges that exist, the host's MTU.
pub(super) fn routes_and_bridges(
    bridges: Vec<String>,
) -> Result<(Routes, HashSet<u32>, u32), NetworkError> {
    with_netlink(None, move |h| {
        Box::pin(async move {
            let routes = link::routes(&h).await?;
            let mut ours = HashSet::new();
            for b in &bridges {
                if let Some(i) = link::index_of(&h, b).await? {
                    ours.insert(i);
                }
            }
            Ok((routes, ours, link::host_mtu(&h).await?))
        })
    })
}

impl Manager {
    /// Loads the state, sets up the bridges and the rules. `live` are the containers the
    /// engine knows: endpoints of any other container are leftovers of a crash and go.
    pub fn open(
        config: NetworkConfig,
        data_root: &Path,
        exec_root: &Path,
        live: &HashSet<String>,
    ) -> Result<Self, NetworkError> {
        let dir = data_root.join("network");
        std::fs::create_dir_all(&dir).map_err(io("create", &dir))?;
        let state_path = dir.join("state.json");
        let mut state: State = match std::fs::read(&state_path) {
            Ok(b) => serde_json::from_slice(&b).map_err(|source| NetworkError::State {
                path: state_path.clone(),
                source,
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(io("read", &state_path)(e)),
        };
        state.version = STATE_VERSION;
        let default_id = super::builtin_id(DEFAULT_NETWORK);
        let user: Vec<NetworkRecord> = state
            .networks
            .values()
            .filter(|n| !n.is_default())
            .cloned()
            .collect();
        let mut bridges: Vec<String> = user.iter().map(|n| n.bridge.clone()).collect();
        bridges.push(config.bridge_name.clone());
        let (routes, ours, host_mtu) = routes_and_bridges(bridges)?;
        let routed = foreign_routes(routes, &ours);
        let kept = state.networks.get(&default_id).map(|n| n.gateway_net());
        let gateway = match (config.bip, kept.or(state.bridge)) {
            (Some(bip), _) => bip,
            (None, Some(kept)) => kept,
            (None, None) => {
                let mut avoid = routed.clone();
                avoid.extend(user.iter().map(|n| n.subnet));
                let subnet = ipam::pick_subnet(&config.pool, &avoid)?;
                Ipv4Net::new(subnet.nth(1).unwrap_or(subnet.addr), subnet.prefix)
            }
        };
        if let Some(route) = routed
            .iter()
            .copied()
            .chain(user.iter().map(|n| n.subnet))
            .find(|r| r.overlaps(&gateway))
        {
            return Err(NetworkError::Overlap {
                subnet: gateway.network(),
                route,
            });
        }
        // The first version kept the default bridge's allocations at the top level.
        let v1_alloc = std::mem::take(&mut state.alloc);
        let alloc = match state.networks.get(&default_id) {
            Some(n) if n.gateway_net() == gateway => n.alloc.clone(),
            Some(_) => Allocations::default(), // the subnet changed: old ones are meaningless
            None if state.bridge == Some(gateway) => v1_alloc,
            None => Allocations::default(),
        };
        let default = NetworkRecord {
            id: default_id.clone(),
            name: DEFAULT_NETWORK.into(),
            bridge: config.bridge_name.clone(),
            subnet: gateway.network(),
            gateway: gateway.addr,
            ip_range: None,
            subnet_given: config.bip.is_some(),
            gateway_given: config.bip.is_some(),
            internal: false,
            attachable: false,
            labels: Default::default(),
            options: Default::default(),
            created: state
                .networks
                .get(&default_id)
                .map(|n| n.created.clone())
                .unwrap_or_else(now),
            alloc,
        };
        state.networks.insert(default_id, default);
        state.bridge = Some(gateway);
        let all: Vec<NetworkRecord> = state.networks.values().cloned().collect();
        let doomed = std::mem::take(&mut state.doomed_bridges);
        with_netlink(None, move |h| {
            Box::pin(async move {
                for name in &doomed {
                    link::delete(&h, name).await?;
                }
                for n in &all {
                    link::ensure_bridge(&h, &n.bridge, n.gateway_net()).await?;
                }
                Ok(())
            })
        })?;
        for n in state.networks.values() {
            route_localnet(&n.bridge)?;
        }
        if config.ip_forward {
            write_sysctl("/proc/sys/net/ipv4/ip_forward")?;
        }
        let mgr = Self {
            mtu: config.mtu.unwrap_or(host_mtu),
            netns_dir: exec_root.join("netns"),
            config,
            state_path,
            state: Mutex::new(state),
            held: Mutex::new(HashMap::new()),
        };
        mgr.save(&mgr.lock())?;
        mgr.repair(live)?;
        tracing::info!(bridge = %mgr.config.bridge_name, address = %gateway, mtu = mgr.mtu, "bridge network ready");
        Ok(mgr)
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn save(&self, state: &State) -> Result<(), NetworkError> {
        let data = serde_json::to_vec_pretty(state).unwrap_or_default();
        crate::store::write_atomic(&self.state_path, &data).map_err(io("write", &self.state_path))
    }

    /// Rewrites the engine's nftables table from the state.
    pub(super) fn apply_rules(&self, state: &State) -> Result<(), NetworkError> {
        let bridges: Vec<nft::BridgeRules> = state
            .networks
            .values()
            .map(|n| nft::BridgeRules {
                bridge: n.bridge.clone(),
                subnet: n.gateway_net(),
                masquerade: n.masquerade(self.config.ip_masq),
                internal: n.internal,
            })
            .collect();
        let rules: Vec<nft::PortRule> = state
            .all_endpoints()
            .flat_map(|ep| {
                ep.ports.iter().map(|p| nft::PortRule {
                    proto: p.proto.clone(),
                    host_ip: p.host_ip,
                    host_port: p.host_port,
                    addr: ep.ip,
                    port: p.container_port,
                })
            })
            .collect();
        nft::apply(&nft::render(&self.config.table, &bridges, &rules))
    }

    /// Start-up: drops endpoints of unknown containers, stray netns files and veths on
    /// any of our bridges, re-reserves the ports of the others and rewrites the rules.
    fn repair(&self, live: &HashSet<String>) -> Result<(), NetworkError> {
        let stale: Vec<String> = {
            let st = self.lock();
            st.endpoints
                .keys()
                .filter(|id| !live.contains(*id))
                .cloned()
                .collect()
        };
        for id in stale {
            tracing::info!(%id, "removing the network endpoints of a container that no longer exists");
            self.detach(&id)?;
        }
        let st = self.lock();
        if let Ok(entries) = std::fs::read_dir(&self.netns_dir) {
            for e in entries.flatten() {
                let id = e.file_name().to_string_lossy().into_owned();
                if !st.endpoints.contains_key(&id) {
                    netns::remove(&e.path())?;
                }
            }
        }
        let known: HashSet<String> = st.all_endpoints().map(|e| e.host_veth.clone()).collect();
        let bridges: Vec<String> = st.networks.values().map(|n| n.bridge.clone()).collect();
        with_netlink(None, move |h| {
            Box::pin(async move {
                for name in &bridges {
                    let Some(br) = link::index_of(&h, name).await? else {
                        continue;
                    };
                    for port in link::ports_of(&h, br).await? {
                        if !known.contains(&port) {
                            tracing::info!(veth = %port, bridge = %name, "removing a leftover veth");
                            link::delete(&h, &port).await?;
                        }
                    }
                }
                Ok(())
            })
        })?;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for (id, eps) in &st.endpoints {
            let mut fds = Vec::new();
            for p in eps.iter().flat_map(|e| &e.ports) {
                let mut p = p.clone();
                match ports::reserve(&mut p) {
                    Ok(fd) => fds.push(fd),
                    Err(e) => {
                        tracing::warn!(%id, error = %e, "cannot re-reserve a published port")
                    }
                }
            }
            held.insert(id.clone(), fds);
        }
        self.apply_rules(&st)
    }

    /// The container's first endpoint (its `eth0` on the network it was created on).
    pub fn endpoint(&self, id: &str) -> Option<Endpoint> {
        self.lock()
            .endpoints
            .get(id)
            .and_then(|eps| eps.first().cloned())
    }

    /// Every endpoint of a container, in connect order.
    pub fn endpoints_of(&self, id: &str) -> Vec<Endpoint> {
        self.lock().endpoints.get(id).cloned().unwrap_or_default()
    }

    /// Whether the container has a namespace of its own made by the engine.
    pub fn has_sandbox(&self, id: &str) -> bool {
        self.lock().endpoints.contains_key(id)
    }

    /// Every endpoint on every network.
    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.lock().all_endpoints().cloned().collect()
    }

    /// Every network, the default bridge included.
    pub fn networks(&self) -> Vec<NetworkRecord> {
        self.lock().networks.values().cloned().collect()
    }

    /// A network by name, full ID or unique ID prefix.
    pub fn network(&self, reference: &str) -> Result<NetworkRecord, NetworkError> {
        self.lock().find(reference).cloned()
    }

    /// The default bridge's address and prefix.
    pub fn gateway(&self) -> Ipv4Net {
        let st = self.lock();
        st.networks
            .get(&super::builtin_id(DEFAULT_NETWORK))
            .map(|n| n.gateway_net())
            .or(st.bridge)
            .unwrap_or_else(|| Ipv4Net::new(std::net::Ipv4Addr::UNSPECIFIED, 0))
    }

    pub fn bridge_name(&self) -> &str {
        &self.config.bridge_name
    }

    /// Clean shutdown: with no container left, every bridge (made again at the next
    /// start from the state) and the rules go too, so a stopped engine leaves nothing
    /// behind; otherwise they stay for the running containers (and the next start).
    pub fn shutdown(&self) -> Result<(), NetworkError> {
        let st = self.lock();
        if !st.endpoints.is_empty() {
            return Ok(());
        }
        nft::apply(&nft::render_delete(&self.config.table))?;
        let bridges: Vec<String> = st.networks.values().map(|n| n.bridge.clone()).collect();
        drop(st);
        with_netlink(None, move |h| {
            Box::pin(async move {
                for name in &bridges {
                    link::delete(&h, name).await?;
                }
                Ok(())
            })
        })?;
        tracing::info!(bridge = %self.config.bridge_name, "no containers left: bridges and rules removed");
        Ok(())
    }
}

pub(super) fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)
}
