//! What clients ask for, decoded and checked before anything is made: `POST
//! /networks/create` bodies and per-network endpoint settings (`--ip`, `--mac-address`,
//! `--network-alias`, `network connect --ip --alias`). Pure code, unit-tested.

use std::collections::BTreeMap;
use std::net::Ipv4Addr;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::ipam::Ipv4Net;
use super::NetworkError;

/// The option that names a network's bridge interface (dockerd's).
pub const BRIDGE_NAME_OPTION: &str = "com.docker.network.bridge.name";
/// dockerd's option turning off masquerade for one network.
pub const MASQUERADE_OPTION: &str = "com.docker.network.bridge.enable_ip_masquerade";
/// dockerd's option setting the MTU of a network's interfaces.
pub const MTU_OPTION: &str = "com.docker.network.driver.mtu";

/// docker-py (docker-compose v1) sends `null` for unset strings and lists.
fn null_str<'de, D: serde::Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    Ok(Option::<String>::deserialize(d)?.unwrap_or_default())
}

fn null_bool<'de, D: serde::Deserializer<'de>>(d: D) -> Result<bool, D::Error> {
    Ok(Option::<bool>::deserialize(d)?.unwrap_or_default())
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamConfigBody {
    #[serde(default, deserialize_with = "null_str")]
    subnet: String,
    #[serde(default, rename = "IPRange", deserialize_with = "null_str")]
    ip_range: String,
    #[serde(default, deserialize_with = "null_str")]
    gateway: String,
    #[serde(default)]
    auxiliary_addresses: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct IpamBody {
    #[serde(default, deserialize_with = "null_str")]
    driver: String,
    #[serde(default)]
    config: Option<Vec<IpamConfigBody>>,
}

/// `POST /networks/create` as sent by docker CLI 28.
#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct CreateBody {
    #[serde(default, deserialize_with = "null_str")]
    name: String,
    #[serde(default, deserialize_with = "null_str")]
    driver: String,
    #[serde(default, deserialize_with = "null_bool")]
    internal: bool,
    #[serde(default, deserialize_with = "null_bool")]
    attachable: bool,
    #[serde(default, deserialize_with = "null_bool")]
    ingress: bool,
    #[serde(default, rename = "EnableIPv6")]
    enable_ipv6: Option<bool>,
    #[serde(default, rename = "IPAM")]
    ipam: Option<IpamBody>,
    #[serde(default)]
    options: Option<BTreeMap<String, String>>,
    #[serde(default)]
    labels: Option<BTreeMap<String, String>>,
    #[serde(default, deserialize_with = "null_bool")]
    config_only: bool,
    #[serde(default, deserialize_with = "null_str")]
    scope: String,
}

/// A validated `network create` request (IPv4, bridge driver).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct NetworkCreate {
    pub name: String,
    /// The subnet (network address) when the user gave one; from the pool otherwise.
    pub subnet: Option<Ipv4Net>,
    pub gateway: Option<Ipv4Addr>,
    pub ip_range: Option<Ipv4Net>,
    pub internal: bool,
    pub attachable: bool,
    pub options: BTreeMap<String, String>,
    pub labels: BTreeMap<String, String>,
}

fn cidr(value: &str) -> Result<Ipv4Net, NetworkError> {
    value
        .parse::<Ipv4Net>()
        .map_err(|_| NetworkError::invalid(format!("invalid CIDR address: {value}")))
}

/// A subnet or range written with host bits set is refused, as dockerd does.
fn network_cidr(what: &str, value: &str) -> Result<Ipv4Net, NetworkError> {
    let n = cidr(value)?;
    if n.network() != n {
        return Err(NetworkError::invalid(format!(
            "invalid {what} {value}: it should be {}",
            n.network()
        )));
    }
    Ok(n)
}

impl NetworkCreate {
    /// Decodes and checks a create body. Errors carry dockerd's messages.
    pub fn parse(body: &[u8]) -> Result<Self, NetworkError> {
        let b: CreateBody = serde_json::from_slice(body)
            .map_err(|e| NetworkError::invalid(format!("invalid JSON: {e}")))?;
        let name = b.name.trim().to_string();
        if name.is_empty() {
            return Err(NetworkError::invalid("network name must not be empty"));
        }
        if matches!(name.as_str(), "bridge" | "host" | "none" | "default") {
            return Err(NetworkError::PreDefined {
                name,
                action: "created",
            });
        }
        match b.driver.as_str() {
            "" | "bridge" => {}
            other => {
                return Err(NetworkError::Driver {
                    driver: other.into(),
                })
            }
        }
        if b.enable_ipv6 == Some(true) {
            return Err(NetworkError::invalid(
                "IPv6 networks are not implemented by berth (EnableIPv6)",
            ));
        }
        if b.ingress || b.config_only || !matches!(b.scope.as_str(), "" | "local") {
            return Err(NetworkError::invalid(
                "only local bridge networks are implemented by berth (no ingress, config-only or swarm scope)",
            ));
        }
        let ipam = b.ipam.unwrap_or_default();
        if !matches!(ipam.driver.as_str(), "" | "default") {
            return Err(NetworkError::Driver {
                driver: ipam.driver,
            });
        }
        let configs = ipam.config.unwrap_or_default();
        if configs.len() > 1 {
            return Err(NetworkError::invalid(
                "more than one IPv4 subnet per network is not implemented by berth",
            ));
        }
        let mut out = NetworkCreate {
            name,
            internal: b.internal,
            attachable: b.attachable,
            options: b.options.unwrap_or_default(),
            labels: b.labels.unwrap_or_default(),
            ..Default::default()
        };
        if let Some(c) = configs.into_iter().next() {
            if c.auxiliary_addresses.is_some_and(|a| !a.is_empty()) {
                return Err(NetworkError::invalid(
                    "auxiliary addresses are not implemented by berth",
                ));
            }
            if c.subnet.is_empty() {
                if !c.gateway.is_empty() || !c.ip_range.is_empty() {
                    return Err(NetworkError::invalid(
                        "every ip-range or gateway must have a corresponding subnet",
                    ));
                }
            } else {
                let subnet = network_cidr("subnet", &c.subnet)?;
                if subnet.prefix > 30 {
                    return Err(NetworkError::invalid(format!(
                        "invalid subnet {subnet}: a bridge network needs a prefix of /30 or shorter"
                    )));
                }
                out.subnet = Some(subnet);
                if !c.gateway.is_empty() {
                    let gw: Ipv4Addr = c.gateway.parse().map_err(|_| {
                        NetworkError::invalid(format!("invalid gateway address {}", c.gateway))
                    })?;
                    if !subnet.contains(gw) {
                        return Err(NetworkError::invalid(format!(
                            "no matching subnet for gateway {gw}"
                        )));
                    }
                    out.gateway = Some(gw);
                }
                if !c.ip_range.is_empty() {
                    let range = network_cidr("ip-range", &c.ip_range)?;
                    if !(subnet.contains(range.addr) && range.prefix >= subnet.prefix) {
                        return Err(NetworkError::invalid(format!(
                            "no matching subnet for range {range}"
                        )));
                    }
                    out.ip_range = Some(range);
                }
            }
        }
        if let Some(bridge) = out.options.get(BRIDGE_NAME_OPTION) {
            if bridge.is_empty() || bridge.len() > 15 || bridge.contains(['/', ' ']) {
                return Err(NetworkError::invalid(format!(
                    "invalid {BRIDGE_NAME_OPTION} {bridge:?}: an interface name of 1 to 15 characters"
                )));
            }
        }
        if let Some(v) = out.options.get(MASQUERADE_OPTION) {
            v.parse::<bool>().map_err(|_| {
                NetworkError::invalid(format!("invalid {MASQUERADE_OPTION} {v:?}: not a boolean"))
            })?;
        }
        if let Some(v) = out.options.get(MTU_OPTION) {
            v.parse::<u32>()
                .ok()
                .filter(|m| *m >= 68)
                .ok_or_else(|| NetworkError::invalid(format!("invalid {MTU_OPTION} {v:?}")))?;
        }
        Ok(out)
    }
}

/// Endpoint settings for one network (`EndpointSettings` of the API).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EndpointRequest {
    pub ip: Option<Ipv4Addr>,
    pub mac: Option<[u8; 6]>,
    pub aliases: Vec<String>,
}

fn parse_mac(s: &str) -> Result<[u8; 6], NetworkError> {
    let bad = || NetworkError::invalid(format!("{s} is not a valid mac address"));
    let parts: Vec<&str> = s.split(':').collect();
    if parts.len() != 6 {
        return Err(bad());
    }
    let mut mac = [0u8; 6];
    for (b, p) in mac.iter_mut().zip(parts) {
        if p.len() != 2 {
            return Err(bad());
        }
        *b = u8::from_str_radix(p, 16).map_err(|_| bad())?;
    }
    if mac[0] & 1 == 1 {
        return Err(NetworkError::invalid(format!(
            "{s} is a multicast mac address and cannot be used by an interface"
        )));
    }
    Ok(mac)
}

impl EndpointRequest {
    /// From an `EndpointSettings` object (`IPAMConfig.IPv4Address`, `MacAddress`,
    /// `Aliases`); `null` or missing fields mean "none".
    pub fn parse(v: &Value) -> Result<Self, NetworkError> {
        let mut out = Self::default();
        let ip = v
            .pointer("/IPAMConfig/IPv4Address")
            .and_then(Value::as_str)
            .unwrap_or("");
        if !ip.is_empty() {
            out.ip = Some(
                ip.parse()
                    .map_err(|_| NetworkError::invalid(format!("invalid IPv4 address: {ip}")))?,
            );
        }
        if let Some(v6) = v
            .pointer("/IPAMConfig/IPv6Address")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            return Err(NetworkError::invalid(format!(
                "IPv6 address {v6}: IPv6 is not implemented by berth"
            )));
        }
        if let Some(mac) = v
            .get("MacAddress")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            out.mac = Some(parse_mac(mac)?);
        }
        out.aliases = v
            .get("Aliases")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .filter(|s| !s.is_empty())
                    .map(String::from)
                    .collect()
            })
            .unwrap_or_default();
        Ok(out)
    }

    pub fn is_empty(&self) -> bool {
        self.ip.is_none() && self.mac.is_none() && self.aliases.is_empty()
    }
}

/// The networks a new container asks for, in order, each with its settings: the
/// `NetworkMode` first (`default`/`bridge` mean the default bridge), then every other
/// key of `NetworkingConfig.EndpointsConfig` (`docker run --network a --network b`).
/// `Config.MacAddress` (older clients) applies to the first.
pub fn endpoints_for_create(
    mode: &str,
    networking: Option<&Value>,
    config_extra: &Map<String, Value>,
) -> Result<Vec<(String, EndpointRequest)>, NetworkError> {
    let primary = match mode {
        "" | "default" => super::DEFAULT_NETWORK,
        m => m,
    };
    let configs = networking
        .and_then(|n| n.get("EndpointsConfig"))
        .and_then(Value::as_object);
    let settings = |key: &str| -> Result<EndpointRequest, NetworkError> {
        match configs.and_then(|c| c.get(key)) {
            Some(v) => EndpointRequest::parse(v),
            None => Ok(EndpointRequest::default()),
        }
    };
    let mut first = settings(primary)?;
    if primary == super::DEFAULT_NETWORK && first.is_empty() {
        for key in ["default", "bridge"] {
            let s = settings(key)?;
            if !s.is_empty() {
                first = s;
            }
        }
    }
    if first.mac.is_none() {
        if let Some(mac) = config_extra
            .get("MacAddress")
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
        {
            first.mac = Some(parse_mac(mac)?);
        }
    }
    let mut out = vec![(primary.to_string(), first)];
    if let Some(c) = configs {
        for (key, v) in c {
            let is_primary = key == primary
                || (primary == super::DEFAULT_NETWORK && matches!(key.as_str(), "default"));
            if !is_primary {
                out.push((key.clone(), EndpointRequest::parse(v)?));
            }
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn create(v: Value) -> Result<NetworkCreate, NetworkError> {
        NetworkCreate::parse(v.to_string().as_bytes())
    }

    #[test]
    fn parses_a_full_create_body() {
        let n = create(json!({"Name": "n1", "Driver": "bridge", "Internal": true,
            "IPAM": {"Driver": "default", "Config": [{"Subnet": "10.9.0.0/16",
            "IPRange": "10.9.1.0/24", "Gateway": "10.9.0.254"}]},
            "Options": {"com.docker.network.bridge.name": "brx"}, "Labels": {"a": "b"}}))
        .unwrap();
        assert_eq!(n.subnet, Some("10.9.0.0/16".parse().unwrap()));
        assert_eq!(n.ip_range, Some("10.9.1.0/24".parse().unwrap()));
        assert_eq!(n.gateway, Some(Ipv4Addr::new(10, 9, 0, 254)));
        assert!(n.internal);
        assert_eq!(n.labels["a"], "b");
    }

    #[test]
    fn bad_create_bodies_get_dockerds_messages() {
        let msg = |v: Value| create(v).unwrap_err().to_string();
        let cfg = |c: Value| json!({"Name": "n", "IPAM": {"Config": [c]}});
        assert_eq!(
            msg(cfg(json!({"Subnet": "10.1.0.0/24", "Gateway": "10.2.0.1"}))),
            "no matching subnet for gateway 10.2.0.1"
        );
        assert_eq!(
            msg(cfg(
                json!({"Subnet": "10.1.0.0/24", "IPRange": "10.1.1.0/25"})
            )),
            "no matching subnet for range 10.1.1.0/25"
        );
        assert_eq!(
            msg(cfg(
                json!({"Subnet": "10.1.0.0/16", "IPRange": "10.0.0.0/8"})
            )),
            "no matching subnet for range 10.0.0.0/8"
        );
        assert_eq!(
            msg(cfg(json!({"Gateway": "10.2.0.1"}))),
            "every ip-range or gateway must have a corresponding subnet"
        );
        assert_eq!(
            msg(cfg(json!({"Subnet": "10.1.0.0/33"}))),
            "invalid CIDR address: 10.1.0.0/33"
        );
        assert_eq!(
            msg(cfg(json!({"Subnet": "10.1.0.5/24"}))),
            "invalid subnet 10.1.0.5/24: it should be 10.1.0.0/24"
        );
        assert_eq!(
            msg(json!({"Name": "bridge"})),
            "bridge is a pre-defined network and cannot be created"
        );
        assert_eq!(
            msg(json!({"Name": "x", "Driver": "overlay"})),
            "plugin \"overlay\" not found"
        );
        assert!(create(json!({"Name": ""})).is_err());
        assert!(create(
            json!({"Name": "x", "Options": {BRIDGE_NAME_OPTION: "a-very-long-bridge-name"}})
        )
        .is_err());
    }

    #[test]
    fn nulls_from_docker_py_mean_unset() {
        let n = create(
            json!({"Name": "proj_default", "Driver": null, "Internal": null,
            "Scope": null, "EnableIPv6": null, "Options": null, "Labels": null,
            "IPAM": {"Driver": null, "Options": null, "Config": [{"Subnet": "10.3.0.0/24",
            "IPRange": null, "Gateway": null, "AuxiliaryAddresses": null}]}}),
        )
        .unwrap();
        assert_eq!(n.subnet, Some("10.3.0.0/24".parse().unwrap()));
        assert_eq!(n.gateway, None);
    }

    #[test]
    fn endpoint_settings() {
        let e = EndpointRequest::parse(&json!({"IPAMConfig": {"IPv4Address": "10.1.0.9"},
            "MacAddress": "02:aa:bb:cc:dd:ee", "Aliases": ["db", ""]}))
        .unwrap();
        assert_eq!(e.ip, Some(Ipv4Addr::new(10, 1, 0, 9)));
        assert_eq!(e.mac, Some([2, 0xaa, 0xbb, 0xcc, 0xdd, 0xee]));
        assert_eq!(e.aliases, ["db"]);
        assert!(EndpointRequest::parse(&json!({"MacAddress": "zz"})).is_err());
        assert!(EndpointRequest::parse(&json!({"MacAddress": "01:00:00:00:00:00"})).is_err());
        assert!(EndpointRequest::parse(&json!({"IPAMConfig": null}))
            .unwrap()
            .is_empty());
    }

    #[test]
    fn create_endpoints_start_with_the_network_mode() {
        let net = json!({"EndpointsConfig": {"b": {"Aliases": ["x"]}, "a": {}}});
        let got = endpoints_for_create("a", Some(&net), &Map::new()).unwrap();
        let names: Vec<&str> = got.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a", "b"]);
        assert_eq!(got[1].1.aliases, ["x"]);
        let got = endpoints_for_create("default", None, &Map::new()).unwrap();
        assert_eq!(got, [("bridge".to_string(), EndpointRequest::default())]);
        let extra = json!({"MacAddress": "02:00:00:00:00:01"});
        let got = endpoints_for_create("n", None, extra.as_object().unwrap()).unwrap();
        assert_eq!(got[0].1.mac, Some([2, 0, 0, 0, 0, 1]));
    }
}
