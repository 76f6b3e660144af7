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

/// Longest interface name the kernel accepts (IFNAMSIZ - 1).
const IFNAME_MAX: usize = 15;
/// Hashed names tried after the id-prefix one before giving up.
const VETH_NAME_ATTEMPTS: u32 = 256;

/// The container side's name while it still is in the host namespace (it becomes `eth0`
/// in the container's), derived from the host side's so both are checked and persisted
/// as one.
fn peer_name(host_veth: &str) -> String {
    format!("vp{}", host_veth.strip_prefix("veth").unwrap_or(host_veth))
}

/// Picks the host veth name for container `id`: `veth` + the id's first 7 characters, as
/// before, unless that name or its peer's is in `taken` (ids sharing a prefix would
/// collide); then `veth` + 7 hex digits of a hash of the id and a counter. `None` when
/// every candidate is taken.
fn choose_veth_name(id: &str, taken: &HashSet<String>) -> Option<String> {
    use sha2::{Digest, Sha256};
    let free = |host: &String| {
        host.len() <= IFNAME_MAX && !taken.contains(host) && !taken.contains(&peer_name(host))
    };
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

/// Which host veth a teardown removes.
enum HostVeth {
    /// The endpoint's, by its persisted name: it was chosen free and is the endpoint's.
    Named,
    /// Undo of a failed attach: only the link this attempt made, if it made one.
    Created(Option<u32>),
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
        // Interfaces that exist now; names of endpoints being attached concurrently
        // (persisted, not yet created) are added under the lock below.
        let mut taken: HashSet<String> =
            with_netlink(None, |h| Box::pin(async move { link::names(&h).await }))?
                .into_iter()
                .collect();
        let ep = {
            let mut st = self.lock();
            for e in st.endpoints.values() {
                taken.insert(peer_name(&e.host_veth));
                taken.insert(e.host_veth.clone());
            }
            let host_veth =
                choose_veth_name(id, &taken).ok_or(NetworkError::NoVethName { id: id.into() })?;
            let ip = st.alloc.allocate(self.gateway, self.gateway.addr)?;
            let ep = Endpoint {
                container_id: id.into(),
                netns: self.netns_dir.join(id),
                ip,
                prefix: self.gateway.prefix,
                gateway: self.gateway.addr,
                mac: ipam::mac_string(ipam::mac_for(ip)),
                // Persisted before the veth exists, so repair and detach find it.
                host_veth,
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
        let mut created = None;
        if let Err(e) = self.plumb(&ep, &mut created) {
            tracing::warn!(%id, error = %e, "network setup failed; undoing it");
            // Only the veth this attempt made goes (by its index): if creating it failed,
            // an interface of that name belongs to someone else.
            if let Err(undo) = self.teardown(id, HostVeth::Created(created)) {
                tracing::warn!(%id, error = %undo, "undoing the network setup failed too");
            }
            return Err(e);
        }
        tracing::info!(%id, ip = %ep.ip, veth = %ep.host_veth, "container attached to the bridge");
        Ok(Some(ep))
    }

    /// Makes the namespace, the veth pair, the container side's address and the rules.
    /// `created` gets the host veth's index as soon as this call has made the pair.
    fn plumb(&self, ep: &Endpoint, created: &mut Option<u32>) -> Result<(), NetworkError> {
        netns::create(&ep.netns)?;
        let ns_file = File::open(&ep.netns).map_err(io("open", &ep.netns))?;
        let peer = peer_name(&ep.host_veth);
        let (host, bridge, mtu) = (
            ep.host_veth.clone(),
            self.config.bridge_name.clone(),
            self.mtu,
        );
        let peer2 = peer.clone();
        *created = Some(with_netlink(None, move |h| {
            Box::pin(async move {
                let br = link::index_of(&h, &bridge)
                    .await?
                    .ok_or(NetworkError::Vanished { name: bridge })?;
                link::create_veth(&h, &host, &peer2, mtu, br, &ns_file).await
            })
        })?);
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
        self.teardown(id, HostVeth::Named)
    }

    fn teardown(&self, id: &str, veth: HostVeth) -> Result<(), NetworkError> {
        let Some(ep) = self.lock().endpoints.get(id).cloned() else {
            return Ok(());
        };
        let name = ep.host_veth.clone();
        match veth {
            HostVeth::Named => with_netlink(None, move |h| {
                Box::pin(async move { link::delete(&h, &name).await })
            })?,
            HostVeth::Created(Some(index)) => with_netlink(None, move |h| {
                Box::pin(async move { link::delete_index(&h, index, &name).await })
            })?,
            HostVeth::Created(None) => {}
        }
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
            assert!(
                !taken.contains(&peer_name(&name)),
                "peer of {name} was taken"
            );
            taken.insert(name.clone());
            taken.insert(peer_name(&name));
            chosen.push(name);
        }
        assert_eq!(chosen[0], "vethabcdef0");
        assert_ne!(chosen[1], chosen[0]);
        assert_ne!(chosen[2], chosen[1]);
        assert!(chosen.iter().all(|n| n.starts_with("veth")));
    }

    #[test]
    fn a_taken_peer_name_also_moves_the_choice() {
        let name = choose_veth_name("abcdef0123", &set(&["vpabcdef0"])).unwrap();
        assert_ne!(name, "vethabcdef0");
        assert_ne!(peer_name(&name), "vpabcdef0");
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

    /// Root only. Runs in a thread with a network namespace of its own (the threads it
    /// spawns and the `nft` it runs inherit it), so no host interface or rule is touched
    /// and everything goes with the namespace. Before the fix the second attach failed on
    /// the name clash and its undo deleted the first container's veth.
    #[test]
    fn ids_sharing_a_prefix_get_separate_veths_and_detach_keeps_the_other() {
        if !nix::unistd::geteuid().is_root() {
            eprintln!("skipped: needs root");
            return;
        }
        std::thread::spawn(|| {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET).expect("unshare netns");
            let dir = tempfile::tempdir().expect("tempdir");
            let mut config = NetworkConfig::new("berth-t0".into(), "berth_test".into());
            config.bip = Some(Ipv4Net::new(Ipv4Addr::new(10, 251, 0, 1), 24));
            config.ip_forward = false;
            config.mtu = Some(1500);
            let mgr = Manager::open(
                config,
                &dir.path().join("data"),
                &dir.path().join("exec"),
                &HashSet::new(),
            )
            .expect("open");
            let names = || {
                with_netlink(None, |h| Box::pin(async move { link::names(&h).await }))
                    .expect("list links")
            };
            let none = Map::new();
            let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let a = mgr.attach("abcdef0000", "bridge", &none, &none);
                let b = mgr.attach("abcdef0111", "bridge", &none, &none);
                let (a, b) = (a.expect("first attach"), b.expect("second attach"));
                let (a, b) = (a.expect("an endpoint"), b.expect("an endpoint"));
                assert_ne!(a.host_veth, b.host_veth);
                let now = names();
                assert!(now.contains(&a.host_veth) && now.contains(&b.host_veth));
                mgr.detach("abcdef0111").expect("detach second");
                let now = names();
                assert!(now.contains(&a.host_veth), "first veth gone: {now:?}");
                assert!(!now.contains(&b.host_veth));
            }));
            // Always, so no netns bind mount outlives the test in the temp dir.
            let cleanup = ["abcdef0000", "abcdef0111"]
                .iter()
                .try_for_each(|id| mgr.detach(id))
                .and_then(|()| mgr.shutdown());
            if let Err(p) = checks {
                std::panic::resume_unwind(p);
            }
            cleanup.expect("cleanup");
        })
        .join()
        .expect("test thread");
    }

    #[test]
    fn peer_names_fit_and_follow_the_host_name() {
        assert_eq!(peer_name("vethabcdef0"), "vpabcdef0");
        assert!(peer_name("veth1234567").len() <= IFNAME_MAX);
    }
}
