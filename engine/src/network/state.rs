//! The network manager: persisted state (bridge, allocations, endpoints), attach at
//! container create, detach at remove, and start-up repair after a crash.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::fs::File;
use std::net::Ipv4Addr;
use std::os::fd::OwnedFd;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use super::ipam::{self, Allocations, Ipv4Net};
use super::netns::with_netlink;
use super::ports::{self, PortBinding};
use super::{link, netns, nft, NetworkConfig, NetworkError};

const STATE_VERSION: u32 = 1;

/// A container's place on the bridge. Persisted before any of it exists.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub container_id: String,
    pub netns: PathBuf,
    pub ip: Ipv4Addr,
    pub prefix: u8,
    pub gateway: Ipv4Addr,
    pub mac: String,
    pub host_veth: String,
    pub ports: Vec<PortBinding>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    version: u32,
    /// The default bridge's address (gateway) and prefix, kept across restarts.
    bridge: Option<Ipv4Net>,
    alloc: Allocations,
    endpoints: BTreeMap<String, Endpoint>,
}

pub struct Manager {
    config: NetworkConfig,
    state_path: PathBuf,
    netns_dir: PathBuf,
    gateway: Ipv4Net,
    mtu: u32,
    state: Mutex<State>,
    /// Sockets holding each container's host ports.
    held: Mutex<HashMap<String, Vec<OwnedFd>>>,
}

fn io(op: &'static str, path: &Path) -> impl FnOnce(std::io::Error) -> NetworkError {
    let path = path.to_path_buf();
    move |source| NetworkError::Io { op, path, source }
}

fn write_sysctl(path: &str) -> Result<(), NetworkError> {
    std::fs::write(path, "1").map_err(io("write", Path::new(path)))
}

impl Manager {
    /// Loads the state, sets up the bridge and the rules. `live` are the containers the
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
        let name = config.bridge_name.clone();
        let (routes, bridge_index, host_mtu) = with_netlink(None, |h| {
            Box::pin(async move {
                let routes = link::routes(&h).await?;
                let index = link::index_of(&h, &name).await?;
                Ok((routes, index, link::host_mtu(&h).await?))
            })
        })?;
        // Our own bridge's route is not a conflict; every other routed subnet is.
        let routed: Vec<Ipv4Net> = routes
            .into_iter()
            .filter(|(_, oif)| bridge_index.is_none() || *oif != bridge_index)
            .map(|(n, _)| n)
            .filter(|n| n.prefix > 0)
            .collect();
        let gateway = match (config.bip, state.bridge) {
            (Some(bip), _) => bip,
            (None, Some(kept)) => kept,
            (None, None) => {
                let subnet = ipam::pick_subnet(&config.pool, &routed)?;
                Ipv4Net::new(subnet.nth(1).unwrap_or(subnet.addr), subnet.prefix)
            }
        };
        if let Some(route) = routed.iter().find(|r| r.overlaps(&gateway)) {
            return Err(NetworkError::Overlap {
                subnet: gateway.network(),
                route: *route,
            });
        }
        if state.bridge.is_some_and(|b| b != gateway) {
            // The subnet changed: every old allocation is meaningless now.
            state.alloc = Allocations::default();
        }
        state.bridge = Some(gateway);
        let name = config.bridge_name.clone();
        with_netlink(None, move |h| {
            Box::pin(async move { link::ensure_bridge(&h, &name, gateway).await.map(|_| ()) })
        })?;
        // Lets DNATed 127.0.0.1 traffic be routed into the bridge (see nft.rs).
        write_sysctl(&format!(
            "/proc/sys/net/ipv4/conf/{}/route_localnet",
            config.bridge_name
        ))?;
        if config.ip_forward {
            write_sysctl("/proc/sys/net/ipv4/ip_forward")?;
        }
        let mgr = Self {
            mtu: config.mtu.unwrap_or(host_mtu),
            netns_dir: exec_root.join("netns"),
            config,
            state_path,
            gateway,
            state: Mutex::new(state),
            held: Mutex::new(HashMap::new()),
        };
        mgr.repair(live)?;
        tracing::info!(bridge = %mgr.config.bridge_name, address = %gateway, mtu = mgr.mtu, "bridge network ready");
        Ok(mgr)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn save(&self, state: &State) -> Result<(), NetworkError> {
        let data = serde_json::to_vec_pretty(state).unwrap_or_default();
        crate::store::write_atomic(&self.state_path, &data).map_err(io("write", &self.state_path))
    }

    /// Rewrites the engine's nftables table from the state.
    fn apply_rules(&self, state: &State) -> Result<(), NetworkError> {
        let bridges = [nft::BridgeRules {
            bridge: self.config.bridge_name.clone(),
            subnet: self.gateway,
            masquerade: self.config.ip_masq,
        }];
        let rules: Vec<nft::PortRule> = state
            .endpoints
            .values()
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

    /// Start-up: drops endpoints of unknown containers, stray netns files and veths,
    /// re-reserves the ports of the others and rewrites the rules.
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
            tracing::info!(%id, "removing the network endpoint of a container that no longer exists");
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
        let known: HashSet<String> = st.endpoints.values().map(|e| e.host_veth.clone()).collect();
        let name = self.config.bridge_name.clone();
        with_netlink(None, move |h| {
            Box::pin(async move {
                let Some(br) = link::index_of(&h, &name).await? else {
                    return Ok(());
                };
                for port in link::ports_of(&h, br).await? {
                    if !known.contains(&port) {
                        link::delete(&h, &port).await?;
                    }
                }
                Ok(())
            })
        })?;
        let mut held = self.held.lock().unwrap_or_else(|e| e.into_inner());
        for ep in st.endpoints.values() {
            let mut fds = Vec::new();
            for p in &ep.ports {
                let mut p = p.clone();
                match ports::reserve(&mut p) {
                    Ok(fd) => fds.push(fd),
                    Err(e) => {
                        tracing::warn!(id = %ep.container_id, error = %e, "cannot re-reserve a published port")
                    }
                }
            }
            held.insert(ep.container_id.clone(), fds);
        }
        self.apply_rules(&st)
    }

    /// Connects a new container to the bridge. Returns `None` for modes that need no
    /// endpoint (`host`, `none`: the runtime makes an empty namespace for `none`).
    pub fn attach(
        &self,
        id: &str,
        mode: &str,
        host_extra: &Map<String, Value>,
        config_extra: &Map<String, Value>,
    ) -> Result<Option<Endpoint>, NetworkError> {
        match mode {
            "" | "default" | "bridge" => {}
            "host" | "none" => return Ok(None),
            m if m.starts_with("container:") => return Ok(None),
            other => return Err(NetworkError::Mode { mode: other.into() }),
        }
        let mut wanted = ports::requested(host_extra, config_extra)?;
        let mut fds = Vec::new();
        for p in &mut wanted {
            fds.push(ports::reserve(p)?);
        }
        let ep = {
            let mut st = self.lock();
            let ip = st.alloc.allocate(self.gateway, self.gateway.addr)?;
            let ep = Endpoint {
                container_id: id.into(),
                netns: self.netns_dir.join(id),
                ip,
                prefix: self.gateway.prefix,
                gateway: self.gateway.addr,
                mac: ipam::mac_string(ipam::mac_for(ip)),
                host_veth: format!("veth{}", &id[..7.min(id.len())]),
                ports: wanted,
            };
            st.endpoints.insert(id.into(), ep.clone());
            if let Err(e) = self.save(&st) {
                st.endpoints.remove(id);
                st.alloc.release(ip);
                return Err(e);
            }
            ep
        };
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into(), fds);
        if let Err(e) = self.plumb(&ep) {
            tracing::warn!(%id, error = %e, "network setup failed; undoing it");
            if let Err(undo) = self.detach(id) {
                tracing::warn!(%id, error = %undo, "undoing the network setup failed too");
            }
            return Err(e);
        }
        tracing::info!(%id, ip = %ep.ip, veth = %ep.host_veth, "container attached to the bridge");
        Ok(Some(ep))
    }

    /// Makes the namespace, the veth pair, the container side's address and the rules.
    fn plumb(&self, ep: &Endpoint) -> Result<(), NetworkError> {
        netns::create(&ep.netns)?;
        let ns_file = File::open(&ep.netns).map_err(io("open", &ep.netns))?;
        let peer = format!("vp{}", &ep.container_id[..7.min(ep.container_id.len())]);
        let (host, bridge, mtu) = (
            ep.host_veth.clone(),
            self.config.bridge_name.clone(),
            self.mtu,
        );
        let peer2 = peer.clone();
        with_netlink(None, move |h| {
            Box::pin(async move {
                let br = link::index_of(&h, &bridge)
                    .await?
                    .ok_or(NetworkError::Vanished { name: bridge })?;
                link::create_veth(&h, &host, &peer2, mtu, br, &ns_file).await
            })
        })?;
        let mac = ipam::mac_for(ep.ip);
        let (addr, gw) = (Ipv4Net::new(ep.ip, ep.prefix), ep.gateway);
        with_netlink(Some(ep.netns.clone()), move |h| {
            Box::pin(async move { link::configure_container(&h, &peer, mac, addr, gw).await })
        })?;
        self.apply_rules(&self.lock())
    }

    /// Removes everything of a container's endpoint; each step tolerates "already gone"
    /// so an interrupted removal can be finished later. A missing endpoint is fine.
    pub fn detach(&self, id: &str) -> Result<(), NetworkError> {
        let Some(ep) = self.lock().endpoints.get(id).cloned() else {
            return Ok(());
        };
        let veth = ep.host_veth.clone();
        with_netlink(None, move |h| {
            Box::pin(async move { link::delete(&h, &veth).await })
        })?;
        netns::remove(&ep.netns)?;
        let mut st = self.lock();
        st.endpoints.remove(id);
        st.alloc.release(ep.ip);
        self.save(&st)?;
        self.apply_rules(&st)?;
        drop(st);
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        tracing::info!(%id, "container detached from the bridge");
        Ok(())
    }

    pub fn endpoint(&self, id: &str) -> Option<Endpoint> {
        self.lock().endpoints.get(id).cloned()
    }

    pub fn endpoints(&self) -> Vec<Endpoint> {
        self.lock().endpoints.values().cloned().collect()
    }

    /// The bridge's address and prefix.
    pub fn gateway(&self) -> Ipv4Net {
        self.gateway
    }

    pub fn bridge_name(&self) -> &str {
        &self.config.bridge_name
    }

    /// Clean shutdown: with no container left on the bridge, the bridge and the rules go
    /// too, so a stopped engine leaves nothing behind; otherwise they stay for the
    /// running containers (and the next start).
    pub fn shutdown(&self) -> Result<(), NetworkError> {
        if !self.lock().endpoints.is_empty() {
            return Ok(());
        }
        nft::apply(&nft::render_delete(&self.config.table))?;
        let name = self.config.bridge_name.clone();
        with_netlink(None, move |h| {
            Box::pin(async move { link::delete(&h, &name).await })
        })?;
        tracing::info!(bridge = %self.config.bridge_name, "no containers left: bridge and rules removed");
        Ok(())
    }
}
