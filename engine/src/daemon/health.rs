//! Health checks (`--health-cmd` and friends, the image's `HEALTHCHECK`): the config as
//! dockerd merges and validates it, and the state machine of `State.Health`. The monitor
//! that runs the probes is in `health_monitor`.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::InvalidParameter;
use crate::types::nullable;

/// dockerd's defaults (daemon/health.go).
const DEFAULT_INTERVAL: Duration = Duration::from_secs(30);
const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
const DEFAULT_START_INTERVAL: Duration = Duration::from_secs(5);
const DEFAULT_RETRIES: i64 = 3;
/// Results kept in `State.Health.Log`.
pub const MAX_LOG_ENTRIES: usize = 5;
/// Probe output kept per result; more is cut and marked with `...`.
pub const MAX_OUTPUT_LEN: usize = 4096;

pub const STARTING: &str = "starting";
pub const HEALTHY: &str = "healthy";
pub const UNHEALTHY: &str = "unhealthy";
/// What `ps --filter health=` calls a container without a monitor.
pub const NONE: &str = "none";

/// The values `docker ps --filter health=` accepts.
pub fn is_filter_value(v: &str) -> bool {
    matches!(v, STARTING | HEALTHY | UNHEALTHY | NONE)
}

/// A container's health as `docker ps --filter health=` sees it.
pub fn filter_status(h: Option<&Health>) -> &str {
    h.map_or(NONE, |h| h.status.as_str())
}

/// `State.Health` in inspect.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct Health {
    pub status: String,
    pub failing_streak: u32,
    pub log: Vec<HealthResult>,
}

/// One probe's result, as dockerd keeps the last five.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct HealthResult {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
    pub exit_code: i64,
    pub output: String,
}

/// The word `docker ps` shows after "Up ...": dockerd's `health: starting` while starting.
pub fn ps_word(status: &str) -> String {
    match status {
        "starting" => "health: starting".into(),
        other => other.into(),
    }
}

/// `Config.Healthcheck` (durations in nanoseconds, as the API sends them; docker-py sends
/// `null` for what it leaves unset).
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct HealthConfig {
    #[serde(skip_serializing_if = "Vec::is_empty", deserialize_with = "nullable")]
    pub test: Vec<String>,
    #[serde(skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    pub interval: i64,
    #[serde(skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    pub timeout: i64,
    #[serde(skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    pub start_period: i64,
    #[serde(skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    pub start_interval: i64,
    #[serde(skip_serializing_if = "is_zero", deserialize_with = "nullable")]
    pub retries: i64,
}

fn is_zero(n: &i64) -> bool {
    *n == 0
}

fn or_default(ns: i64, default: Duration) -> Duration {
    if ns > 0 {
        Duration::from_nanos(ns as u64)
    } else {
        default
    }
}

impl HealthConfig {
    /// The `Healthcheck` value of a config's extra fields, if there is one.
    pub fn from_extra(extra: &serde_json::Map<String, Value>) -> Option<Self> {
        extra
            .get("Healthcheck")
            .filter(|v| !v.is_null())
            .and_then(|v| serde_json::from_value(v.clone()).ok())
    }

    /// The command a probe runs: `None` for `NONE`, no test, or a kind dockerd does not
    /// know (it logs and runs nothing). `shell` is the container's `Shell` or `/bin/sh -c`.
    pub fn probe_command(&self, shell: &[String]) -> Option<Vec<String>> {
        let (kind, rest) = self.test.split_first()?;
        match kind.as_str() {
            "CMD" if !rest.is_empty() => Some(rest.to_vec()),
            "CMD-SHELL" if !rest.is_empty() => {
                let mut cmd = if shell.is_empty() {
                    vec!["/bin/sh".to_string(), "-c".to_string()]
                } else {
                    shell.to_vec()
                };
                cmd.extend_from_slice(rest);
                Some(cmd)
            }
            _ => None,
        }
    }

    pub fn interval(&self) -> Duration {
        or_default(self.interval, DEFAULT_INTERVAL)
    }

    pub fn timeout(&self) -> Duration {
        or_default(self.timeout, DEFAULT_TIMEOUT)
    }

    pub fn start_period(&self) -> Duration {
        or_default(self.start_period, Duration::ZERO)
    }

    pub fn start_interval(&self) -> Duration {
        or_default(self.start_interval, DEFAULT_START_INTERVAL)
    }

    pub fn retries(&self) -> u32 {
        let r = if self.retries > 0 {
            self.retries
        } else {
            DEFAULT_RETRIES
        };
        u32::try_from(r).unwrap_or(u32::MAX)
    }

    /// dockerd's create-time check (`validateHealthCheck`): durations of at least 1ms
    /// when set, retries not negative.
    pub fn validate(&self) -> Result<(), InvalidParameter> {
        const MIN: i64 = 1_000_000;
        for (name, v) in [
            ("Interval", self.interval),
            ("Timeout", self.timeout),
            ("StartPeriod", self.start_period),
            ("StartInterval", self.start_interval),
        ] {
            if v != 0 && v < MIN {
                return Err(InvalidParameter::Healthcheck(format!(
                    "{name} in Healthcheck cannot be less than 1ms"
                )));
            }
        }
        if self.retries < 0 {
            return Err(InvalidParameter::Healthcheck(
                "Retries in Healthcheck cannot be negative".into(),
            ));
        }
        Ok(())
    }

    /// dockerd's `merge`: the container's settings win field by field, the image fills
    /// what the container left unset.
    pub fn merge(user: Option<Self>, image: Option<Self>) -> Option<Self> {
        let Some(mut c) = user else {
            return image;
        };
        if let Some(img) = image {
            if c.test.is_empty() {
                c.test = img.test;
            }
            for (mine, theirs) in [
                (&mut c.interval, img.interval),
                (&mut c.timeout, img.timeout),
                (&mut c.start_period, img.start_period),
                (&mut c.start_interval, img.start_interval),
                (&mut c.retries, img.retries),
            ] {
                if *mine == 0 {
                    *mine = theirs;
                }
            }
        }
        Some(c)
    }
}

/// The container's own `Healthcheck`, parsed and checked as dockerd does at create.
pub fn check(container: &serde_json::Map<String, Value>) -> Result<(), InvalidParameter> {
    match container.get("Healthcheck").filter(|v| !v.is_null()) {
        None => Ok(()),
        Some(v) => serde_json::from_value::<HealthConfig>(v.clone())
            .map_err(|e| InvalidParameter::Healthcheck(format!("invalid Healthcheck: {e}")))?
            .validate(),
    }
}

/// Forgets `Healthcheck.StartInterval` (API < 1.44 has no such field).
pub fn drop_start_interval(container: &mut serde_json::Map<String, Value>) {
    if let Some(Value::Object(h)) = container.get_mut("Healthcheck") {
        h.remove("StartInterval");
    }
}

/// Completes a container's `Healthcheck` from its image's (see [`HealthConfig::merge`]).
pub fn merge_into(
    container: &mut serde_json::Map<String, Value>,
    image: &serde_json::Map<String, Value>,
) {
    let user = HealthConfig::from_extra(container);
    if let Some(merged) = HealthConfig::merge(user, HealthConfig::from_extra(image)) {
        if let Ok(v) = serde_json::to_value(merged) {
            container.insert("Healthcheck".into(), v);
        }
    }
}

/// Go's `time.Duration.String()`, which dockerd prints in timeout messages.
pub fn go_duration(d: Duration) -> String {
    let ns = d.as_nanos();
    if ns == 0 {
        return "0s".into();
    }
    let frac = |v: u128, unit: u128| {
        let whole = v / unit;
        let rest = v % unit;
        if rest == 0 {
            whole.to_string()
        } else {
            let digits = unit.to_string().len() - 1;
            let s = format!("{whole}.{rest:0digits$}");
            s.trim_end_matches('0').to_string()
        }
    };
    if ns < 1_000 {
        return format!("{ns}ns");
    }
    if ns < 1_000_000 {
        return format!("{}µs", frac(ns, 1_000));
    }
    if ns < 1_000_000_000 {
        return format!("{}ms", frac(ns, 1_000_000));
    }
    let secs = ns / 1_000_000_000;
    let sub = ns % 1_000_000_000;
    let (h, m, s) = (secs / 3600, (secs / 60) % 60, secs % 60);
    let s = frac(s * 1_000_000_000 + sub, 1_000_000_000);
    if h > 0 {
        format!("{h}h{m}m{s}s")
    } else if m > 0 {
        format!("{m}m{s}s")
    } else {
        format!("{s}s")
    }
}

/// Probe output as dockerd keeps it: the first 4096 bytes, `...` if there was more.
#[derive(Debug, Default)]
pub struct LimitedOutput {
    buf: Vec<u8>,
    truncated: bool,
}

impl LimitedOutput {
    pub fn push(&mut self, data: &[u8]) {
        let keep = MAX_OUTPUT_LEN
            .saturating_sub(self.buf.len())
            .min(data.len());
        self.buf.extend_from_slice(&data[..keep]);
        if keep < data.len() {
            self.truncated = true;
        }
    }

    pub fn into_string(self) -> String {
        let mut s = String::from_utf8_lossy(&self.buf).into_owned();
        if self.truncated {
            s.push_str("...");
        }
        s
    }
}

/// The state a (re)started monitor begins in: dockerd keeps the log and starts over.
pub fn starting(previous: Option<Health>) -> Health {
    let mut h = previous.unwrap_or(Health {
        status: String::new(),
        failing_streak: 0,
        log: Vec::new(),
    });
    h.status = STARTING.into();
    h.failing_streak = 0;
    h
}

/// dockerd's `handleProbeResult`: appends to the log and moves the status. Failures in
/// the start period do not count while the container is still starting. Returns the new
/// status when it changed (the `health_status` event).
pub fn apply_result(
    h: &mut Health,
    cfg: &HealthConfig,
    started_at: Option<DateTime<Utc>>,
    result: HealthResult,
) -> Option<String> {
    let old = h.status.clone();
    let in_start_period = started_at.is_some_and(|s| {
        (result.start - s)
            .to_std()
            .map_or(true, |since| since < cfg.start_period())
    });
    let ok = result.exit_code == 0;
    if h.log.len() >= MAX_LOG_ENTRIES {
        let drop = h.log.len() + 1 - MAX_LOG_ENTRIES;
        h.log.drain(..drop);
    }
    h.log.push(result);
    if ok {
        h.failing_streak = 0;
        h.status = HEALTHY.into();
    } else if !(h.status == STARTING && in_start_period) {
        h.failing_streak += 1;
        if h.failing_streak >= cfg.retries() {
            h.status = UNHEALTHY.into();
        }
    }
    (h.status != old).then(|| h.status.clone())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn cfg(v: Value) -> HealthConfig {
        serde_json::from_value(v).unwrap()
    }

    fn result(code: i64, at: DateTime<Utc>) -> HealthResult {
        HealthResult {
            start: at,
            end: at,
            exit_code: code,
            output: String::new(),
        }
    }

    #[test]
    fn go_durations() {
        for (ns, want) in [
            (1_000_000_000u64, "1s"),
            (1_500_000_000, "1.5s"),
            (500_000_000, "500ms"),
            (90_000_000_000, "1m30s"),
            (3_600_000_000_000, "1h0m0s"),
            (30_000_000_000, "30s"),
            (1_500, "1.5µs"),
        ] {
            assert_eq!(go_duration(Duration::from_nanos(ns)), want);
        }
    }

    #[test]
    fn probe_commands() {
        let sh = cfg(json!({"Test": ["CMD-SHELL", "exit 0"]}));
        assert_eq!(
            sh.probe_command(&[]).unwrap(),
            ["/bin/sh", "-c", "exit 0"].map(String::from)
        );
        let custom = ["/bin/ash".to_string(), "-ec".to_string()];
        assert_eq!(sh.probe_command(&custom).unwrap()[0], "/bin/ash");
        let exec = cfg(json!({"Test": ["CMD", "true", "x"]}));
        assert_eq!(
            exec.probe_command(&[]).unwrap(),
            ["true", "x"].map(String::from)
        );
        assert!(cfg(json!({"Test": ["NONE"]})).probe_command(&[]).is_none());
        assert!(cfg(json!({})).probe_command(&[]).is_none());
    }

    #[test]
    fn merge_is_field_by_field() {
        let user = cfg(json!({"Interval": 2_000_000_000i64}));
        let image = cfg(json!({"Test": ["CMD", "true"], "Interval": 5, "Retries": 7}));
        let m = HealthConfig::merge(Some(user), Some(image.clone())).unwrap();
        assert_eq!(m.test, ["CMD", "true"]);
        assert_eq!(m.interval, 2_000_000_000);
        assert_eq!(m.retries, 7);
        assert_eq!(HealthConfig::merge(None, Some(image.clone())), Some(image));
        let none = cfg(json!({"Test": ["NONE"]}));
        let m = HealthConfig::merge(Some(none), Some(cfg(json!({"Test": ["CMD", "x"]})))).unwrap();
        assert!(m.probe_command(&[]).is_none());
    }

    #[test]
    fn nulls_are_unset() {
        let c = cfg(json!({"Test": ["CMD", "true"], "Timeout": null, "Retries": null}));
        assert_eq!((c.timeout, c.retries), (0, 0));
        let mut extra = serde_json::Map::new();
        extra.insert(
            "Healthcheck".into(),
            json!({"Test": null, "Interval": 5_000_000_000i64}),
        );
        assert!(check(&extra).is_ok());
    }

    #[test]
    fn validation_messages_are_dockerds() {
        let e = cfg(json!({"Interval": 10})).validate().unwrap_err();
        assert_eq!(
            e.to_string(),
            "Interval in Healthcheck cannot be less than 1ms"
        );
        let e = cfg(json!({"Retries": -1})).validate().unwrap_err();
        assert_eq!(e.to_string(), "Retries in Healthcheck cannot be negative");
        assert!(cfg(json!({"Timeout": 1_000_000})).validate().is_ok());
    }

    #[test]
    fn output_is_capped() {
        let mut o = LimitedOutput::default();
        o.push(&[b'a'; 4000]);
        o.push(&[b'b'; 200]);
        let s = o.into_string();
        assert_eq!(s.len(), 4096 + 3);
        assert!(s.ends_with("bbb..."));
    }

    #[test]
    fn results_move_the_status() {
        let now = Utc::now();
        let c = cfg(json!({"Retries": 2}));
        let mut h = starting(None);
        assert_eq!(
            apply_result(&mut h, &c, Some(now), result(0, now)).as_deref(),
            Some(HEALTHY)
        );
        assert_eq!(apply_result(&mut h, &c, Some(now), result(1, now)), None);
        assert_eq!(h.failing_streak, 1);
        assert_eq!(
            apply_result(&mut h, &c, Some(now), result(1, now)).as_deref(),
            Some(UNHEALTHY)
        );
        for _ in 0..5 {
            apply_result(&mut h, &c, Some(now), result(3, now));
        }
        assert_eq!(h.log.len(), MAX_LOG_ENTRIES);
        assert_eq!(h.failing_streak, 7);
        let h = starting(Some(h));
        assert_eq!((h.status.as_str(), h.failing_streak), (STARTING, 0));
        assert_eq!(h.log.len(), MAX_LOG_ENTRIES, "the log survives a restart");
    }

    #[test]
    fn start_period_failures_do_not_count_while_starting() {
        let now = Utc::now();
        let c = cfg(json!({"StartPeriod": 60_000_000_000i64, "Retries": 1}));
        let mut h = starting(None);
        assert_eq!(apply_result(&mut h, &c, Some(now), result(1, now)), None);
        assert_eq!((h.status.as_str(), h.failing_streak), (STARTING, 0));
    }
}
