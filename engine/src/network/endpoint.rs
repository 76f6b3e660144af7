//! How an endpoint shows up elsewhere: in the OCI spec (the namespace path) and in
//! `docker inspect` (`NetworkSettings`).

use serde_json::{json, Map, Value};

use super::Endpoint;

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

/// dockerd's `NetworkSettings` for a container (`mode` is its HostConfig.NetworkMode).
pub fn inspect_settings(ep: Option<&Endpoint>, mode: &str) -> Value {
    let Some(ep) = ep else {
        let name = match mode {
            "host" | "none" => mode,
            m if m.starts_with("container:") => {
                return json!({"SandboxKey": "", "Ports": {}, "IPAddress": "", "Networks": {}});
            }
            _ => "bridge",
        };
        return json!({
            "Bridge": "", "SandboxID": "", "SandboxKey": "", "Ports": {},
            "IPAddress": "", "IPPrefixLen": 0, "Gateway": "", "MacAddress": "",
            "Networks": {name: {"IPAddress": "", "IPPrefixLen": 0, "Gateway": "",
                                "MacAddress": "", "NetworkID": crate::api::networks::network_id(name)}},
        });
    };
    let mut ports: Map<String, Value> = Map::new();
    for p in &ep.ports {
        let entry = ports.entry(p.key()).or_insert_with(|| json!([]));
        if let Some(list) = entry.as_array_mut() {
            list.push(
                json!({"HostIp": p.host_ip.to_string(), "HostPort": p.host_port.to_string()}),
            );
        }
    }
    let net = json!({
        "IPAddress": ep.ip.to_string(), "IPPrefixLen": ep.prefix,
        "Gateway": ep.gateway.to_string(), "MacAddress": ep.mac, "NetworkID": crate::api::networks::network_id("bridge"),
        "EndpointID": ep.container_id,
    });
    json!({
        "Bridge": "", "SandboxID": ep.container_id,
        "SandboxKey": ep.netns.to_string_lossy(),
        "Ports": ports,
        "IPAddress": ep.ip.to_string(), "IPPrefixLen": ep.prefix,
        "Gateway": ep.gateway.to_string(), "MacAddress": ep.mac,
        "Networks": {"bridge": net},
    })
}
