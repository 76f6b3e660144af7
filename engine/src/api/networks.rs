//! `/networks`: list (with filters), inspect, create, remove, prune, connect and
//! disconnect, in dockerd's JSON shapes. The built-in `host` and `none` networks have no
//! record; `bridge` and user-defined networks come from the network manager.

use std::collections::BTreeMap;

use http::StatusCode;
use serde_json::{json, Map, Value};

use super::filters::{label_matches, parse_args};
use super::ApiError;
use crate::backend::Backend;
use crate::daemon::Daemon;
use crate::network::{NetworkError, NetworkRecord};

/// Networks with no record: name and driver.
const BUILTIN: [(&str, &str); 2] = [("host", "host"), ("none", "null")];

/// A stable 64-hex ID per built-in network (dockerd's are random per host).
pub fn network_id(name: &str) -> String {
    crate::network::builtin_id(name)
}

/// dockerd's status and message for a network error.
pub fn error(e: NetworkError) -> ApiError {
    let status = match &e {
        NetworkError::JoinContainer { .. } => StatusCode::NOT_FOUND,
        e => StatusCode::from_u16(e.status()).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
    };
    ApiError::new(status, e.to_string())
}

/// One network as `docker network ls/inspect` shows it.
#[derive(Debug, Clone)]
struct View {
    name: String,
    id: String,
    driver: &'static str,
    record: Option<NetworkRecord>,
}

impl View {
    fn builtin(&self) -> bool {
        self.record.as_ref().is_none_or(|r| r.is_default())
    }
}

fn views<B: Backend>(d: &Daemon<B>) -> Vec<View> {
    let mut out: Vec<View> = Vec::new();
    match d.network.get() {
        Some(mgr) => out.extend(mgr.networks().into_iter().map(|r| View {
            name: r.name.clone(),
            id: r.id.clone(),
            driver: "bridge",
            record: Some(r),
        })),
        None => out.push(View {
            name: "bridge".into(),
            id: network_id("bridge"),
            driver: "bridge",
            record: None,
        }),
    }
    out.extend(BUILTIN.iter().map(|(name, driver)| View {
        name: (*name).into(),
        id: network_id(name),
        driver,
        record: None,
    }));
    out
}

fn container_name<B: Backend>(d: &Daemon<B>, id: &str) -> String {
    d.store
        .get(id)
        .map(|r| r.name.trim_start_matches('/').to_string())
        .unwrap_or_default()
}

fn summary<B: Backend>(d: &Daemon<B>, v: &View) -> Value {
    let mut ipam = json!([]);
    let mut options = json!({});
    let mut containers = Map::new();
    let (mut internal, mut attachable, mut labels, mut created) =
        (false, false, json!({}), "0001-01-01T00:00:00Z".to_string());
    if let (Some(rec), Some(mgr)) = (&v.record, d.network.get()) {
        let mut cfg = json!({"Subnet": rec.subnet.to_string(), "Gateway": rec.gateway.to_string()});
        if let Some(r) = rec.ip_range {
            cfg["IPRange"] = json!(r.to_string());
        }
        ipam = json!([cfg]);
        options = json!(rec.options);
        if rec.is_default() {
            options = json!({"com.docker.network.bridge.name": rec.bridge,
                             "com.docker.network.bridge.default_bridge": "true"});
        }
        internal = rec.internal;
        attachable = rec.attachable;
        labels = json!(rec.labels);
        if !rec.created.is_empty() {
            created = rec.created.clone();
        }
        for ep in mgr.endpoints().iter().filter(|e| e.network_id == rec.id) {
            containers.insert(
                ep.container_id.clone(),
                json!({"Name": container_name(d, &ep.container_id),
                       "EndpointID": crate::network::endpoint_id(ep), "MacAddress": ep.mac,
                       "IPv4Address": format!("{}/{}", ep.ip, ep.prefix), "IPv6Address": ""}),
            );
        }
    }
    json!({
        "Name": v.name, "Id": v.id, "Created": created,
        "Scope": "local", "Driver": v.driver, "EnableIPv4": v.driver == "bridge",
        "EnableIPv6": false,
        "IPAM": {"Driver": "default", "Options": if v.builtin() { Value::Null } else { json!({}) },
                 "Config": ipam},
        "Internal": internal, "Attachable": attachable, "Ingress": false,
        "ConfigFrom": {"Network": ""}, "ConfigOnly": false,
        "Containers": containers, "Options": options, "Labels": labels,
    })
}

/// `GET /networks?filters=`: dockerd's keys (dangling, driver, id, label, name, scope,
/// type), in both encodings clients send.
fn parse_filters(raw: &str) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    const KEYS: &[&str] = &["dangling", "driver", "id", "label", "name", "scope", "type"];
    parse_args(raw, KEYS, |key, value| {
        let ok = match key {
            "type" => matches!(value, "custom" | "builtin"),
            "dangling" => matches!(value, "true" | "false" | "1" | "0"),
            _ => true,
        };
        if !ok {
            return Err(ApiError::bad_request(format!(
                "invalid filter: '{key}'='{value}'"
            )));
        }
        Ok(())
    })
}

fn matches(v: &View, used: bool, filters: &BTreeMap<String, Vec<String>>) -> bool {
    let empty = BTreeMap::new();
    let labels = v.record.as_ref().map_or(&empty, |r| &r.labels);
    filters.iter().all(|(key, values)| {
        values.is_empty()
            || values.iter().any(|want| match key.as_str() {
                "name" => v.name.contains(want.as_str()),
                "id" => v.id.starts_with(want.as_str()),
                "driver" => v.driver == want,
                "scope" => want == "local",
                "label" => label_matches(labels, want),
                "type" => (want == "builtin") == v.builtin(),
                "dangling" => {
                    let dangling = !v.builtin() && !used;
                    dangling == matches!(want.as_str(), "true" | "1")
                }
                _ => false,
            })
    })
}

pub fn list<B: Backend>(d: &Daemon<B>, filters: &str) -> Result<Value, ApiError> {
    let filters = parse_filters(filters)?;
    let used: Vec<String> = d
        .network
        .get()
        .map(|m| m.endpoints().into_iter().map(|e| e.network_id).collect())
        .unwrap_or_default();
    Ok(Value::Array(
        views(d)
            .iter()
            .filter(|v| matches(v, used.contains(&v.id), &filters))
            .map(|v| summary(d, v))
            .collect(),
    ))
}

/// By name, full ID or unique ID prefix; dockerd's 404 otherwise.
fn find<B: Backend>(d: &Daemon<B>, reference: &str) -> Result<View, ApiError> {
    let all = views(d);
    if let Some(v) = all
        .iter()
        .find(|v| v.name == reference || v.id == reference)
    {
        return Ok(v.clone());
    }
    let hits: Vec<&View> = all
        .iter()
        .filter(|v| !reference.is_empty() && v.id.starts_with(reference))
        .collect();
    match hits.as_slice() {
        [one] => Ok((*one).clone()),
        [] => Err(error(NetworkError::NotFound {
            reference: reference.into(),
        })),
        many => Err(error(NetworkError::Ambiguous {
            reference: reference.into(),
            count: many.len(),
        })),
    }
}

pub fn inspect<B: Backend>(d: &Daemon<B>, reference: &str) -> Result<Value, ApiError> {
    find(d, reference).map(|v| summary(d, &v))
}

/// `POST /networks/create` → 201 `{"Id", "Warning"}`.
pub async fn create<B: Backend>(d: &Daemon<B>, body: &[u8]) -> Result<Value, ApiError> {
    let req = crate::network::NetworkCreate::parse(body).map_err(error)?;
    let rec = d.create_network(req).await.map_err(error)?;
    Ok(json!({"Id": rec.id, "Warning": ""}))
}

pub async fn remove<B: Backend>(d: &Daemon<B>, reference: &str) -> Result<(), ApiError> {
    let v = find(d, reference)?;
    if v.record.is_none() || v.builtin() {
        return Err(error(NetworkError::PreDefined {
            name: v.name,
            action: "removed",
        }));
    }
    d.remove_network(&v.id).await.map_err(error)
}

/// `POST /networks/prune?filters=` (dockerd's keys: label, label!, until).
pub async fn prune<B: Backend>(d: &Daemon<B>, filters: &str) -> Result<Value, ApiError> {
    let (f, _) =
        super::filters::PruneFilters::parse(filters, &["label", "label!", "until"], |_, _| Ok(()))?;
    let removed = d
        .prune_networks(move |n| {
            let created = chrono::DateTime::parse_from_rfc3339(&n.created)
                .ok()
                .map(|t| t.with_timezone(&chrono::Utc));
            f.selects(&n.labels, created)
        })
        .await
        .map_err(error)?;
    Ok(json!({"NetworksDeleted": removed}))
}

/// `POST /networks/{id}/connect` body: `{"Container", "EndpointConfig"}`.
pub async fn connect<B: Backend>(
    d: &Daemon<B>,
    reference: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let container = v["Container"].as_str().unwrap_or_default().to_string();
    let req = crate::network::EndpointRequest::parse(&v["EndpointConfig"]).map_err(error)?;
    let net = find(d, reference)?;
    d.connect_network(&net.name, &container, req)
        .await
        .map_err(error)
}

/// `POST /networks/{id}/disconnect` body: `{"Container", "Force"}`.
pub async fn disconnect<B: Backend>(
    d: &Daemon<B>,
    reference: &str,
    body: &[u8],
) -> Result<(), ApiError> {
    let v: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
    let container = v["Container"].as_str().unwrap_or_default().to_string();
    let net = find(d, reference)?;
    d.disconnect_network(&net.name, &container)
        .await
        .map_err(error)
}

/// The state-changing network routes, run on a task of their own by the handler.
pub async fn change<B: Backend>(
    d: std::sync::Arc<Daemon<B>>,
    route: super::route::Route,
    body: bytes::Bytes,
) -> Result<hyper::Response<super::Body>, ApiError> {
    use super::route::Route;
    let ok = |status: StatusCode| {
        let mut r = hyper::Response::new(super::empty());
        *r.status_mut() = status;
        r
    };
    Ok(match route {
        Route::NetworkCreate => {
            super::json_response(StatusCode::CREATED, &create(&d, &body).await?)
        }
        Route::NetworkRemove { id } => {
            remove(&d, &id).await?;
            ok(StatusCode::NO_CONTENT)
        }
        Route::NetworkPrune { filters } => {
            super::json_response(StatusCode::OK, &prune(&d, &filters).await?)
        }
        Route::NetworkConnect { id } => {
            connect(&d, &id, &body).await?;
            ok(StatusCode::OK)
        }
        Route::NetworkDisconnect { id } => {
            disconnect(&d, &id, &body).await?;
            ok(StatusCode::OK)
        }
        other => {
            return Err(ApiError::new(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("not a network change: {other:?}"),
            ))
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn view(name: &str, record: bool, labels: &[(&str, &str)]) -> View {
        let rec = record.then(|| NetworkRecord {
            id: format!("{name}-id"),
            name: name.into(),
            bridge: "b".into(),
            subnet: "10.0.0.0/24".parse().unwrap(),
            gateway: "10.0.0.1".parse().unwrap(),
            ip_range: None,
            subnet_given: false,
            gateway_given: false,
            internal: false,
            attachable: false,
            labels: labels
                .iter()
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
            options: BTreeMap::new(),
            created: String::new(),
            alloc: Default::default(),
        });
        View {
            name: name.into(),
            id: format!("{name}-id"),
            driver: "bridge",
            record: rec,
        }
    }

    #[test]
    fn filters_like_dockerd() {
        let f = |s: &str| parse_filters(s).unwrap();
        let user = view("front-net", true, &[("env", "prod")]);
        let bridge = view("bridge", true, &[]);
        assert!(matches(&user, false, &f(r#"{"name":["front"]}"#)));
        assert!(!matches(&bridge, false, &f(r#"{"name":["front"]}"#)));
        assert!(matches(&user, false, &f(r#"{"type":{"custom":true}}"#)));
        assert!(matches(&bridge, false, &f(r#"{"type":["builtin"]}"#)));
        assert!(matches(&user, false, &f(r#"{"label":["env=prod"]}"#)));
        assert!(!matches(&user, false, &f(r#"{"label":["env=dev"]}"#)));
        assert!(matches(&user, false, &f(r#"{"id":["front-"]}"#)));
        assert!(matches(&user, false, &f(r#"{"dangling":["true"]}"#)));
        assert!(!matches(&user, true, &f(r#"{"dangling":["true"]}"#)));
        assert!(!matches(&bridge, false, &f(r#"{"dangling":["true"]}"#)));
        assert!(parse_filters(r#"{"bogus":["x"]}"#).is_err());
        assert!(parse_filters(r#"{"type":["weird"]}"#).is_err());
    }
}
