//! User-defined bridge networks: `network create`, `rm` and `prune`. Each has its own
//! Linux bridge, subnet and allocations; isolation between them is in the rules.

use std::collections::HashSet;

use rand::RngCore;

use super::ipam::{self, Allocations, Ipv4Net};
use super::manager::{foreign_routes, now, route_localnet, routes_and_bridges, Manager};
use super::netns::with_netlink;
use super::request::{NetworkCreate, BRIDGE_NAME_OPTION};
use super::state::NetworkRecord;
use super::{link, NetworkError};

fn random_id() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

impl Manager {
    /// `network create`: checks the request against the other networks and the host,
    /// records the network, then makes its bridge. On error nothing is left.
    pub fn create_network(&self, req: &NetworkCreate) -> Result<NetworkRecord, NetworkError> {
        let id = random_id();
        let bridge = req
            .options
            .get(BRIDGE_NAME_OPTION)
            .cloned()
            .unwrap_or_else(|| format!("br-{}", &id[..12]));
        let mut bridges: Vec<String> = self.networks().into_iter().map(|n| n.bridge).collect();
        bridges.push(bridge.clone());
        let (routes, ours, _) = routes_and_bridges(bridges)?;
        let b2 = bridge.clone();
        if with_netlink(None, move |h| {
            Box::pin(async move { link::index_of(&h, &b2).await })
        })?
        .is_some()
        {
            return Err(NetworkError::BridgeTaken { name: bridge });
        }
        let routed = foreign_routes(routes, &ours);
        let rec = {
            let mut st = self.lock();
            if st.networks.values().any(|n| n.name == req.name) {
                return Err(NetworkError::Duplicate {
                    name: req.name.clone(),
                });
            }
            if st.networks.values().any(|n| n.bridge == bridge) {
                return Err(NetworkError::BridgeTaken { name: bridge });
            }
            let existing: Vec<Ipv4Net> = st.networks.values().map(|n| n.subnet).collect();
            let subnet = match req.subnet {
                Some(s) => {
                    if existing.iter().any(|e| e.overlaps(&s)) {
                        return Err(NetworkError::PoolOverlap);
                    }
                    s
                }
                None => {
                    let mut avoid = routed;
                    avoid.extend(existing);
                    ipam::pick_subnet(&self.config.pool, &avoid)
                        .map_err(|_| NetworkError::NoPool)?
                }
            };
            let gateway = match req.gateway {
                Some(g) => g,
                None => subnet.nth(1).ok_or(NetworkError::NoPool)?,
            };
            if gateway == subnet.network().addr || gateway == subnet.last() {
                return Err(NetworkError::invalid(format!(
                    "invalid gateway {gateway}: the network or broadcast address of {subnet}"
                )));
            }
            let rec = NetworkRecord {
                id: id.clone(),
                name: req.name.clone(),
                bridge: bridge.clone(),
                subnet,
                gateway,
                ip_range: req.ip_range,
                subnet_given: req.subnet.is_some(),
                gateway_given: req.gateway.is_some(),
                internal: req.internal,
                attachable: req.attachable,
                labels: req.labels.clone(),
                options: req.options.clone(),
                created: now(),
                alloc: Allocations::default(),
            };
            st.networks.insert(id.clone(), rec.clone());
            // Persisted before the bridge exists, so a crash leaves a record that the next
            // start completes (or `network rm` removes).
            if let Err(e) = self.save(&st) {
                st.networks.remove(&id);
                return Err(e);
            }
            rec
        };
        if let Err(e) = self.make_bridge(&rec) {
            tracing::warn!(network = %rec.name, error = %e, "network setup failed; undoing it");
            let mut st = self.lock();
            st.networks.remove(&id);
            let undo = self
                .save(&st)
                .and_then(|()| self.apply_rules(&st))
                .and_then(|()| {
                    let name = rec.bridge.clone();
                    with_netlink(None, move |h| {
                        Box::pin(async move { link::delete(&h, &name).await })
                    })
                });
            if let Err(undo) = undo {
                tracing::warn!(network = %rec.name, error = %undo, "undoing the network setup failed too");
            }
            return Err(e);
        }
        tracing::info!(network = %rec.name, id = %rec.id, bridge = %rec.bridge, subnet = %rec.subnet, "network created");
        Ok(rec)
    }

    fn make_bridge(&self, rec: &NetworkRecord) -> Result<(), NetworkError> {
        let (name, gw) = (rec.bridge.clone(), rec.gateway_net());
        with_netlink(None, move |h| {
            Box::pin(async move { link::ensure_bridge(&h, &name, gw).await.map(|_| ()) })
        })?;
        route_localnet(&rec.bridge)?;
        self.apply_rules(&self.lock())
    }

    /// `network rm`: refused for the default bridge and while a container is connected
    /// (`container_label` turns a container ID into dockerd's `name:"x" id:"y"`).
    pub fn remove_network(
        &self,
        reference: &str,
        container_label: &dyn Fn(&str) -> String,
    ) -> Result<NetworkRecord, NetworkError> {
        let rec = {
            let mut st = self.lock();
            let rec = st.find(reference)?.clone();
            if rec.is_default() {
                return Err(NetworkError::PreDefined {
                    name: rec.name,
                    action: "removed",
                });
            }
            let users: Vec<String> = st
                .all_endpoints()
                .filter(|e| e.network_id == rec.id)
                .map(|e| container_label(&e.container_id))
                .collect();
            if !users.is_empty() {
                return Err(NetworkError::InUse {
                    name: rec.name,
                    endpoints: users.join(", "),
                });
            }
            st.networks.remove(&rec.id);
            // Remembered until the bridge is gone: a crash in between leaves a name the
            // next start deletes.
            st.doomed_bridges.push(rec.bridge.clone());
            if let Err(e) = self.save(&st) {
                st.networks.insert(rec.id.clone(), rec);
                st.doomed_bridges.pop();
                return Err(e);
            }
            self.apply_rules(&st)?;
            rec
        };
        let name = rec.bridge.clone();
        with_netlink(None, move |h| {
            Box::pin(async move { link::delete(&h, &name).await })
        })?;
        let mut st = self.lock();
        st.doomed_bridges.retain(|b| *b != rec.bridge);
        self.save(&st)?;
        tracing::info!(network = %rec.name, id = %rec.id, "network removed");
        Ok(rec)
    }

    /// `network prune`: removes every user-defined network without endpoints that
    /// `selected` picks (the filters); returns the removed networks' names.
    pub fn prune_networks(
        &self,
        selected: &dyn Fn(&NetworkRecord) -> bool,
    ) -> Result<Vec<String>, NetworkError> {
        let unused: Vec<NetworkRecord> = {
            let st = self.lock();
            let used: HashSet<&str> = st.all_endpoints().map(|e| e.network_id.as_str()).collect();
            st.networks
                .values()
                .filter(|n| !n.is_default() && !used.contains(n.id.as_str()) && selected(n))
                .cloned()
                .collect()
        };
        let mut removed = Vec::new();
        for n in unused {
            match self.remove_network(&n.id, &|id| id.to_string()) {
                Ok(rec) => removed.push(rec.name),
                // Someone connected a container meanwhile: it stays, as with dockerd.
                Err(NetworkError::InUse { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(removed)
    }
}
