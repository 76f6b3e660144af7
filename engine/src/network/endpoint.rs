//! How an endpoint shows up elsewhere: in the OCI spec (the namespace path) and in
//! `docker inspect` (`NetworkSettings`).

use serde_json::{json, Map, Value};

use super::{Endpoint, NetworkRecord};

/// Points the spec's network namespace at the endpoint's persistent namespace, so the
/// runtime joins it instead of making an empty one.
pub fn set_spec_netns(spec: &mut Value, ep: &Endpoint) {
    let path = ep.netns.to_string_lossy().into_owned();
    if let Some(list) = spec
        .pointer_mut("/linux/namespaces")
        .and_then(Value::as_array_mut)
    {
        for ns in list.iter_mut() {
            if ns.get("type").and_then(Value::as_str) == Some("network") {
                ns["path"] = json!(path);
            }
        }
    }
}

/// dockerd's `NetworkSettings` for a container (`mode` is its HostConfig.NetworkMode,
/// `name` its name without the slash): one `Networks` entry per endpoint; the top-level
/// address fields describe the default bridge's endpoint only, as dockerd's do.
pub fn inspect_settings(
    eps: &[Endpoint],
    networks: &[NetworkRecord],
    mode: &str,
    name: &str,
) -> Value {
    let Some(first) = eps.first() else {
        let net = match mode {
            "host" | "none" => mode,
            m if m.starts_with("container:") => {
                return json!({"SandboxKey": "", "Ports": {}, "IPAddress": "", "Networks": {}});
            }
            "" | "default" => "bridge",
            m => m,
        };
        let id = networks
            .iter()
            .find(|n| n.name == net)
            .map(|n| n.id.clone())
            .unwrap_or_else(|| super::builtin_id(net));
        return json!({
            "Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
            "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "",
            "Networks": {net: {"IPAddress": "", "IPPrefixLen": 0, "Gateway": "",
                                "MacAddress": "", "NetworkID": id}},
        });
    };
    let mut ports: Map<String, Value> = Map::new();
    for p in eps.iter().flat_map(|e| &e.ports) {
        let entry = ports.entry(p.key()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(
                json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}),
            );
        }
    }
    let mut nets = Map::new();
    let mut on_default = None;
    for ep in eps {
        let net = networks.iter().find(|n| n.id == ep.network_id);
        let net_name = net.map_or_else(|| ep.network_id.clone(), |n| n.name.clone());
        let user_defined = net.is_some_and(|n| !n.is_default());
        if !user_defined {
            on_default = Some(ep);
        }
        let mut dns_names = vec![
            json!(name),
            json!(&ep.container_id[..ep.container_id.len().min(12)]),
        ];
        dns_names.extend(ep.aliases.iter().map(|a| json!(a)));
        nets.insert(
            net_name,
            json!({
                "IPAMConfig": if ep.ip_given { json!({"IPv4Address": ep.ip.to_string()}) } else { Value::Null },
                "Links": null,
                "Aliases": if ep.aliases.is_empty() { Value::Null } else { json!(ep.aliases) },
                "MacAddress": ep.mac, "DriverOpts": null, "GwPriority": 0,
                "NetworkID": ep.network_id, "EndpointID": endpoint_id(ep),
                "Gateway": ep.gateway.to_string(), "IPAddress": ep.ip.to_string(),
                "IPPrefixLen": ep.prefix, "IPv6Gateway": "", "GlobalIPv6Address": "",
                "GlobalIPv6PrefixLen": 0,
                "DNSNames": if user_defined { json!(dns_names) } else { Value::Null },
            }),
        );
    }
    let (ip, prefix, gw, mac) = match on_default {
        Some(ep) => (
            ep.ip.to_string(),
            ep.prefix,
            ep.gateway.to_string(),
            ep.mac.clone(),
        ),
        None => (String::new(), 0, String::new(), String::new()),
    };
    json!({
        "Bridge": "", "SandboxID": first.container_id,
        "SandboxKey": first.netns.to_string_lossy(),
        "Ports": ports,
        "IPAddress": ip, "IPPrefixLen": prefix, "Gateway": gw, "MacAddress": mac,
        "Networks": nets,
    })
}

/// A stable 64-hex endpoint ID (dockerd's are random): the container and network IDs.
pub fn endpoint_id(ep: &Endpoint) -> String {
    use sha2::{Digest, Sha256};
    hex::encode(Sha256::digest(
        format!("berth-endpoint:{}:{}", ep.container_id, ep.network_id).as_bytes(),
    ))
}
