//! `GET /containers/json?filters=...`: docker's filter argument, parsed without I/O and
//! applied to records.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

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

/// The `label`, `label!` and `until` filters every prune endpoint shares, as dockerd's
/// `matchLabels` and `getUntilFromPruneFilters` read them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PruneFilters {
    labels: Vec<String>,
    not_labels: Vec<String>,
    until: Option<DateTime<Utc>>,
}

impl PruneFilters {
    /// Parses `raw` with the endpoint's `keys` (which should include `label`, `label!`
    /// and `until`); returns the shared filters and every key's values for the rest.
    pub fn parse(
        raw: &str,
        keys: &[&str],
        check: impl Fn(&str, &str) -> Result<(), ApiError>,
    ) -> Result<(Self, BTreeMap<String, Vec<String>>), ApiError> {
        let now = Utc::now();
        let args = parse_args(raw, keys, |k, v| {
            if k == "until" {
                parse_timestamp(v, now)?;
            }
            check(k, v)
        })?;
        let get = |k: &str| args.get(k).cloned().unwrap_or_default();
        let until = match get("until").as_slice() {
            [] => None,
            [one] => Some(parse_timestamp(one, now)?),
            _ => {
                return Err(ApiError::bad_request(
                    "more than one until filter specified",
                ));
            }
        };
        Ok((
            Self {
                labels: get("label"),
                not_labels: get("label!"),
                until,
            },
            args,
        ))
    }

    /// Whether an object with these labels, created at `created`, may be pruned: every
    /// `label` matches, not every `label!` does, and it was created before `until`.
    pub fn selects(
        &self,
        labels: &BTreeMap<String, String>,
        created: Option<DateTime<Utc>>,
    ) -> bool {
        let all = |fs: &[String]| fs.iter().all(|f| label_matches(labels, f));
        if !all(&self.labels) || (!self.not_labels.is_empty() && all(&self.not_labels)) {
            return false;
        }
        match (self.until, created) {
            (Some(until), Some(created)) => created <= until,
            _ => true,
        }
    }
}

/// dockerd's `timetypes.GetTimestamp` for a filter value: a Go duration before `now`
/// (`10m`, `1h30m`), an RFC 3339 time or date (local time without a zone), or UNIX
/// seconds with optional fraction.
pub fn parse_timestamp(value: &str, now: DateTime<Utc>) -> Result<DateTime<Utc>, ApiError> {
    if value != "0" {
        if let Some(nanos) = go_duration(value) {
            return Ok(now - chrono::Duration::nanoseconds(nanos));
        }
    }
    if value.contains('-') {
        if let Ok(t) = DateTime::parse_from_rfc3339(value) {
            return Ok(t.with_timezone(&Utc));
        }
        let local = |t: chrono::NaiveDateTime| {
            t.and_local_timezone(chrono::Local)
                .earliest()
                .map(|t| t.with_timezone(&Utc))
        };
        for f in ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M", "%Y-%m-%dT%H"] {
            if let Some(t) = chrono::NaiveDateTime::parse_from_str(value, f)
                .ok()
                .and_then(local)
            {
                return Ok(t);
            }
        }
        if let Some(t) = chrono::NaiveDate::parse_from_str(value, "%Y-%m-%d")
            .ok()
            .and_then(|d| d.and_hms_opt(0, 0, 0))
            .and_then(local)
        {
            return Ok(t);
        }
        return Err(ApiError::bad_request(format!(
            "parsing time {value:?}: not an RFC 3339 time or date"
        )));
    }
    let bad = || {
        ApiError::bad_request(format!(
            "failed to parse value as time or duration: {value:?}"
        ))
    };
    let (secs, frac) = value.split_once('.').unwrap_or((value, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let nanos: u32 = if frac.is_empty() {
        0
    } else {
        if frac.len() > 9 || !frac.bytes().all(|b| b.is_ascii_digit()) {
            return Err(bad());
        }
        format!("{frac:0<9}").parse().map_err(|_| bad())?
    };
    DateTime::from_timestamp(secs, nanos).ok_or_else(bad)
}

/// Go's `time.ParseDuration` in nanoseconds: `[-+]` then number-unit pairs
/// (`1h30m`, `1.5s`, `300ms`); units ns, us, µs, ms, s, m, h.
pub(crate) fn go_duration(s: &str) -> Option<i64> {
    let (neg, mut rest) = match s.as_bytes().first()? {
        b'-' => (true, &s[1..]),
        b'+' => (false, &s[1..]),
        _ => (false, s),
    };
    if rest.is_empty() {
        return None;
    }
    let mut total = 0f64;
    while !rest.is_empty() {
        let n = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let number: f64 = rest[..n].parse().ok()?;
        rest = &rest[n..];
        let u = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..u] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return None,
        };
        rest = &rest[u..];
        total += number * unit;
    }
    #[allow(clippy::cast_possible_truncation)]
    let nanos = total.min(i64::MAX as f64) as i64;
    Some(if neg { -nanos } else { nanos })
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
    fn timestamps_as_dockerd_reads_them() {
        let now = DateTime::parse_from_rfc3339("2026-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let t = |v: &str| parse_timestamp(v, now).unwrap().to_rfc3339();
        assert_eq!(t("10m"), "2026-01-02T02:54:05+00:00");
        assert_eq!(t("1h30m"), "2026-01-02T01:34:05+00:00");
        assert_eq!(t("1.5s"), "2026-01-02T03:04:03.500+00:00");
        assert_eq!(t("1700000000"), "2023-11-14T22:13:20+00:00");
        assert_eq!(t("1700000000.5"), "2023-11-14T22:13:20.500+00:00");
        assert_eq!(t("2025-06-01T10:00:00Z"), "2025-06-01T10:00:00+00:00");
        assert_eq!(t("2025-06-01T10:00:00+02:00"), "2025-06-01T08:00:00+00:00");
        assert_eq!(t("0"), "1970-01-01T00:00:00+00:00");
        assert!(parse_timestamp("2025-06-01", now).is_ok());
        assert_eq!(
            parse_timestamp("soon", now).unwrap_err().message,
            "failed to parse value as time or duration: \"soon\""
        );
        assert!(parse_timestamp("2025-13-01", now).is_err());
    }

    #[test]
    fn prune_filters_select_like_dockerd() {
        let keys = &["label", "label!", "until"];
        let p = |raw: &str| PruneFilters::parse(raw, keys, |_, _| Ok(())).unwrap().0;
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())]
            .into_iter()
            .collect();
        let old = Some(Utc::now() - chrono::Duration::hours(2));
        let new = Some(Utc::now());
        assert!(p("").selects(&labels, new));
        assert!(p(r#"{"until":["1h"]}"#).selects(&labels, old));
        assert!(!p(r#"{"until":["1h"]}"#).selects(&labels, new));
        assert!(p(r#"{"label":["app=web"]}"#).selects(&labels, new));
        assert!(!p(r#"{"label":["app=db"]}"#).selects(&labels, new));
        assert!(!p(r#"{"label!":["app"]}"#).selects(&labels, new));
        assert!(p(r#"{"label!":["tier"]}"#).selects(&labels, new));
        // Every label! must match to keep the object (MatchKVList).
        assert!(p(r#"{"label!":["app","tier"]}"#).selects(&labels, new));
        let err = PruneFilters::parse(r#"{"until":["1h","2h"]}"#, keys, |_, _| Ok(())).unwrap_err();
        assert_eq!(err.message, "more than one until filter specified");
        let err = PruneFilters::parse(r#"{"dangling":["true"]}"#, keys, |_, _| Ok(())).unwrap_err();
        assert_eq!(err.message, "invalid filter 'dangling'");
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
