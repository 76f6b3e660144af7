//! `GET /system/df` in dockerd's shape (moby's system router and daemon/disk_usage.go):
//! `LayersSize` counts every layer once however many images share it, each image says
//! how much of it is shared (`SharedSize`; the CLI shows `Size - SharedSize` as UNIQUE
//! SIZE) and how many containers use it, containers carry `SizeRw` and `SizeRootFs`,
//! volumes their `UsageData`. `?type=` (API 1.42+) narrows what is computed.

use std::collections::HashMap;

use serde_json::{json, Value};

use super::ApiError;
use crate::backend::Backend;
use crate::daemon::{self, chain_id, Daemon, ImageView};
use crate::volumes::dir_size;

/// The object types `?type=` may name (moby's `DiskUsageObject`).
#[derive(Debug, Default, PartialEq, Eq)]
struct Wanted {
    containers: bool,
    images: bool,
    volumes: bool,
    build_cache: bool,
}

impl Wanted {
    /// No `type` (or an API before 1.42, which had none): everything.
    fn parse(types: &[String], before_1_42: bool) -> Result<Wanted, ApiError> {
        if types.is_empty() || before_1_42 {
            return Ok(Wanted {
                containers: true,
                images: true,
                volumes: true,
                build_cache: true,
            });
        }
        let mut w = Wanted::default();
        for t in types {
            match t.as_str() {
                "container" => w.containers = true,
                "image" => w.images = true,
                "volume" => w.volumes = true,
                "build-cache" => w.build_cache = true,
                other => {
                    return Err(ApiError::bad_request(format!(
                        "unknown object type: {other}"
                    )))
                }
            }
        }
        Ok(w)
    }
}

/// Each image's layers as (chain ID, unpacked size), in order.
fn layers_of(img: &ImageView) -> Vec<(String, i64)> {
    let diff_ids = &img.config.rootfs.diff_ids;
    (0..diff_ids.len().min(img.layer_sizes.len()))
        .map(|i| (chain_id(&diff_ids[..=i]), img.layer_sizes[i]))
        .collect()
}

/// The size of every distinct layer (by chain ID, as dockerd's layer store keys them)
/// added up once, and per image the part of its size in layers another image also has.
fn layer_usage(images: &[Vec<(String, i64)>]) -> (i64, Vec<i64>) {
    let mut refs: HashMap<&str, (usize, i64)> = HashMap::new();
    for layers in images {
        for (chain, size) in layers {
            refs.entry(chain.as_str()).or_insert((0, *size)).0 += 1;
        }
    }
    let total = refs.values().map(|(_, size)| size).sum();
    let shared = images
        .iter()
        .map(|layers| {
            layers
                .iter()
                .filter(|(chain, _)| refs.get(chain.as_str()).is_some_and(|(n, _)| *n > 1))
                .map(|(_, size)| size)
                .sum()
        })
        .collect();
    (total, shared)
}

pub async fn df<B: Backend>(
    d: &Daemon<B>,
    types: &[String],
    before_1_42: bool,
    before_1_44: bool,
) -> Result<Value, ApiError> {
    let want = Wanted::parse(types, before_1_42)?;
    // Containers need their image's size too (SizeRootFs).
    let images = if want.images || want.containers {
        d.list_images().await.map_err(ApiError::from)?
    } else {
        Vec::new()
    };
    let recs = d.store.list();
    let mut out = json!({
        "LayersSize": 0,
        "Images": null,
        "Containers": null,
        "Volumes": null,
        "BuildCache": null,
    });
    if want.images {
        let layers: Vec<_> = images.iter().map(layers_of).collect();
        let (layers_size, shared) = layer_usage(&layers);
        let rows: Vec<Value> = images
            .iter()
            .zip(shared)
            .map(|(img, shared)| {
                let mut v = daemon::image_summary(img);
                v["Containers"] = json!(recs.iter().filter(|r| r.image == img.id).count());
                v["SharedSize"] = json!(shared);
                // Dropped at API 1.44; before it, the same number as Size.
                if before_1_44 {
                    v["VirtualSize"] = v["Size"].clone();
                }
                v
            })
            .collect();
        out["LayersSize"] = json!(layers_size);
        out["Images"] = json!(rows);
    }
    if want.containers {
        let sizes: HashMap<&str, i64> = images.iter().map(|i| (i.id.as_str(), i.size())).collect();
        let now = chrono::Utc::now();
        let mut rows = Vec::new();
        for r in &recs {
            let mut v = daemon::container_summary(r, now);
            let rw = match d.backend.snapshot_mounts(&r.snapshot_key).await {
                Ok(m) => {
                    crate::archive::rootfs::layers(&m).map_or(0, |(upper, _)| dir_size(&upper))
                }
                Err(_) => 0,
            };
            // dockerd: the image's layers plus the writable one.
            let image = sizes.get(r.image.as_str()).copied().unwrap_or(0);
            v["SizeRw"] = json!(rw);
            v["SizeRootFs"] = json!(image.saturating_add(i64::try_from(rw).unwrap_or(i64::MAX)));
            rows.push(v);
        }
        out["Containers"] = json!(rows);
    }
    if want.volumes {
        let rows: Vec<Value> = d
            .volumes
            .list()
            .iter()
            .map(|v| d.volumes.view(v, true))
            .collect();
        out["Volumes"] = json!(rows);
    }
    if want.build_cache {
        let (cache, _) = crate::build::cache::entries(d)
            .await
            .map_err(ApiError::from)?;
        out["BuildCache"] = json!(cache.iter().map(|e| e.df_row()).collect::<Vec<_>>());
        // Deprecated, and only sent to clients before API 1.42 (omitempty).
        let builder_size: i64 = cache.iter().filter(|e| !e.shared).map(|e| e.size).sum();
        if before_1_42 && builder_size != 0 {
            out["BuilderSize"] = json!(builder_size);
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn layers(spec: &[(&str, i64)]) -> Vec<(String, i64)> {
        spec.iter().map(|(c, s)| (c.to_string(), *s)).collect()
    }

    #[test]
    fn shared_layers_count_once_and_per_image_shared_size_is_what_others_also_have() {
        let base = layers(&[("c1", 100)]);
        let a = layers(&[("c1", 100), ("a2", 10)]);
        let b = layers(&[("c1", 100), ("b2", 20), ("b3", 0)]);
        let lone = layers(&[("z1", 7)]);
        let (total, shared) = layer_usage(&[base, a, b, lone]);
        assert_eq!(total, 100 + 10 + 20 + 7);
        assert_eq!(shared, vec![100, 100, 100, 0]);
        assert_eq!(layer_usage(&[]), (0, vec![]));
    }

    #[test]
    fn type_names_dockerds_objects_and_old_apis_get_everything() {
        let all = Wanted::parse(&[], false).unwrap();
        assert!(all.containers && all.images && all.volumes && all.build_cache);
        let some = Wanted::parse(&["image".into(), "build-cache".into()], false).unwrap();
        assert_eq!(
            some,
            Wanted {
                images: true,
                build_cache: true,
                ..Default::default()
            }
        );
        assert_eq!(Wanted::parse(&["bogus".into()], true).unwrap(), all);
        let err = Wanted::parse(&["bogus".into()], false).unwrap_err();
        assert!(
            err.to_string().contains("unknown object type: bogus"),
            "{err}"
        );
    }
}
