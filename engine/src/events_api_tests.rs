use super::*;

fn ev(kind: &'static str, action: &str, id: &str, name: &str) -> Event {
    Event {
        kind,
        action: action.into(),
        id: id.into(),
        attributes: BTreeMap::from([("name".to_string(), name.to_string())]),
        time_nano: 0,
    }
}

#[test]
fn filters_match_like_docker() {
    let f = EventFilters::parse(r#"{"type":{"container":true},"event":["start","die"]}"#).unwrap();
    assert!(f.matches(&ev("container", "start", "abc", "web")));
    assert!(!f.matches(&ev("container", "create", "abc", "web")));
    assert!(!f.matches(&ev("image", "start", "abc", "web")));
    let f = EventFilters::parse(r#"{"container":["web"]}"#).unwrap();
    assert!(f.matches(&ev("container", "start", "abc", "web")));
    assert!(!f.matches(&ev("container", "start", "def", "db")));
    let f = EventFilters::parse(r#"{"container":["de"]}"#).unwrap();
    assert!(f.matches(&ev("container", "start", "def", "db")));
    assert_eq!(
        EventFilters::parse(r#"{"colour":["red"]}"#).unwrap_err(),
        EventsError::FilterKey {
            key: "colour".into()
        }
    );
    assert!(EventFilters::parse("[1]").is_err());
}

#[test]
fn times_parse_with_fractions() {
    assert_eq!(parse_time("").unwrap(), None);
    assert_eq!(parse_time("12").unwrap(), Some(12_000_000_000));
    assert_eq!(parse_time("12.5").unwrap(), Some(12_500_000_000));
    assert_eq!(parse_time("12.000000001").unwrap(), Some(12_000_000_001));
    assert!(parse_time("yesterday").is_err());
}

#[test]
fn container_events_carry_name_and_image_until_destroy() {
    let log = EventLog::default();
    let labels = BTreeMap::from([("team".to_string(), "a".to_string())]);
    log.register_container("c1", "/web", "busybox", &labels);
    log.container("create", "c1", &[]);
    log.container("die", "c1", &[("exitCode", "3".into())]);
    log.container("destroy", "c1", &[]);
    log.container("start", "c1", &[]);
    let (past, _rx) = log.subscribe(0);
    assert_eq!(past.len(), 4);
    let j = past[1].to_json();
    assert_eq!(j["Action"], "die");
    assert_eq!(j["Actor"]["Attributes"]["name"], "web");
    assert_eq!(j["Actor"]["Attributes"]["exitCode"], "3");
    assert_eq!(
        j["Actor"]["Attributes"]["team"], "a",
        "labels are attributes"
    );
    assert_eq!(j["from"], "busybox");
    assert_eq!(past[2].attributes["name"], "web");
    // Forgotten after destroy.
    assert!(!past[3].attributes.contains_key("name"));
}

#[tokio::test]
async fn stream_replays_since_and_stops_at_until() {
    let log = EventLog::default();
    log.image("pull", "busybox:latest", "busybox");
    let t = Utc::now().timestamp_nanos_opt().unwrap();
    let mut rx = stream(&log, Some(0), Some(t), EventFilters::default());
    let first = rx.recv().await.unwrap();
    let v: Value = serde_json::from_slice(&first).unwrap();
    assert_eq!(v["Type"], "image");
    assert_eq!(v["Action"], "pull");
    assert!(rx.recv().await.is_none(), "stream must end at until");
    // Live: an event after subscribing arrives.
    let mut rx = stream(&log, None, None, EventFilters::default());
    log.container("start", "c2", &[]);
    let v: Value = serde_json::from_slice(&rx.recv().await.unwrap()).unwrap();
    assert_eq!(v["Action"], "start");
}
