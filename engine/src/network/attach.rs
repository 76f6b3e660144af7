//! Containers on networks: the sandbox (persistent namespace) made at create, one
//! endpoint per network (create, `network connect`), removed by `network disconnect` or
//! with the container.

use std::collections::HashSet;
use std::fs::File;

use serde_json::{Map, Value};

use super::ipam::{self, Ipv4Net};
use super::manager::{io, Manager};
use super::netns::with_netlink;
use super::netns::Enter;
use super::ports;
use super::request::{endpoints_for_create, EndpointRequest};
use super::state::{choose_veth_name, Endpoint};
use super::{link, netns, NetworkError};

/// Which host veth a teardown removes.
enum HostVeth {
    /// The endpoint's, by its persisted name: it was chosen free and is the endpoint's.
    Named,
    /// Undo of a failed attach: only the link this attempt made, if it made one.
    Created(Option<u32>),
}

impl Manager {
    /// Connects a new container to the networks it asks for (`mode` is its
    /// `HostConfig.NetworkMode`, `networking` its `NetworkingConfig`). Returns its
    /// endpoints, the first one (`eth0`, with the published ports) first; none for
    /// modes that need no endpoint (`host`, `none`, `container:`). `name` is the
    /// container's name, for error messages. On error nothing is left.
    pub fn attach(
        &self,
        id: &str,
        name: &str,
        mode: &str,
        host_extra: &Map<String, Value>,
        config_extra: &Map<String, Value>,
        networking: Option<&Value>,
    ) -> Result<Vec<Endpoint>, NetworkError> {
        match mode {
            "host" | "none" => return Ok(Vec::new()),
            m if m.starts_with("container:") => return Ok(Vec::new()),
            _ => {}
        }
        let wanted = endpoints_for_create(mode, networking, config_extra)?;
        {
            // Unknown networks fail before anything is made: with 400, not dockerd's 404
            // (dockerd only finds out at start), since on a 404 from create the docker
            // CLI tries to pull the image and then reports that instead.
            let st = self.lock();
            for (net, _) in &wanted {
                st.find(net).map_err(|e| match e {
                    NetworkError::NotFound { .. } => NetworkError::invalid(e.to_string()),
                    other => other,
                })?;
            }
        }
        let mut bindings = ports::requested(host_extra, config_extra)?;
        let mut fds = Vec::new();
        for p in &mut bindings {
            fds.push(ports::reserve(p)?);
        }
        // Not persisted yet: the first endpoint's save below carries it. A crash before
        // that leaves at most a namespace file without an endpoint, which start-up
        // unmounts (manager::repair).
        self.lock().endpoints.insert(id.into(), Vec::new());
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(id.into(), fds);
        let made = self.attach_all(id, name, wanted, bindings);
        if let Err(e) = &made {
            tracing::warn!(%id, error = %e, "network setup failed; undoing it");
            if let Err(undo) = self.detach(id) {
                tracing::warn!(%id, error = %undo, "undoing the network setup failed too");
            }
        }
        made
    }

    fn attach_all(
        &self,
        id: &str,
        name: &str,
        wanted: Vec<(String, EndpointRequest)>,
        mut bindings: Vec<ports::PortBinding>,
    ) -> Result<Vec<Endpoint>, NetworkError> {
        let mut out = Vec::new();
        for (net, req) in wanted {
            let ports = std::mem::take(&mut bindings);
            // The namespace is made with the first endpoint, after its record is saved.
            let enter = if out.is_empty() {
                Enter::Create
            } else {
                Enter::Join
            };
            out.push(self.add_endpoint(id, name, &net, &req, ports, enter)?);
        }
        Ok(out)
    }

    /// `network connect`: a new endpoint for a container that has a sandbox (running or
    /// not). `name` is the container's name, for error messages.
    pub fn connect(
        &self,
        id: &str,
        name: &str,
        network: &str,
        req: &EndpointRequest,
    ) -> Result<Endpoint, NetworkError> {
        self.add_endpoint(id, name, network, req, Vec::new(), Enter::Join)
    }

    /// Persists, then plumbs, one endpoint; on error nothing of it is left.
    fn add_endpoint(
        &self,
        id: &str,
        name: &str,
        network: &str,
        req: &EndpointRequest,
        ports: Vec<ports::PortBinding>,
        enter: Enter,
    ) -> Result<Endpoint, NetworkError> {
        // Interfaces that exist now; names of endpoints being attached concurrently
        // (persisted, not yet created) are added under the lock below.
        let mut taken: HashSet<String> = link::names_here()?.into_iter().collect();
        let (ep, bridge, mtu) = {
            let mut st = self.lock();
            let net = st.find(network)?.clone();
            if net.is_default() && req.ip.is_some() {
                return Err(NetworkError::invalid(
                    "user specified IP address is supported on user defined networks only",
                ));
            }
            if net.is_default() && !req.aliases.is_empty() {
                return Err(NetworkError::invalid(
                    "network-scoped alias is supported only for containers in user defined networks",
                ));
            }
            if req.ip.is_some() && !net.subnet_given {
                return Err(NetworkError::invalid(
                    "user specified IP address is supported only when connecting to networks with user configured subnets",
                ));
            }
            let Some(existing) = st.endpoints.get(id) else {
                return Err(NetworkError::invalid(format!(
                    "container {name} has no network namespace of its own to connect"
                )));
            };
            if existing.iter().any(|e| e.network_id == net.id) {
                return Err(NetworkError::AlreadyConnected {
                    container: name.into(),
                    network: net.name,
                });
            }
            let used: HashSet<&str> = existing.iter().map(|e| e.ifname.as_str()).collect();
            let ifname = (0..)
                .map(|n| format!("eth{n}"))
                .find(|n| !used.contains(n.as_str()))
                .unwrap_or_default();
            let default_route = !net.internal && !existing.iter().any(|e| e.default_route);
            taken.extend(st.veth_names());
            let host_veth =
                choose_veth_name(id, &taken).ok_or(NetworkError::NoVethName { id: id.into() })?;
            let rec = st
                .networks
                .get_mut(&net.id)
                .ok_or_else(|| NetworkError::NotFound {
                    reference: network.into(),
                })?;
            let ip = match req.ip {
                Some(ip) => rec
                    .alloc
                    .reserve(net.subnet, net.gateway, ip)
                    .map(|()| ip)
                    .map_err(|e| match e {
                        ipam::IpamError::InUse { ip } => NetworkError::AddressInUse { ip },
                        other => {
                            NetworkError::invalid(format!("invalid endpoint settings:\n{other}"))
                        }
                    })?,
                None => rec
                    .alloc
                    .allocate_in(net.subnet, net.ip_range, net.gateway)?,
            };
            let ep = Endpoint {
                container_id: id.into(),
                network_id: net.id.clone(),
                ifname,
                netns: self.netns_dir.join(id),
                ip,
                ip_given: req.ip.is_some(),
                prefix: net.subnet.prefix,
                gateway: net.gateway,
                mac: ipam::mac_string(req.mac.unwrap_or_else(|| ipam::mac_for(ip))),
                host_veth,
                ports,
                aliases: req.aliases.clone(),
                default_route,
            };
            st.endpoints.entry(id.into()).or_default().push(ep.clone());
            if let Err(e) = self.save(&st) {
                Self::forget(&mut st, &ep);
                return Err(e);
            }
            (ep, net.bridge.clone(), net.mtu().unwrap_or(self.mtu))
        };
        let mut created = None;
        if let Err(e) = self.plumb(&ep, &bridge, mtu, enter, &mut created) {
            tracing::warn!(%id, network = %network, error = %e, "endpoint setup failed; undoing it");
            // Only the veth this attempt made goes (by its index): if creating it failed,
            // an interface of that name belongs to someone else.
            if let Err(undo) = self.remove_endpoint(&ep, HostVeth::Created(created), true) {
                tracing::warn!(%id, error = %undo, "undoing the endpoint setup failed too");
            }
            return Err(e);
        }
        tracing::info!(%id, network = %network, ip = %ep.ip, ifname = %ep.ifname, veth = %ep.host_veth, "container connected");
        Ok(ep)
    }

    fn forget(st: &mut super::state::State, ep: &Endpoint) {
        if let Some(list) = st.endpoints.get_mut(&ep.container_id) {
            list.retain(|e| e.network_id != ep.network_id);
        }
        if let Some(n) = st.networks.get_mut(&ep.network_id) {
            n.alloc.release(ep.ip);
        }
    }

    /// Makes the veth pair into the bridge, the container side's address and route, and
    /// the rules; with `Enter::Create` the namespace too. `created` gets the host veth's
    /// index once it exists.
    fn plumb(
        &self,
        ep: &Endpoint,
        bridge: &str,
        mtu: u32,
        enter: Enter,
        created: &mut Option<u32>,
    ) -> Result<(), NetworkError> {
        let (host, bridge) = (ep.host_veth.clone(), bridge.to_string());
        let (ifname, mac) = (ep.ifname.clone(), parse_mac(&ep.mac));
        let addr = Ipv4Net::new(ep.ip, ep.prefix);
        let gw = ep.default_route.then_some(ep.gateway);
        let path = ep.netns.clone();
        let made = netns::with_host_and_netns(&ep.netns, enter, move |h, ns| {
            Box::pin(async move {
                let ns_file = File::open(&path).map_err(io("open", &path))?;
                let br = link::index_of(&h, &bridge)
                    .await?
                    .ok_or(NetworkError::Vanished { name: bridge })?;
                let peer = link::Peer {
                    ifname: &ifname,
                    mac,
                    netns: &ns_file,
                };
                let index = link::create_veth(&h, &host, &peer, mtu, br).await?;
                let configured = link::configure_container(&ns, &ifname, addr, gw).await;
                Ok((index, configured))
            })
        })?;
        *created = Some(made.0);
        made.1?;
        self.apply_rules(&self.lock())
    }

    /// `network disconnect`: removes the container's endpoint on `network`.
    pub fn disconnect(&self, id: &str, name: &str, network: &str) -> Result<(), NetworkError> {
        let ep = {
            let st = self.lock();
            let net = st.find(network)?;
            st.endpoints
                .get(id)
                .and_then(|eps| eps.iter().find(|e| e.network_id == net.id))
                .cloned()
                .ok_or_else(|| NetworkError::NotConnected {
                    container: name.into(),
                    network: net.name.clone(),
                })?
        };
        self.remove_endpoint(&ep, HostVeth::Named, true)
    }

    /// Deletes an endpoint's veth (its peer in the container goes with it), releases its
    /// address and rewrites the rules. When it carried the default route, the next
    /// endpoint on a non-internal network takes it over, as with dockerd. Without `save`
    /// the state file is left to the caller (a removal saves once at its end; until then
    /// the file still names the endpoint, so a crash midway is finished at start-up).
    fn remove_endpoint(
        &self,
        ep: &Endpoint,
        veth: HostVeth,
        save: bool,
    ) -> Result<(), NetworkError> {
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
        let mut st = self.lock();
        Self::forget(&mut st, ep);
        let mut next = None;
        if ep.default_route {
            let internal: HashSet<String> = st
                .networks
                .values()
                .filter(|n| n.internal)
                .map(|n| n.id.clone())
                .collect();
            if let Some(other) = st
                .endpoints
                .get_mut(&ep.container_id)
                .and_then(|l| l.iter_mut().find(|e| !internal.contains(&e.network_id)))
            {
                other.default_route = true;
                next = Some(other.clone());
            }
        }
        if save {
            self.save(&st)?;
        }
        self.apply_rules(&st)?;
        drop(st);
        if let Some(other) = next {
            let (ifname, gw) = (other.ifname.clone(), other.gateway);
            let moved = with_netlink(Some(other.netns.clone()), move |h| {
                Box::pin(async move { link::add_default_route(&h, &ifname, gw).await })
            });
            if let Err(e) = moved {
                tracing::warn!(id = %ep.container_id, error = %e, "moving the default route failed");
            }
        }
        tracing::info!(id = %ep.container_id, network = %ep.network_id, "container disconnected");
        Ok(())
    }

    /// Removes everything of a container's networking: every endpoint, the namespace,
    /// the port sockets. Each step tolerates "already gone" so an interrupted removal can
    /// be finished later. A container without any is fine.
    pub fn detach(&self, id: &str) -> Result<(), NetworkError> {
        let Some(eps) = self.lock().endpoints.get(id).cloned() else {
            return Ok(());
        };
        // Last first, so no default route is moved onto an endpoint about to go too.
        for ep in eps.iter().rev() {
            self.remove_endpoint(ep, HostVeth::Named, false)?;
        }
        netns::remove(&self.netns_dir.join(id))?;
        let mut st = self.lock();
        st.endpoints.remove(id);
        self.save(&st)?;
        drop(st);
        self.held
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .remove(id);
        tracing::info!(%id, "container networking removed");
        Ok(())
    }
}

fn parse_mac(s: &str) -> [u8; 6] {
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(s.split(':')) {
        *b = u8::from_str_radix(p, 16).unwrap_or(0);
    }
    mac
}

#[cfg(test)]
mod tests {
    use std::collections::HashSet;
    use std::net::Ipv4Addr;

    use serde_json::Map;

    use super::super::ipam::Ipv4Net;
    use super::super::{link, Manager, NetworkConfig};

    #[test]
    fn mac_strings_round_trip() {
        assert_eq!(
            super::parse_mac("02:42:0a:01:00:ff"),
            [2, 0x42, 10, 1, 0, 0xff]
        );
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
            let names = || link::names_here().expect("list links");
            let none = Map::new();
            let checks = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                let a = mgr.attach("abcdef0000", "a", "bridge", &none, &none, None);
                let b = mgr.attach("abcdef0111", "b", "bridge", &none, &none, None);
                let (a, b) = (a.expect("first attach"), b.expect("second attach"));
                let (a, b) = (a[0].clone(), b[0].clone());
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
}
