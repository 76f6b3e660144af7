//! The legacy builder's layer cache as `docker system df` and `docker builder prune` see
//! it. Each cache entry is a step image kept under a hidden `berth-build-cache@<key>`
//! name; it is shown as a BuildKit-style `regular` record (dockerd 20.10 shows its legacy
//! cache as images instead, and its BuildKit cache is empty when only the legacy builder
//! runs). `builder prune` takes dockerd's filters (`until`/`unused-for`, `id`, `parent`,
//! `type`, `description`, `inuse`, `shared`, `private`, `label`, `label!`), `--all` and
//! `--keep-storage`.

use std::collections::{BTreeMap, HashMap, HashSet};

use chrono::{DateTime, Utc};
use http::StatusCode;
use serde_json::{json, Value};

use crate::api::filters::{go_duration, label_matches, parse_args};
use crate::api::ApiError;
use crate::backend::Backend;
use crate::daemon::{Daemon, DaemonResult, ImageView, BUILD_CACHE_PREFIX};

/// The filter keys dockerd 20.10 accepts on `POST /build/prune`.
const KEYS: &[&str] = &[
    "until",
    "unused-for",
    "id",
    "parent",
    "type",
    "description",
    "inuse",
    "shared",
    "private",
    "label",
    "label!",
];

/// dockerd wraps every prune error in this.
fn failed(status: StatusCode, message: impl std::fmt::Display) -> ApiError {
    ApiError::new(status, format!("failed to prune build cache: {message}"))
}

/// One cache entry.
#[derive(Debug, Clone)]
pub struct Entry {
    pub id: String,
    /// The cache entry this step was built on (empty for a base image).
    pub parent: String,
    /// The step's `created_by`.
    pub description: String,
    /// The bytes of the layer this step added (0 for a config-only step).
    pub size: i64,
    /// Its layer (or the image itself) is also used by an image that is not cache.
    pub shared: bool,
    pub created: Option<DateTime<Utc>>,
    /// The last build that reused it (its creation when none did).
    pub last_used: Option<DateTime<Utc>>,
    /// Its creation plus every reuse, as BuildKit counts a record's uses.
    pub usage: u64,
    pub labels: BTreeMap<String, String>,
    names: Vec<String>,
}

impl Entry {
    /// A `BuildCache` row of `GET /system/df`.
    pub fn df_row(&self) -> Value {
        json!({
            "ID": self.id,
            "Parent": self.parent,
            "Parents": if self.parent.is_empty() { json!(null) } else { json!([self.parent]) },
            "Type": "regular",
            "Description": self.description,
            "InUse": false,
            "Shared": self.shared,
            "Size": self.size,
            "CreatedAt": self.created.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            "LastUsedAt": self.last_used.map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Nanos, true)),
            "UsageCount": self.usage,
        })
    }

    fn field(&self, key: &str) -> String {
        match key {
            "id" => self.id.clone(),
            "parent" => self.parent.clone(),
            "type" => "regular".into(),
            "description" => self.description.clone(),
            "inuse" => "false".into(),
            "shared" => self.shared.to_string(),
            "private" => (!self.shared).to_string(),
            _ => String::new(),
        }
    }
}

fn short_id(id: &str) -> String {
    id.trim_start_matches("sha256:").to_string()
}

/// Whether an image adds a layer with its last history entry.
fn adds_layer(img: &ImageView) -> bool {
    img.config
        .history
        .last()
        .is_some_and(|h| h["empty_layer"].as_bool() != Some(true))
        && !img.layers.is_empty()
}

/// Every cache entry, plus every image (cache or not) to tell which layers are shared.
pub async fn entries<B: Backend>(d: &Daemon<B>) -> DaemonResult<(Vec<Entry>, Vec<ImageView>)> {
    let images = d.images_with(true).await?;
    // Reuses are recorded on the cache names' records ([`Daemon::mark_cache_used`]).
    let uses: HashMap<String, (Option<DateTime<Utc>>, u64)> = d
        .backend
        .image_list()
        .await?
        .into_iter()
        .filter(|i| i.name.starts_with(BUILD_CACHE_PREFIX))
        .map(|i| (i.name, crate::daemon::cache_uses(&i.labels)))
        .collect();
    let mut used_elsewhere: HashSet<&str> = HashSet::new();
    for img in &images {
        if img.names.iter().any(|n| !n.starts_with(BUILD_CACHE_PREFIX)) {
            used_elsewhere.extend(img.layers.iter().map(|l| l.digest.as_str()));
        }
    }
    let cache: Vec<&ImageView> = images
        .iter()
        .filter(|i| i.names.iter().any(|n| n.starts_with(BUILD_CACHE_PREFIX)))
        .collect();
    // A step's parent is the cache entry whose history is the step's minus its last.
    let by_history: HashMap<String, &ImageView> = cache
        .iter()
        .map(|i| (Value::from(i.config.history.clone()).to_string(), *i))
        .collect();
    let mut out = Vec::new();
    for img in &cache {
        let (last_used, reuses) = img
            .names
            .iter()
            .filter_map(|n| uses.get(n))
            .fold((None, 0), |(t, n), (lt, ln)| (t.max(*lt), n + ln));
        let h = &img.config.history;
        let parent = h
            .split_last()
            .and_then(|(_, rest)| by_history.get(&Value::from(rest.to_vec()).to_string()))
            .map(|p| short_id(&p.id))
            .unwrap_or_default();
        let own = adds_layer(img).then(|| img.layers.last()).flatten();
        let shared = img.names.iter().any(|n| !n.starts_with(BUILD_CACHE_PREFIX))
            || own.is_some_and(|l| used_elsewhere.contains(l.digest.as_str()));
        out.push(Entry {
            id: short_id(&img.id),
            parent,
            description: h
                .last()
                .and_then(|e| e["created_by"].as_str())
                .unwrap_or_default()
                .to_string(),
            size: own.map_or(0, |l| l.size),
            shared,
            created: img.created_at,
            last_used: last_used.or(img.created_at),
            usage: 1 + reuses,
            labels: img
                .config
                .config
                .as_ref()
                .map(|c| c.labels.clone())
                .unwrap_or_default(),
            names: img
                .names
                .iter()
                .filter(|n| n.starts_with(BUILD_CACHE_PREFIX))
                .cloned()
                .collect(),
        });
    }
    out.sort_by(|a, b| a.created.cmp(&b.created).then(a.id.cmp(&b.id)));
    Ok((out, images))
}

/// `docker builder prune`'s options, checked as dockerd checks them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneOptions {
    /// Keep entries used (created) within this many nanoseconds.
    keep_duration: Option<i64>,
    fields: Vec<(String, Option<String>)>,
    labels: Vec<String>,
    not_labels: Vec<String>,
    /// `--all`: BuildKit keeps its internal and frontend records without it; every
    /// berth entry is a `regular` one, so it selects the same entries.
    pub all: bool,
    /// `--keep-storage`: stop once the cache is at most this big (0: no limit).
    keep_storage: i64,
}

/// Go's `time.ParseDuration` error text for `s`.
fn duration_error(s: &str) -> String {
    let digits = s.trim_start_matches(['-', '+']);
    let unit: String = digits
        .trim_start_matches(|c: char| c.is_ascii_digit() || c == '.')
        .chars()
        .take_while(|c| !c.is_ascii_digit() && *c != '.')
        .collect();
    if digits.starts_with(|c: char| c.is_ascii_digit()) && !unit.is_empty() {
        format!("time: unknown unit {unit:?} in duration {s:?}")
    } else {
        format!("time: invalid duration {s:?}")
    }
}

impl PruneOptions {
    pub fn parse(filters: &str, all: bool, keep_storage: &str) -> Result<Self, ApiError> {
        if !filters.trim().is_empty() {
            let v: Value = serde_json::from_str(filters)
                .map_err(|e| failed(StatusCode::BAD_REQUEST, format!("invalid filter: {e}")))?;
            for k in v.as_object().map(|m| m.keys()).into_iter().flatten() {
                if !KEYS.contains(&k.as_str()) {
                    return Err(failed(
                        StatusCode::BAD_REQUEST,
                        format!("Invalid filter '{k}'"),
                    ));
                }
            }
        }
        let args = parse_args(filters, KEYS, |_, _| Ok(()))?;
        let get = |k: &str| args.get(k).cloned();
        let (until, unused) = (get("until"), get("unused-for"));
        if until.is_some() && unused.is_some() {
            return Err(failed(
                StatusCode::BAD_REQUEST,
                "conflicting filters: \"until\" and \"unused-for\"",
            ));
        }
        let key = if unused.is_some() {
            "unused-for"
        } else {
            "until"
        };
        let keep_duration = match until.or(unused).unwrap_or_default().as_slice() {
            [] => None,
            [one] => Some(go_duration(one).ok_or_else(|| {
                failed(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!(
                        "{key:?} filter expects a duration (e.g., '24h'): {}",
                        duration_error(one)
                    ),
                )
            })?),
            _ => {
                return Err(failed(
                    StatusCode::BAD_REQUEST,
                    "filters expect only one value",
                ))
            }
        };
        let mut fields = Vec::new();
        for k in [
            "id",
            "parent",
            "type",
            "description",
            "inuse",
            "shared",
            "private",
        ] {
            match get(k).as_deref() {
                None => {}
                Some([]) => fields.push((k.to_string(), None)),
                Some([one]) => fields.push((k.to_string(), Some(one.clone()))),
                Some(_) => {
                    return Err(failed(
                        StatusCode::BAD_REQUEST,
                        "filters expect only one value",
                    ))
                }
            }
        }
        let keep_storage = match keep_storage {
            "" => 0,
            s => s.parse::<i64>().map_err(|_| {
                ApiError::new(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("keep-storage is in bytes and expects an integer, got {s}: strconv.Atoi: parsing {s:?}: invalid syntax"),
                )
            })?,
        };
        Ok(Self {
            keep_duration,
            fields,
            labels: get("label").unwrap_or_default(),
            not_labels: get("label!").unwrap_or_default(),
            all,
            keep_storage,
        })
    }

    /// Whether the filters select `e` (BuildKit's `id~=` is a match anywhere in the ID,
    /// the other fields must be equal; a field without a value must be `true`).
    fn selects(&self, e: &Entry, now: DateTime<Utc>) -> bool {
        let fields_ok = self.fields.iter().all(|(k, v)| {
            let have = e.field(k);
            match (k.as_str(), v) {
                ("id", Some(v)) => have.contains(v.as_str()),
                (_, Some(v)) => &have == v,
                (_, None) => have == "true",
            }
        });
        let all = |fs: &[String]| fs.iter().all(|f| label_matches(&e.labels, f));
        let labels_ok = all(&self.labels) && (self.not_labels.is_empty() || !all(&self.not_labels));
        // `until`/`unused-for`: BuildKit keeps what was used within the duration.
        let old_enough = match (self.keep_duration, e.last_used.or(e.created)) {
            (Some(ns), Some(used)) => used <= now - chrono::Duration::nanoseconds(ns),
            _ => true,
        };
        fields_ok && labels_ok && old_enough
    }
}

/// Deletes the selected cache entries, oldest first (with `--keep-storage`, only until
/// the cache is small enough). Returns their IDs and the bytes of layers no image uses
/// any more (highd's GC reclaims them).
pub async fn prune<B: Backend>(
    d: &Daemon<B>,
    opts: &PruneOptions,
) -> DaemonResult<(Vec<String>, i64)> {
    let (entries, images) = entries(d).await?;
    let now = Utc::now();
    let mut total: i64 = entries.iter().map(|e| e.size).sum();
    let mut gone: HashSet<String> = HashSet::new();
    let mut ids = Vec::new();
    for e in entries.iter().filter(|e| opts.selects(e, now)) {
        if opts.keep_storage > 0 && total <= opts.keep_storage {
            break;
        }
        for name in &e.names {
            d.backend.image_delete(name).await?;
        }
        total -= e.size;
        gone.insert(e.id.clone());
        ids.push(e.id.clone());
    }
    // Layers of images that lost their last name and no remaining image uses.
    let mut kept_layers: HashSet<&str> = HashSet::new();
    let mut freed: BTreeMap<&str, i64> = BTreeMap::new();
    for img in &images {
        let only_cache = img.names.iter().all(|n| n.starts_with(BUILD_CACHE_PREFIX));
        if only_cache && gone.contains(&short_id(&img.id)) {
            for l in &img.layers {
                freed.insert(l.digest.as_str(), l.size);
            }
        } else {
            kept_layers.extend(img.layers.iter().map(|l| l.digest.as_str()));
        }
    }
    let space = freed
        .iter()
        .filter(|(d, _)| !kept_layers.contains(*d))
        .map(|(_, size)| size)
        .sum();
    Ok((ids, space))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(id: &str, shared: bool, age_h: i64) -> Entry {
        Entry {
            id: id.into(),
            parent: String::new(),
            description: "/bin/sh -c echo".into(),
            size: 10,
            shared,
            created: Some(Utc::now() - chrono::Duration::hours(age_h)),
            last_used: None,
            usage: 1,
            labels: BTreeMap::from([("a".to_string(), "b".to_string())]),
            names: Vec::new(),
        }
    }

    fn msg(r: Result<PruneOptions, ApiError>) -> (u16, String) {
        let e = r.unwrap_err();
        (e.status.as_u16(), e.message)
    }

    #[test]
    fn filters_checked_as_dockerd() {
        assert_eq!(
            msg(PruneOptions::parse(r#"{"foo":["x"]}"#, false, "")),
            (
                400,
                "failed to prune build cache: Invalid filter 'foo'".into()
            )
        );
        assert_eq!(
            msg(PruneOptions::parse(r#"{"until":["xx"]}"#, false, "")),
            (500, "failed to prune build cache: \"until\" filter expects a duration (e.g., '24h'): time: invalid duration \"xx\"".into())
        );
        assert_eq!(
            msg(PruneOptions::parse(r#"{"unused-for":["1d"]}"#, false, "")).1,
            "failed to prune build cache: \"unused-for\" filter expects a duration (e.g., '24h'): time: unknown unit \"d\" in duration \"1d\""
        );
        assert_eq!(
            msg(PruneOptions::parse(
                r#"{"until":["1h"],"unused-for":["2h"]}"#,
                false,
                ""
            ))
            .1,
            "failed to prune build cache: conflicting filters: \"until\" and \"unused-for\""
        );
        assert_eq!(
            msg(PruneOptions::parse(r#"{"id":["a","b"]}"#, false, "")).1,
            "failed to prune build cache: filters expect only one value"
        );
        assert_eq!(msg(PruneOptions::parse("", false, "abc")).0, 500);
    }

    #[test]
    fn selects_by_age_label_and_fields() {
        let now = Utc::now();
        let old = entry("aaa111", false, 48);
        let new = entry("bbb222", true, 0);
        let o = PruneOptions::parse(r#"{"until":["24h"]}"#, false, "").unwrap();
        assert!(o.selects(&old, now) && !o.selects(&new, now));
        let o = PruneOptions::parse(r#"{"label":["a=b"]}"#, false, "").unwrap();
        assert!(o.selects(&old, now));
        let o = PruneOptions::parse(r#"{"label!":["a"]}"#, false, "").unwrap();
        assert!(!o.selects(&old, now));
        let o = PruneOptions::parse(r#"{"id":["b2"],"shared":["true"]}"#, false, "").unwrap();
        assert!(o.selects(&new, now) && !o.selects(&old, now));
        let o =
            PruneOptions::parse(r#"{"type":["regular"],"private":["true"]}"#, false, "").unwrap();
        assert!(o.selects(&old, now) && !o.selects(&new, now));
    }
}
