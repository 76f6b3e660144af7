//! Published ports: docker's `PortBindings` / `ExposedPorts` / `PublishAllPorts` turned
//! into concrete bindings, and host ports reserved by binding a socket to them (bound, not
//! listening: the DNAT rule takes the traffic, the socket only keeps others off the port
//! and makes a port that is in use fail the way dockerd's does).

use std::net::{Ipv4Addr, SocketAddrV4};
use std::os::fd::OwnedFd;

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use nix::sys::socket::{bind, socket, AddressFamily, SockFlag, SockType, SockaddrIn};

use super::NetworkError;

/// One published port, as persisted with its endpoint (host port 0 resolved).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PortBinding {
    pub proto: String,
    pub container_port: u16,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
}

impl PortBinding {
    pub fn key(&self) -> String {
        format!("{}/{}", self.container_port, self.proto)
    }
}

fn parse_key(key: &str) -> Result<(u16, String), NetworkError> {
    let bad = || NetworkError::InvalidPort { spec: key.into() };
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    let proto = proto.to_ascii_lowercase();
    if proto != "tcp" && proto != "udp" {
        return Err(bad());
    }
    let port: u16 = port.parse().map_err(|_| bad())?;
    if port == 0 {
        return Err(bad());
    }
    Ok((port, proto))
}

/// The bindings a container asks for: explicit `PortBindings`, plus every `ExposedPorts`
/// entry on a kernel-chosen port when `PublishAllPorts` (`-P`) is set.
pub fn requested(
    host_extra: &Map<String, Value>,
    config_extra: &Map<String, Value>,
) -> Result<Vec<PortBinding>, NetworkError> {
    let mut out = Vec::new();
    if let Some(Value::Object(bindings)) = host_extra.get("PortBindings") {
        for (key, list) in bindings {
            let (container_port, proto) = parse_key(key)?;
            let list = list.as_array().cloned().unwrap_or_default();
            let list = if list.is_empty() {
                vec![Value::Null]
            } else {
                list
            };
            for b in list {
                let ip = b.get("HostIp").and_then(Value::as_str).unwrap_or("");
                let port = b.get("HostPort").and_then(Value::as_str).unwrap_or("");
                let bad = || NetworkError::InvalidPort {
                    spec: format!("{ip}:{port}:{key}"),
                };
                let host_ip = match ip {
                    "" => Ipv4Addr::UNSPECIFIED,
                    s => s.parse().map_err(|_| bad())?,
                };
                let host_port = match port {
                    "" => 0,
                    s => s.parse().map_err(|_| bad())?,
                };
                out.push(PortBinding {
                    proto: proto.clone(),
                    container_port,
                    host_ip,
                    host_port,
                });
            }
        }
    }
    let publish_all = host_extra
        .get("PublishAllPorts")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    if publish_all {
        if let Some(Value::Object(exposed)) = config_extra.get("ExposedPorts") {
            for key in exposed.keys() {
                let (container_port, proto) = parse_key(key)?;
                if !out
                    .iter()
                    .any(|b| b.container_port == container_port && b.proto == proto)
                {
                    out.push(PortBinding {
                        proto,
                        container_port,
                        host_ip: Ipv4Addr::UNSPECIFIED,
                        host_port: 0,
                    });
                }
            }
        }
    }
    Ok(out)
}

/// Binds `b`'s host address; a host port of 0 becomes the port the kernel picked.
pub fn reserve(b: &mut PortBinding) -> Result<OwnedFd, NetworkError> {
    let kind = if b.proto == "udp" {
        SockType::Datagram
    } else {
        SockType::Stream
    };
    let fail = |b: &PortBinding, e: nix::Error| NetworkError::PortInUse {
        addr: format!("{}:{}", b.host_ip, b.host_port),
        source: e.into(),
    };
    let fd =
        socket(AddressFamily::Inet, kind, SockFlag::SOCK_CLOEXEC, None).map_err(|e| fail(b, e))?;
    let addr = SockaddrIn::from(SocketAddrV4::new(b.host_ip, b.host_port));
    bind(std::os::fd::AsRawFd::as_raw_fd(&fd), &addr).map_err(|e| fail(b, e))?;
    if b.host_port == 0 {
        let got: SockaddrIn = nix::sys::socket::getsockname(std::os::fd::AsRawFd::as_raw_fd(&fd))
            .map_err(|e| fail(b, e))?;
        b.host_port = got.port();
    }
    Ok(fd)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().cloned().unwrap()
    }

    #[test]
    fn parses_bindings_and_publish_all() {
        let host = obj(json!({
            "PortBindings": {"80/tcp": [{"HostIp": "127.0.0.1", "HostPort": "8080"}],
                             "53/udp": [{"HostIp": "", "HostPort": ""}]},
            "PublishAllPorts": true,
        }));
        let config = obj(json!({"ExposedPorts": {"80/tcp": {}, "443/tcp": {}}}));
        let mut got = requested(&host, &config).unwrap();
        got.sort_by_key(|b| b.container_port);
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].key(), "53/udp");
        assert_eq!(got[0].host_port, 0);
        assert_eq!(got[1].host_ip, Ipv4Addr::LOCALHOST);
        assert_eq!(got[1].host_port, 8080);
        assert_eq!(got[2].key(), "443/tcp");
    }

    #[test]
    fn rejects_bad_specs() {
        let host = obj(json!({"PortBindings": {"80/sctp": []}}));
        assert!(requested(&host, &Map::new()).is_err());
        let host = obj(json!({"PortBindings": {"80/tcp": [{"HostIp": "nope", "HostPort": "1"}]}}));
        assert!(requested(&host, &Map::new()).is_err());
    }

    #[test]
    fn a_reserved_port_cannot_be_reserved_twice() {
        let mut a = PortBinding {
            proto: "tcp".into(),
            container_port: 80,
            host_ip: Ipv4Addr::LOCALHOST,
            host_port: 0,
        };
        let _held = reserve(&mut a).unwrap();
        assert_ne!(a.host_port, 0);
        let mut b = a.clone();
        assert!(matches!(
            reserve(&mut b),
            Err(NetworkError::PortInUse { .. })
        ));
    }
}
