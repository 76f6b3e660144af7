//! `GET /containers/json?filters=...`: docker's filter argument, parsed without I/O and
//! applied to records.

use std::collections::BTreeMap;

use super::error::ApiError;
use crate::daemon::health_api;
use crate::record::ContainerRecord;

const KEYS: &[&str] = &["id", "name", "status", "label", "exited", "health"];

/// Filter key → accepted values; a record must match one value of every key.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ContainerFilters(BTreeMap<String, Vec<String>>);

impl ContainerFilters {
    /// Accepts both encodings docker clients send: `{"k":["v"]}` and the older
    /// `{"k":{"v":true}}`.
    pub fn parse(raw: &str) -> Result<Self, ApiError> {
        parse_args(raw, KEYS, |key, s| {
            let known = matches!(
                s,
                "created" | "restarting" | "running" | "removing" | "paused" | "exited" | "dead"
            );
            if key == "status" && !known {
                return Err(ApiError::bad_request(format!(
                    "invalid filter 'status={s}'"
                )));
            }
            if key == "health" && !health_api::is_filter_value(s) {
                return Err(ApiError::bad_request(format!(
                    "Unrecognised filter value for health: {s}"
                )));
            }
            Ok(())
        })
        .map(Self)
    }

    /// Whether a status filter was given (it makes `all` implicit, as in dockerd).
    pub fn has_status(&self) -> bool {
        self.0.contains_key("status")
    }

    pub fn matches(&self, rec: &ContainerRecord) -> bool {
        self.0.iter().all(|(key, values)| {
            // dockerd ANDs label filters (every label must match) and ORs the values of
            // every other key; compose relies on project AND service labels.
            if key == "label" {
                return values.iter().all(|v| label_matches(&rec.config.labels, v));
            }
            values.is_empty()
                || values.iter().any(|v| match key.as_str() {
                    "id" => rec.id.starts_with(v.as_str()),
                    "name" => rec
                        .name
                        .trim_start_matches('/')
                        .contains(v.trim_start_matches('/')),
                    "status" => rec.state.status_str() == v,
                    "health" => health_api::filter_status(rec.state.health.as_ref()) == v,
                    "exited" => {
                        rec.state.status.as_str() == "exited"
                            && rec.state.exit_code.to_string() == *v
                    }
                    _ => false,
                })
        })
    }
}

/// docker's `filters` query argument as key → values, from either encoding clients send:
/// `{"k":["v"]}` or the older `{"k":{"v":true}}`. A key outside `keys` is dockerd's 400
/// `invalid filter 'k'`; `check` sees each value of each key, in order, and refuses the
/// ones its endpoint does not accept.
pub fn parse_args(
    raw: &str,
    keys: &[&str],
    check: impl Fn(&str, &str) -> Result<(), ApiError>,
) -> Result<BTreeMap<String, Vec<String>>, ApiError> {
    let mut out = BTreeMap::new();
    if raw.trim().is_empty() {
        return Ok(out);
    }
    let value: serde_json::Value = serde_json::from_str(raw)
        .map_err(|e| ApiError::bad_request(format!("invalid filter: {e}")))?;
    let Some(map) = value.as_object() else {
        return Err(ApiError::bad_request(
            "invalid filter: expected a JSON object",
        ));
    };
    for (key, values) in map {
        if !keys.contains(&key.as_str()) {
            return Err(ApiError::bad_request(format!("invalid filter '{key}'")));
        }
        let list: Vec<String> = match values {
            serde_json::Value::Array(a) => a
                .iter()
                .filter_map(|v| v.as_str().map(str::to_string))
                .collect(),
            serde_json::Value::Object(o) => o
                .iter()
                .filter(|(_, b)| b.as_bool() == Some(true))
                .map(|(k, _)| k.clone())
                .collect(),
            _ => return Err(ApiError::bad_request(format!("invalid filter '{key}'"))),
        };
        for v in &list {
            check(key, v)?;
        }
        out.insert(key.clone(), list);
    }
    Ok(out)
}

/// A `label=k` (present) or `label=k=v` (equal) filter value against a label map.
pub fn label_matches(labels: &BTreeMap<String, String>, filter: &str) -> bool {
    match filter.split_once('=') {
        Some((k, v)) => labels.get(k).is_some_and(|x| x == v),
        None => labels.contains_key(filter),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::Status;

    fn rec(id: &str, name: &str, status: Status, code: i64) -> ContainerRecord {
        let mut r = crate::store::tests::record(id, name);
        r.state.status = status;
        r.state.exit_code = code;
        r.config.labels.insert("app".into(), "web".into());
        r
    }

    #[test]
    fn parses_both_encodings_and_rejects_unknown_keys() {
        let a = ContainerFilters::parse(r#"{"status":["exited"]}"#).unwrap();
        let b = ContainerFilters::parse(r#"{"status":{"exited":true}}"#).unwrap();
        assert_eq!(a, b);
        assert!(a.has_status());
        assert_eq!(
            ContainerFilters::parse(r#"{"bogus":["x"]}"#)
                .unwrap_err()
                .message,
            "invalid filter 'bogus'"
        );
        assert!(ContainerFilters::parse(r#"{"status":["sleepy"]}"#).is_err());
        assert_eq!(
            ContainerFilters::parse("").unwrap(),
            ContainerFilters::default()
        );
    }

    #[test]
    fn matching() {
        let running = rec("abc", "web1", Status::Running, 0);
        let exited = rec("def", "db", Status::Exited, 3);
        let f = |s: &str| ContainerFilters::parse(s).unwrap();
        assert!(f(r#"{"status":["running"]}"#).matches(&running));
        assert!(!f(r#"{"status":["running"]}"#).matches(&exited));
        assert!(f(r#"{"exited":["3"]}"#).matches(&exited));
        assert!(f(r#"{"name":["web"]}"#).matches(&running));
        assert!(f(r#"{"id":["de"]}"#).matches(&exited));
        assert!(f(r#"{"label":["app=web"]}"#).matches(&exited));
        assert!(!f(r#"{"label":["app=db"]}"#).matches(&exited));
        assert!(f(r#"{"label":["app"],"status":["exited","running"]}"#).matches(&running));
        // Several labels must all match (compose filters by project AND service).
        assert!(!f(r#"{"label":["app=web","tier=db"]}"#).matches(&exited));
    }

    #[test]
    fn health() {
        let mut checked = rec("abc", "web1", Status::Running, 0);
        checked.state.health = Some(crate::daemon::Health {
            status: "healthy".into(),
            failing_streak: 0,
            log: Vec::new(),
        });
        let plain = rec("def", "db", Status::Running, 0);
        let f = |s: &str| ContainerFilters::parse(s).unwrap();
        assert!(f(r#"{"health":["healthy"]}"#).matches(&checked));
        assert!(!f(r#"{"health":["healthy"]}"#).matches(&plain));
        assert!(f(r#"{"health":["none"]}"#).matches(&plain));
        assert_eq!(
            ContainerFilters::parse(r#"{"health":["fine"]}"#)
                .unwrap_err()
                .message,
            "Unrecognised filter value for health: fine"
        );
    }
}
