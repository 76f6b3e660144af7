//! `GET /networks` and `GET /networks/{id}`: the built-in `bridge`, `host` and `none`
//! networks (user-defined networks are not implemented yet, see docs/networking.md).

use serde_json::{json, Map, Value};
use sha2::{Digest, Sha256};

use super::ApiError;
use crate::backend::Backend;
use crate::daemon::Daemon;

const BUILTIN: [(&str, &str); 3] = [("bridge", "bridge"), ("host", "host"), ("none", "null")];

/// A stable 64-hex ID per built-in network (dockerd's are random per host).
pub fn network_id(name: &str) -> String {
    hex::encode(Sha256::digest(format!("berth-network:{name}").as_bytes()))
}

fn summary<B: Backend>(d: &Daemon<B>, name: &str, driver: &str) -> Value {
    let mut ipam = json!([]);
    let mut options = json!({});
    let mut containers = Map::new();
    if name == "bridge" {
        if let Some(mgr) = d.network.get() {
            let gw = mgr.gateway();
            ipam = json!([{"Subnet": gw.network().to_string(), "Gateway": gw.addr.to_string()}]);
            options = json!({"com.docker.network.bridge.name": mgr.bridge_name(),
                             "com.docker.network.bridge.default_bridge": "true"});
            for ep in mgr.endpoints() {
                let cname = d
                    .store
                    .get(&ep.container_id)
                    .map(|r| r.name.trim_start_matches('/').to_string())
                    .unwrap_or_default();
                containers.insert(
                    ep.container_id.clone(),
                    json!({"Name": cname, "EndpointID": ep.container_id, "MacAddress": ep.mac,
                           "IPv4Address": format!("{}/{}", ep.ip, ep.prefix), "IPv6Address": ""}),
                );
            }
        }
    }
    json!({
        "Name": name, "Id": network_id(name), "Created": "0001-01-01T00:00:00Z",
        "Scope": "local", "Driver": driver, "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": null, "Config": ipam},
        "Internal": false, "Attachable": false, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers, "Options": options, "Labels": {},
    })
}

pub fn list<B: Backend>(d: &Daemon<B>) -> Value {
    Value::Array(
        BUILTIN
            .iter()
            .map(|(name, driver)| summary(d, name, driver))
            .collect(),
    )
}

/// By name, full ID or unique ID prefix; dockerd's 404 otherwise.
pub fn inspect<B: Backend>(d: &Daemon<B>, reference: &str) -> Result<Value, ApiError> {
    BUILTIN
        .iter()
        .find(|(name, _)| *name == reference || network_id(name).starts_with(reference))
        .filter(|_| !reference.is_empty())
        .map(|(name, driver)| summary(d, name, driver))
        .ok_or_else(|| {
            ApiError::new(
                http::StatusCode::NOT_FOUND,
                format!("network {reference} not found"),
            )
        })
}
