//! `/volumes` (create, list, inspect, remove, prune), in dockerd's shapes and with its
//! filter rules.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::filters::{label_matches, parse_args};
use super::ApiError;
use crate::backend::Backend;
use crate::daemon::Daemon;
use crate::volumes::Volume;

/// Filter key → values, from either encoding docker clients send (values are checked
/// where they are used).
fn parse_filters(raw: &str, keys: &[&str]) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    parse_args(raw, keys, |_, _| Ok(()))
}

/// dockerd's boolean filter values.
fn filter_bool(key: &str, v: &str) -> Result<bool, ApiError> {
    match v.to_ascii_lowercase().as_str() {
        "true" | "1" => Ok(true),
        "false" | "0" => Ok(false),
        _ => Err(ApiError::bad_request(format!("invalid filter '{key}={v}'"))),
    }
}

/// `label=k` / `label=k=v`: every one given must match.
fn labels_match(v: &Volume, wanted: &[String]) -> bool {
    let empty = BTreeMap::new();
    let labels = v.labels.as_ref().unwrap_or(&empty);
    wanted.iter().all(|w| label_matches(labels, w))
}

pub fn list<B: Backend>(d: &Daemon<B>, raw: &str) -> Result<Value, ApiError> {
    let f = parse_filters(raw, &["dangling", "name", "label", "driver"])?;
    let dangling = match f.get("dangling").and_then(|v| v.first()) {
        Some(v) => Some(filter_bool("dangling", v)?),
        None => None,
    };
    let vols: Vec<Value> = d
        .volumes
        .list()
        .into_iter()
        .filter(|v| dangling.is_none_or(|want| d.volumes.in_use(&v.name) != want))
        .filter(|v| {
            f.get("name")
                .is_none_or(|n| n.iter().any(|n| v.name.contains(n.as_str())))
        })
        .filter(|_| {
            f.get("driver")
                .is_none_or(|n| n.iter().any(|n| n == "local"))
        })
        .filter(|v| f.get("label").is_none_or(|l| labels_match(v, l)))
        .map(|v| d.volumes.view(&v, false))
        .collect();
    Ok(json!({"Volumes": vols, "Warnings": null}))
}

/// `POST /volumes/prune`: unused volumes, only anonymous ones (API 1.42+) unless the
/// `all` filter is true; `label` / `label!` filters narrow it.
pub fn prune<B: Backend>(
    d: &Daemon<B>,
    raw: &str,
    anonymous_only: bool,
) -> Result<Value, ApiError> {
    let f = parse_filters(raw, &["all", "label", "label!"])?;
    let all = match f.get("all").and_then(|v| v.first()) {
        Some(v) => filter_bool("all", v)?,
        None => !anonymous_only,
    };
    let with = f.get("label").cloned().unwrap_or_default();
    let without = f.get("label!").cloned().unwrap_or_default();
    let (gone, space) = d.volumes.prune(|v| {
        (all || v.is_anonymous())
            && labels_match(v, &with)
            && (without.is_empty()
                || !without
                    .iter()
                    .any(|w| labels_match(v, std::slice::from_ref(w))))
    });
    Ok(json!({"VolumesDeleted": gone, "SpaceReclaimed": space}))
}
