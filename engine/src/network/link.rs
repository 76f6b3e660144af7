//! Interfaces, addresses and routes through rtnetlink (never by running `ip`). Every
//! function takes a handle made by `netns::with_netlink` in the namespace it acts on.

use std::net::{IpAddr, Ipv4Addr};
use std::os::fd::AsRawFd;

use futures::TryStreamExt;
use netlink_packet_route::link::LinkAttribute;
use netlink_packet_route::link::{InfoData, InfoKind, InfoVeth};
use netlink_packet_route::route::{RouteAddress, RouteAttribute, RouteHeader, RouteType};
use rtnetlink::{
    Handle, LinkBridge, LinkBridgePort, LinkMessageBuilder, LinkUnspec, LinkVeth,
    RouteMessageBuilder,
};

use super::ipam::Ipv4Net;
use super::NetworkError;

const EEXIST: i32 = 17;
const ENODEV: i32 = 19;

fn errno(e: &rtnetlink::Error) -> Option<i32> {
    match e {
        rtnetlink::Error::NetlinkError(m) => m.code.map(|c| -c.get()),
        _ => None,
    }
}

fn nl(op: &'static str, name: &str) -> impl FnOnce(rtnetlink::Error) -> NetworkError {
    let name = name.to_string();
    move |source| NetworkError::Netlink { op, name, source }
}

/// The index of the interface called `name`, or `None` when there is none.
pub async fn index_of(h: &Handle, name: &str) -> Result<Option<u32>, NetworkError> {
    let mut links = h.link().get().match_name(name.to_string()).execute();
    match links.try_next().await {
        Ok(l) => Ok(l.map(|l| l.header.index)),
        Err(e) if errno(&e) == Some(ENODEV) => Ok(None),
        Err(e) => Err(nl("look up", name)(e)),
    }
}

async fn mtu_of(h: &Handle, index: u32) -> Result<Option<u32>, NetworkError> {
    let mut links = h.link().get().match_index(index).execute();
    let link = links
        .try_next()
        .await
        .map_err(nl("look up", "default route interface"))?;
    Ok(link.and_then(|l| {
        l.attributes.into_iter().find_map(|a| match a {
            LinkAttribute::Mtu(m) => Some(m),
            _ => None,
        })
    }))
}

/// IPv4 routes of the main table as (network, output interface).
pub async fn routes(h: &Handle) -> Result<Vec<(Ipv4Net, Option<u32>)>, NetworkError> {
    let filter = RouteMessageBuilder::<Ipv4Addr>::new().build();
    let mut stream = h.route().get(filter).execute();
    let mut out = Vec::new();
    while let Some(r) = stream.try_next().await.map_err(nl("list routes", "main"))? {
        if r.header.table != RouteHeader::RT_TABLE_MAIN || r.header.kind != RouteType::Unicast {
            continue;
        }
        let mut dst = Ipv4Addr::UNSPECIFIED;
        let mut oif = None;
        for a in &r.attributes {
            match a {
                RouteAttribute::Destination(RouteAddress::Inet(ip)) => dst = *ip,
                RouteAttribute::Oif(i) => oif = Some(*i),
                _ => {}
            }
        }
        out.push((Ipv4Net::new(dst, r.header.destination_prefix_length), oif));
    }
    Ok(out)
}

/// The MTU of the interface the default route leaves by (1500 when there is none), which
/// is what dockerd gives its bridge unless told otherwise.
pub async fn host_mtu(h: &Handle) -> Result<u32, NetworkError> {
    let default = routes(h)
        .await?
        .into_iter()
        .find(|(n, _)| n.prefix == 0)
        .and_then(|(_, oif)| oif);
    Ok(match default {
        Some(i) => mtu_of(h, i).await?.unwrap_or(1500),
        None => 1500,
    })
}

/// Creates the bridge (or finds it after a restart), gives it the gateway address and
/// brings it up; returns its index.
pub async fn ensure_bridge(h: &Handle, name: &str, gateway: Ipv4Net) -> Result<u32, NetworkError> {
    let index = match index_of(h, name).await? {
        Some(i) => i,
        None => {
            h.link()
                .add(LinkBridge::new(name).build())
                .execute()
                .await
                .map_err(nl("create bridge", name))?;
            index_of(h, name)
                .await?
                .ok_or_else(|| NetworkError::Vanished { name: name.into() })?
        }
    };
    match h
        .address()
        .add(index, IpAddr::V4(gateway.addr), gateway.prefix)
        .execute()
        .await
    {
        Err(e) if errno(&e) != Some(EEXIST) => return Err(nl("add address to", name)(e)),
        _ => {}
    }
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("bring up", name))?;
    Ok(index)
}

/// The container side of a veth pair: its name, MAC and MTU and the namespace it is
/// born in.
pub struct Peer<'a> {
    pub ifname: &'a str,
    pub mac: [u8; 6],
    pub netns: &'a std::fs::File,
}

/// Creates a veth pair whose host end `host` is plugged into the bridge and up, and whose
/// other end is created directly inside the container's namespace under its final name
/// and MAC, all in one RTM_NEWLINK (the peer's own link message carries IFLA_NET_NS_FD).
/// Creating the peer in the host namespace and moving it costs a network-namespace move
/// (an RCU grace period, ~15 ms here) and a rename. Returns the host end's index. If a
/// step after the creation fails, the pair it created is deleted again (by index: the
/// name may belong to someone else by then), so an error means nothing of this call is
/// left.
pub async fn create_veth(
    h: &Handle,
    host: &str,
    peer: &Peer<'_>,
    mtu: u32,
    bridge: u32,
) -> Result<u32, NetworkError> {
    let peer_msg = LinkMessageBuilder::<LinkUnspec>::new()
        .name(peer.ifname.to_string())
        .mtu(mtu)
        .address(peer.mac.to_vec())
        .setns_by_fd(peer.netns.as_raw_fd())
        .build();
    let msg = LinkMessageBuilder::<LinkVeth>::new_with_info_kind(InfoKind::Veth)
        .name(host.to_string())
        .mtu(mtu)
        .controller(bridge)
        .up()
        .set_info_data(InfoData::Veth(InfoVeth::Peer(peer_msg)))
        .build();
    h.link()
        .add(msg)
        .execute()
        .await
        .map_err(nl("create veth", host))?;
    // The add succeeded, so `host` is the link this call just made.
    let host_index = index_of(h, host)
        .await?
        .ok_or_else(|| NetworkError::Vanished { name: host.into() })?;
    // A container reaching its own published port through the host's address is DNATed
    // back to itself: the reply path leaves the bridge by the port it came in on, which
    // a bridge only allows in hairpin mode (dockerd sets it without the userland proxy;
    // with br_netfilter the DNATed frame is bridged, not routed). Port settings need
    // RTM_NEWLINK on an existing port, hence set_port after the creation.
    let hairpin = h
        .link()
        .set_port(LinkBridgePort::new(host_index).hairpin(true).build())
        .execute()
        .await
        .map_err(nl("enable hairpin mode on", host));
    if let Err(e) = hairpin {
        // Deleting one end of a veth pair deletes the other too.
        if let Err(undo) = delete_index(h, host_index, host).await {
            tracing::warn!(veth = host, error = %undo, "deleting a half-made veth pair failed");
        }
        return Err(e);
    }
    Ok(host_index)
}

/// Inside the container's namespace, once its end of the veth (`ifname`, named and
/// addressed at creation) exists: loopback comes up, the interface gets its address and
/// comes up, and with `gateway` the default route goes through it.
pub async fn configure_container(
    h: &Handle,
    ifname: &str,
    addr: Ipv4Net,
    gateway: Option<Ipv4Addr>,
) -> Result<(), NetworkError> {
    if let Some(lo) = index_of(h, "lo").await? {
        h.link()
            .set(LinkUnspec::new_with_index(lo).up().build())
            .execute()
            .await
            .map_err(nl("bring up", "lo"))?;
    }
    let index = index_of(h, ifname)
        .await?
        .ok_or_else(|| NetworkError::Vanished {
            name: ifname.into(),
        })?;
    h.address()
        .add(index, IpAddr::V4(addr.addr), addr.prefix)
        .execute()
        .await
        .map_err(nl("add address to", ifname))?;
    h.link()
        .set(LinkUnspec::new_with_index(index).up().build())
        .execute()
        .await
        .map_err(nl("bring up", ifname))?;
    if let Some(gw) = gateway {
        add_route_via(h, index, gw).await?;
    }
    Ok(())
}

/// Adds the default route through `gateway` on `ifname` (inside a container).
pub async fn add_default_route(
    h: &Handle,
    ifname: &str,
    gateway: Ipv4Addr,
) -> Result<(), NetworkError> {
    let index = index_of(h, ifname)
        .await?
        .ok_or_else(|| NetworkError::Vanished {
            name: ifname.into(),
        })?;
    add_route_via(h, index, gateway).await
}

async fn add_route_via(h: &Handle, index: u32, gateway: Ipv4Addr) -> Result<(), NetworkError> {
    let route = RouteMessageBuilder::<Ipv4Addr>::new()
        .gateway(gateway)
        .output_interface(index)
        .build();
    h.route()
        .add(route)
        .execute()
        .await
        .map_err(nl("add default route via", &gateway.to_string()))?;
    Ok(())
}

/// Deletes an interface by name; one that is already gone is fine.
pub async fn delete(h: &Handle, name: &str) -> Result<(), NetworkError> {
    let Some(index) = index_of(h, name).await? else {
        return Ok(());
    };
    match h.link().del(index).execute().await {
        Err(e) if errno(&e) != Some(ENODEV) => Err(nl("delete", name)(e)),
        _ => Ok(()),
    }
}

/// Deletes the interface with index `index`, but only while it still is called `name`:
/// an undo must not remove an interface that merely took over the index or name. One
/// that is already gone is fine.
pub async fn delete_index(h: &Handle, index: u32, name: &str) -> Result<(), NetworkError> {
    let mut links = h.link().get().match_index(index).execute();
    let link = match links.try_next().await {
        Ok(Some(l)) => l,
        Ok(None) => return Ok(()),
        Err(e) if errno(&e) == Some(ENODEV) => return Ok(()),
        Err(e) => return Err(nl("look up", name)(e)),
    };
    let current = link.attributes.iter().find_map(|a| match a {
        LinkAttribute::IfName(n) => Some(n.as_str()),
        _ => None,
    });
    if current != Some(name) {
        tracing::warn!(index, expected = name, found = ?current, "interface index now names another link; leaving it");
        return Ok(());
    }
    match h.link().del(index).execute().await {
        Err(e) if errno(&e) != Some(ENODEV) => Err(nl("delete", name)(e)),
        _ => Ok(()),
    }
}

/// Names of every interface in the calling thread's namespace, from
/// /proc/thread-self/net/dev (which follows the reader's namespace, unlike /sys/class/net):
/// no netlink connection, so no thread and runtime for it.
pub fn names_here() -> Result<Vec<String>, NetworkError> {
    let path = std::path::Path::new("/proc/thread-self/net/dev");
    let text = std::fs::read_to_string(path).map_err(|source| NetworkError::Io {
        op: "read",
        path: path.to_path_buf(),
        source,
    })?;
    Ok(parse_net_dev(&text))
}

/// Interface names from the text of /proc/net/dev (two header lines, then `name: stats`;
/// a name cannot contain `:`).
fn parse_net_dev(text: &str) -> Vec<String> {
    text.lines()
        .skip(2)
        .filter_map(|l| l.split_once(':').map(|(n, _)| n.trim().to_string()))
        .filter(|n| !n.is_empty())
        .collect()
}

/// Names of the interfaces plugged into the bridge with index `bridge`.
pub async fn ports_of(h: &Handle, bridge: u32) -> Result<Vec<String>, NetworkError> {
    let mut links = h.link().get().execute();
    let mut out = Vec::new();
    while let Some(l) = links.try_next().await.map_err(nl("list", "links"))? {
        let attrs = &l.attributes;
        if attrs
            .iter()
            .any(|a| matches!(a, LinkAttribute::Controller(c) if *c == bridge))
        {
            if let Some(name) = attrs.iter().find_map(|a| match a {
                LinkAttribute::IfName(n) => Some(n.clone()),
                _ => None,
            }) {
                out.push(name);
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    #[test]
    fn net_dev_names() {
        let text = "Inter-|   Receive\n face |bytes\n    lo: 1 2 3\nvethabc1234:  0 0\n  eth0: 5\n";
        assert_eq!(super::parse_net_dev(text), ["lo", "vethabc1234", "eth0"]);
    }
}
