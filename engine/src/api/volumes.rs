//! `/volumes` (create, list, inspect, remove, prune) and `GET /system/df`, in dockerd's
//! shapes and with its filter rules.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use super::filters::{label_matches, parse_args};
use super::ApiError;
use crate::backend::Backend;
use crate::daemon::{self, Daemon};
use crate::volumes::{dir_size, Volume};

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

/// `GET /system/df`: images, containers (with the size of their writable layer) and
/// volumes (with size and reference count), and the build cache's entries.
pub async fn df<B: Backend>(d: &Daemon<B>) -> Result<Value, ApiError> {
    let images = d.list_images().await.map_err(ApiError::from)?;
    let recs = d.store.list();
    let now = chrono::Utc::now();
    let mut layers_size: i64 = 0;
    let image_list: Vec<Value> = images
        .iter()
        .map(|img| {
            let mut v = daemon::image_summary(img);
            let size = v["Size"].as_i64().unwrap_or(0);
            layers_size += size;
            let users = recs.iter().filter(|r| r.image == img.id).count();
            v["Containers"] = json!(users);
            v["SharedSize"] = json!(0);
            v
        })
        .collect();
    let mut containers = Vec::new();
    for r in &recs {
        let mut v = daemon::container_summary(r, now);
        let rw = match d.backend.snapshot_mounts(&r.snapshot_key).await {
            Ok(m) => crate::archive::rootfs::layers(&m).map_or(0, |(upper, _)| dir_size(&upper)),
            Err(_) => 0,
        };
        v["SizeRw"] = json!(rw);
        v["SizeRootFs"] = json!(rw);
        containers.push(v);
    }
    let (cache, _) = crate::build::cache::entries(d)
        .await
        .map_err(ApiError::from)?;
    let volumes: Vec<Value> = d
        .volumes
        .list()
        .iter()
        .map(|v| d.volumes.view(v, true))
        .collect();
    Ok(json!({
        "LayersSize": layers_size,
        "Images": image_list,
        "Containers": containers,
        "Volumes": volumes,
        "BuildCache": cache.iter().map(|e| e.df_row()).collect::<Vec<_>>(),
        "BuilderSize": cache.iter().filter(|e| !e.shared).map(|e| e.size).sum::<i64>(),
    }))
}
