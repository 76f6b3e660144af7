//! `GET /events`: the engine's own container and image events in docker's shape, kept in
//! memory (the last [`KEEP`] for `since`) and streamed live to followers. Events are not
//! persisted: after an engine restart `since` only reaches back to the restart.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::sync::Mutex;

use chrono::Utc;
use serde_json::{json, Value};
use tokio::sync::broadcast;

const KEEP: usize = 1024;
const FILTER_KEYS: &[&str] = &["type", "container", "event", "image"];

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventsError {
    #[error("invalid filter: {message}")]
    Filter { message: String },
    #[error("invalid filter '{key}'")]
    FilterKey { key: String },
    #[error("invalid timestamp {value:?}: expected seconds since the epoch")]
    Time { value: String },
}

/// One event, as `docker events --format '{{json .}}'` shows it.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    pub kind: &'static str,
    pub action: String,
    pub id: String,
    pub attributes: BTreeMap<String, String>,
    pub time_nano: i64,
}

impl Event {
    pub fn to_json(&self) -> Value {
        let mut v = json!({
            "Type": self.kind,
            "Action": self.action,
            "Actor": {"ID": self.id, "Attributes": self.attributes},
            "scope": "local",
            "time": self.time_nano / 1_000_000_000,
            "timeNano": self.time_nano,
        });
        // The deprecated top-level fields older clients still read.
        if self.kind == "container" {
            v["status"] = json!(self.action);
            v["id"] = json!(self.id);
            if let Some(image) = self.attributes.get("image") {
                v["from"] = json!(image);
            }
        }
        v
    }
}

#[derive(Clone)]
struct KnownContainer {
    name: String,
    image: String,
    labels: BTreeMap<String, String>,
}

/// The event log shared by the daemon (producer) and `/events` requests (consumers).
pub struct EventLog {
    tx: broadcast::Sender<Event>,
    recent: Mutex<VecDeque<Event>>,
    /// Container name, image and labels by ID, so `destroy` still names what is gone.
    containers: Mutex<HashMap<String, KnownContainer>>,
}

impl Default for EventLog {
    fn default() -> Self {
        Self {
            tx: broadcast::channel(KEEP).0,
            recent: Mutex::new(VecDeque::with_capacity(KEEP)),
            containers: Mutex::new(HashMap::new()),
        }
    }
}

impl EventLog {
    fn publish(&self, e: Event) {
        let mut recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        if recent.len() == KEEP {
            recent.pop_front();
        }
        recent.push_back(e.clone());
        // Sent under the lock, so a subscriber that copied `recent` first misses nothing.
        let _ = self.tx.send(e);
    }

    /// Remembers a container's name (without `/`), image and labels for later events.
    pub fn register_container(
        &self,
        id: &str,
        name: &str,
        image: &str,
        labels: &BTreeMap<String, String>,
    ) {
        self.containers
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                id.into(),
                KnownContainer {
                    name: name.trim_start_matches('/').into(),
                    image: image.into(),
                    labels: labels.clone(),
                },
            );
    }

    pub fn container(&self, action: &str, id: &str, extra: &[(&str, String)]) {
        let mut attributes: BTreeMap<String, String> = extra
            .iter()
            .map(|(k, v)| ((*k).to_string(), v.clone()))
            .collect();
        let known = {
            let mut map = self.containers.lock().unwrap_or_else(|p| p.into_inner());
            if action == "destroy" {
                map.remove(id)
            } else {
                map.get(id).cloned()
            }
        };
        // dockerd's order: the event's own attributes, then the labels, then name and image.
        if let Some(k) = known {
            attributes.extend(k.labels);
            attributes.insert("name".to_string(), k.name);
            attributes.insert("image".to_string(), k.image);
        }
        self.publish(Event {
            kind: "container",
            action: action.into(),
            id: id.into(),
            attributes,
            time_nano: Utc::now().timestamp_nanos_opt().unwrap_or(0),
        });
    }

    pub fn image(&self, action: &str, id: &str, name: &str) {
        let attributes = BTreeMap::from([("name".to_string(), name.to_string())]);
        self.publish(Event {
            kind: "image",
            action: action.into(),
            id: id.into(),
            attributes,
            time_nano: Utc::now().timestamp_nanos_opt().unwrap_or(0),
        });
    }

    /// The stored events from `since_nano` on, and a receiver for everything after them.
    pub fn subscribe(&self, since_nano: i64) -> (Vec<Event>, broadcast::Receiver<Event>) {
        let recent = self.recent.lock().unwrap_or_else(|p| p.into_inner());
        let past = recent
            .iter()
            .filter(|e| e.time_nano >= since_nano)
            .cloned()
            .collect();
        (past, self.tx.subscribe())
    }
}

/// `since`/`until`: seconds, optionally with a fraction (`1700000000.5`), as the docker
/// CLI sends them.
pub fn parse_time(s: &str) -> Result<Option<i64>, EventsError> {
    if s.is_empty() {
        return Ok(None);
    }
    let bad = || EventsError::Time { value: s.into() };
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().map_err(|_| bad())?;
    let mut nanos = 0i64;
    if !frac.is_empty() {
        let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
        nanos = digits.parse().map_err(|_| bad())?;
    }
    Ok(Some(secs * 1_000_000_000 + nanos))
}

/// docker's event filters: one value of every given key must match.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilters(BTreeMap<String, Vec<String>>);

impl EventFilters {
    pub fn parse(raw: &str) -> Result<Self, EventsError> {
        if raw.trim().is_empty() {
            return Ok(Self::default());
        }
        let value: Value = serde_json::from_str(raw).map_err(|e| EventsError::Filter {
            message: e.to_string(),
        })?;
        let map = value.as_object().ok_or_else(|| EventsError::Filter {
            message: "expected a JSON object".into(),
        })?;
        let mut out = BTreeMap::new();
        for (key, values) in map {
            if !FILTER_KEYS.contains(&key.as_str()) {
                return Err(EventsError::FilterKey { key: key.clone() });
            }
            let list: Vec<String> = match values {
                Value::Array(a) => a
                    .iter()
                    .filter_map(|v| v.as_str().map(String::from))
                    .collect(),
                Value::Object(o) => o
                    .iter()
                    .filter(|(_, v)| v.as_bool() == Some(true))
                    .map(|(k, _)| k.clone())
                    .collect(),
                _ => Vec::new(),
            };
            out.insert(key.clone(), list);
        }
        Ok(Self(out))
    }

    pub fn matches(&self, e: &Event) -> bool {
        self.0.iter().all(|(key, values)| {
            values.is_empty()
                || values.iter().any(|v| match key.as_str() {
                    "type" => v == e.kind,
                    // dockerd matches `health_status`, `exec_create` and `exec_start`
                    // against actions that carry a detail after a colon.
                    "event" => {
                        *v == e.action || e.action.split_once(':').is_some_and(|(a, _)| a == v)
                    }
                    "container" => {
                        e.kind == "container"
                            && (e.id.starts_with(v.as_str()) || e.attributes.get("name") == Some(v))
                    }
                    "image" => {
                        e.attributes.get("image") == Some(v)
                            || (e.kind == "image"
                                && (e.id == *v || e.attributes.get("name") == Some(v)))
                    }
                    _ => false,
                })
        })
    }
}

#[cfg(test)]
#[path = "events_api_tests.rs"]
mod tests;

/// Records a daemon state change as docker's `start`/`die`/`destroy`.
pub fn record_container_event(log: &EventLog, e: &crate::daemon::ContainerEvent) {
    use crate::daemon::ContainerEvent as E;
    match e {
        E::Started { id } => log.container("start", id, &[]),
        E::Exited { id, code } => log.container("die", id, &[("exitCode", code.to_string())]),
        E::Removed { id, .. } => log.container("destroy", id, &[]),
    }
}

/// Streams `log` as newline-separated JSON: stored events from `since`, then live ones
/// until `until` (forever without it). The stream ends when the client goes away.
pub fn stream(
    log: &EventLog,
    since: Option<i64>,
    until: Option<i64>,
    filters: EventFilters,
) -> tokio::sync::mpsc::Receiver<bytes::Bytes> {
    let now = Utc::now().timestamp_nanos_opt().unwrap_or(0);
    let (past, mut rx) = log.subscribe(since.unwrap_or(i64::MAX));
    let (tx, body) = tokio::sync::mpsc::channel(64);
    let line = |e: &Event| {
        let mut s = e.to_json().to_string();
        s.push('\n');
        bytes::Bytes::from(s)
    };
    tokio::spawn(async move {
        let after_until = |e: &Event| until.is_some_and(|u| e.time_nano > u);
        for e in past.iter().filter(|e| filters.matches(e)) {
            if after_until(e) || tx.send(line(e)).await.is_err() {
                return;
            }
        }
        if until.is_some_and(|u| u <= now) {
            return;
        }
        loop {
            let next = match until {
                Some(u) => {
                    let left = std::time::Duration::from_nanos(
                        u64::try_from(u - Utc::now().timestamp_nanos_opt().unwrap_or(0))
                            .unwrap_or(0),
                    );
                    match tokio::time::timeout(left, rx.recv()).await {
                        Ok(r) => r,
                        Err(_) => return,
                    }
                }
                None => tokio::select! {
                    r = rx.recv() => r,
                    // Notice a client that hung up even when no event comes.
                    () = tx.closed() => return,
                },
            };
            match next {
                Ok(e) if after_until(&e) => return,
                Ok(e) if filters.matches(&e) => {
                    if tx.send(line(&e)).await.is_err() {
                        return;
                    }
                }
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    tracing::warn!(missed = n, "events follower fell behind");
                }
                Err(broadcast::error::RecvError::Closed) => return,
            }
        }
    });
    body
}
