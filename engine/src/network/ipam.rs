//! IPv4 address management: subnets, the default pool and per-network allocations.
//! Pure code (no I/O) so every rule is unit-tested; the caller persists the result.

use std::collections::BTreeSet;
use std::fmt;
use std::net::Ipv4Addr;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum IpamError {
    #[error("invalid CIDR address: {value}")]
    Cidr { value: String },
    #[error("no available network: all of the default address pool overlaps with networks routed on the host")]
    PoolExhausted,
    #[error("no available IPv4 addresses on network {subnet}")]
    SubnetFull { subnet: Ipv4Net },
    #[error("no configured subnet or ip-range contain the IP address {ip}")]
    NotInSubnet { ip: Ipv4Addr },
    #[error("Address already in use")]
    InUse { ip: Ipv4Addr },
}

/// An IPv4 network (or, with host bits set, an address with its prefix, as `--bip` takes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub struct Ipv4Net {
    pub addr: Ipv4Addr,
    pub prefix: u8,
}

impl Ipv4Net {
    pub fn new(addr: Ipv4Addr, prefix: u8) -> Self {
        Self {
            addr,
            prefix: prefix.min(32),
        }
    }

    fn mask(&self) -> u32 {
        if self.prefix == 0 {
            0
        } else {
            u32::MAX << (32 - u32::from(self.prefix))
        }
    }

    /// The network with host bits cleared.
    pub fn network(&self) -> Ipv4Net {
        Self::new(
            Ipv4Addr::from(u32::from(self.addr) & self.mask()),
            self.prefix,
        )
    }

    pub fn contains(&self, ip: Ipv4Addr) -> bool {
        u32::from(ip) & self.mask() == u32::from(self.addr) & self.mask()
    }

    pub fn overlaps(&self, other: &Ipv4Net) -> bool {
        self.contains(other.network().addr) || other.contains(self.network().addr)
    }

    /// The `n`th address of the network (0 is the network address itself).
    pub fn nth(&self, n: u32) -> Option<Ipv4Addr> {
        let size = 1u64 << (32 - u32::from(self.prefix));
        (u64::from(n) < size).then(|| Ipv4Addr::from(u32::from(self.network().addr) + n))
    }

    fn size(&self) -> u64 {
        1u64 << (32 - u32::from(self.prefix))
    }

    /// The last (broadcast) address of the network.
    pub fn last(&self) -> Ipv4Addr {
        Ipv4Addr::from(u32::from(self.network().addr) | !self.mask())
    }
}

impl fmt::Display for Ipv4Net {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}/{}", self.addr, self.prefix)
    }
}

impl FromStr for Ipv4Net {
    type Err = IpamError;
    fn from_str(s: &str) -> Result<Self, IpamError> {
        let bad = || IpamError::Cidr { value: s.into() };
        let (a, p) = s.split_once('/').ok_or_else(bad)?;
        let addr: Ipv4Addr = a.parse().map_err(|_| bad())?;
        let prefix: u8 = p.parse().map_err(|_| bad())?;
        if prefix > 32 {
            return Err(bad());
        }
        Ok(Self { addr, prefix })
    }
}

impl TryFrom<String> for Ipv4Net {
    type Error = IpamError;
    fn try_from(s: String) -> Result<Self, IpamError> {
        s.parse()
    }
}

impl From<Ipv4Net> for String {
    fn from(n: Ipv4Net) -> String {
        n.to_string()
    }
}

/// dockerd's default local pools: 172.17-31.0.0/16, then 192.168.0-240.0/20.
pub fn default_pool() -> Vec<Ipv4Net> {
    let mut out: Vec<Ipv4Net> = (17..=31)
        .map(|b| Ipv4Net::new(Ipv4Addr::new(172, b, 0, 0), 16))
        .collect();
    out.extend((0..16).map(|i| Ipv4Net::new(Ipv4Addr::new(192, 168, i * 16, 0), 20)));
    out
}

/// The first pool subnet that overlaps none of `routed` (the host's routes, without our
/// own bridges' routes, and never the default route).
pub fn pick_subnet(pool: &[Ipv4Net], routed: &[Ipv4Net]) -> Result<Ipv4Net, IpamError> {
    pool.iter()
        .copied()
        .find(|s| !routed.iter().any(|r| r.prefix > 0 && r.overlaps(s)))
        .ok_or(IpamError::PoolExhausted)
}

/// Allocations of one network: the gateway plus every address handed to an endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Allocations {
    pub used: BTreeSet<Ipv4Addr>,
}

impl Allocations {
    /// The lowest free host address of `subnet` (never the network or broadcast address,
    /// never `gateway`), marked used.
    pub fn allocate(&mut self, subnet: Ipv4Net, gateway: Ipv4Addr) -> Result<Ipv4Addr, IpamError> {
        let last = subnet.size().saturating_sub(1);
        for n in 1..last {
            let Some(ip) = u32::try_from(n).ok().and_then(|n| subnet.nth(n)) else {
                break;
            };
            if ip != gateway && !self.used.contains(&ip) {
                self.used.insert(ip);
                return Ok(ip);
            }
        }
        Err(IpamError::SubnetFull {
            subnet: subnet.network(),
        })
    }

    /// Like [`Self::allocate`], but only from `range` when there is one (`--ip-range`).
    pub fn allocate_in(
        &mut self,
        subnet: Ipv4Net,
        range: Option<Ipv4Net>,
        gateway: Ipv4Addr,
    ) -> Result<Ipv4Addr, IpamError> {
        let Some(range) = range else {
            return self.allocate(subnet, gateway);
        };
        let (net, bcast) = (subnet.network().addr, subnet.last());
        for n in 0..range.size() {
            let Some(ip) = u32::try_from(n).ok().and_then(|n| range.nth(n)) else {
                break;
            };
            if ip != gateway && ip != net && ip != bcast && !self.used.contains(&ip) {
                self.used.insert(ip);
                return Ok(ip);
            }
        }
        Err(IpamError::SubnetFull {
            subnet: subnet.network(),
        })
    }

    /// Marks a user-chosen address (`--ip`) used: it must be a host address of `subnet`,
    /// not the gateway and not in use.
    pub fn reserve(
        &mut self,
        subnet: Ipv4Net,
        gateway: Ipv4Addr,
        ip: Ipv4Addr,
    ) -> Result<(), IpamError> {
        if !subnet.contains(ip) || ip == subnet.network().addr || ip == subnet.last() {
            return Err(IpamError::NotInSubnet { ip });
        }
        if ip == gateway || self.used.contains(&ip) {
            return Err(IpamError::InUse { ip });
        }
        self.used.insert(ip);
        Ok(())
    }

    pub fn release(&mut self, ip: Ipv4Addr) {
        self.used.remove(&ip);
    }
}

/// A MAC address derived from the IPv4 address, as dockerd does (02:42 + the 4 bytes).
pub fn mac_for(ip: Ipv4Addr) -> [u8; 6] {
    let o = ip.octets();
    [0x02, 0x42, o[0], o[1], o[2], o[3]]
}

pub fn mac_string(mac: [u8; 6]) -> String {
    mac.iter()
        .map(|b| format!("{b:02x}"))
        .collect::<Vec<_>>()
        .join(":")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn net(s: &str) -> Ipv4Net {
        s.parse().unwrap()
    }

    #[test]
    fn parses_and_compares_networks() {
        let n = net("10.1.2.1/24");
        assert_eq!(n.network(), net("10.1.2.0/24"));
        assert!(n.contains(Ipv4Addr::new(10, 1, 2, 200)));
        assert!(!n.contains(Ipv4Addr::new(10, 1, 3, 1)));
        assert!(net("10.0.0.0/8").overlaps(&n));
        assert!(n.overlaps(&net("10.0.0.0/8")));
        assert!(!n.overlaps(&net("10.1.3.0/24")));
        assert!("10.1.2.0".parse::<Ipv4Net>().is_err());
        assert!("10.1.2.0/33".parse::<Ipv4Net>().is_err());
    }

    #[test]
    fn picks_the_first_unrouted_pool_subnet() {
        let pool = default_pool();
        let routed = [net("0.0.0.0/0"), net("172.17.5.0/24"), net("172.16.0.0/12")];
        // 172.16/12 covers all of 172.17-31, so the first /20 of 192.168 is next.
        assert_eq!(pick_subnet(&pool, &routed).unwrap(), net("192.168.0.0/20"));
        assert_eq!(pick_subnet(&pool, &[]).unwrap(), net("172.17.0.0/16"));
        assert_eq!(
            pick_subnet(&pool, &[net("128.0.0.0/1")]),
            Err(IpamError::PoolExhausted)
        );
    }

    #[test]
    fn allocates_skipping_gateway_and_reuses_released() {
        let subnet = net("10.9.0.0/30");
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let mut a = Allocations::default();
        assert_eq!(a.allocate(subnet, gw).unwrap(), Ipv4Addr::new(10, 9, 0, 2));
        assert!(matches!(
            a.allocate(subnet, gw),
            Err(IpamError::SubnetFull { .. })
        ));
        a.release(Ipv4Addr::new(10, 9, 0, 2));
        assert_eq!(a.allocate(subnet, gw).unwrap(), Ipv4Addr::new(10, 9, 0, 2));
    }

    #[test]
    fn allocates_from_the_range_and_reserves_chosen_addresses() {
        let subnet = net("10.9.0.0/16");
        let gw = Ipv4Addr::new(10, 9, 0, 1);
        let mut a = Allocations::default();
        let range = Some(net("10.9.4.0/30"));
        assert_eq!(
            a.allocate_in(subnet, range, gw).unwrap(),
            Ipv4Addr::new(10, 9, 4, 0)
        );
        a.reserve(subnet, gw, Ipv4Addr::new(10, 9, 4, 1)).unwrap();
        assert_eq!(
            a.allocate_in(subnet, range, gw).unwrap(),
            Ipv4Addr::new(10, 9, 4, 2)
        );
        assert_eq!(
            a.reserve(subnet, gw, Ipv4Addr::new(10, 9, 4, 1)),
            Err(IpamError::InUse {
                ip: Ipv4Addr::new(10, 9, 4, 1)
            })
        );
        assert!(a.reserve(subnet, gw, gw).is_err());
        assert!(a.reserve(subnet, gw, Ipv4Addr::new(10, 8, 0, 1)).is_err());
        assert!(a
            .reserve(subnet, gw, Ipv4Addr::new(10, 9, 255, 255))
            .is_err());
        assert_eq!(net("10.9.0.0/16").last(), Ipv4Addr::new(10, 9, 255, 255));
    }

    #[test]
    fn mac_follows_the_address() {
        assert_eq!(
            mac_string(mac_for(Ipv4Addr::new(172, 17, 0, 2))),
            "02:42:ac:11:00:02"
        );
    }
}
