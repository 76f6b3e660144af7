use super::*;
use crate::record::{State, Status};

pub fn record(id: &str, name: &str) -> ContainerRecord {
    ContainerRecord {
        record_version: RECORD_VERSION,
        id: id.into(),
        name: format!("/{name}"),
        created: chrono::Utc::now(),
        path: "sh".into(),
        args: vec![],
        config: Default::default(),
        host_config: Default::default(),
        image: "sha256:00".into(),
        state: State::default(),
        log_path: String::new(),
        hostname_path: String::new(),
        hosts_path: String::new(),
        resolv_conf_path: String::new(),
        snapshot_key: id.into(),
        restart_count: 0,
        mount_points: Vec::new(),
    }
}

fn add(store: &Store, id: &str, name: &str) {
    store.reserve_name(name, id).unwrap();
    store.insert(record(id, name)).unwrap();
}

fn found(r: Resolved) -> String {
    match r {
        Resolved::Found(r) => r.id,
        other => panic!("not found: {other:?}"),
    }
}

#[test]
fn resolves_ids_names_and_prefixes_like_dockerd() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, "abc123", "web");
    add(&store, "abd456", "db");
    // A name that is also another container's ID prefix: the name wins.
    add(&store, "fff000", "abc");
    assert_eq!(found(store.resolve("abc123")), "abc123");
    assert_eq!(found(store.resolve("web")), "abc123");
    assert_eq!(found(store.resolve("/db")), "abd456");
    assert_eq!(found(store.resolve("abc")), "fff000");
    assert_eq!(found(store.resolve("abd")), "abd456");
    assert!(matches!(store.resolve("ab"), Resolved::Ambiguous));
    assert!(matches!(store.resolve("zzz"), Resolved::Missing));
    assert!(matches!(store.resolve(""), Resolved::Missing));
}

#[test]
fn names_conflict_until_released_or_removed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    add(&store, "a1", "web");
    assert_eq!(store.reserve_name("web", "b2").unwrap_err(), "a1");
    store.remove("a1").unwrap();
    store.reserve_name("web", "b2").unwrap();
    store.release_name("web", "b2");
    store.reserve_name("web", "c3").unwrap();
}

#[test]
fn records_survive_reopen_and_updates_are_atomic() {
    let dir = tempfile::tempdir().unwrap();
    {
        let store = Store::open(dir.path()).unwrap();
        add(&store, "a1", "web");
        store
            .update("a1", |r| {
                r.state.status = Status::Running;
                r.state.pid = 42;
            })
            .unwrap();
    }
    let cdir = dir.path().join("containers/a1");
    let leftovers: Vec<_> = std::fs::read_dir(&cdir)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(leftovers, ["config.v2.json"], "no temp files left behind");
    // A crash between mkdir and the first write leaves a directory without a record.
    std::fs::create_dir_all(dir.path().join("containers/torn")).unwrap();
    let store = Store::open(dir.path()).unwrap();
    let r = store.get("a1").unwrap();
    assert_eq!((r.state.status, r.state.pid), (Status::Running, 42));
    assert_eq!(found(store.resolve("web")), "a1");
    assert!(!dir.path().join("containers/torn").exists());
}

#[test]
fn first_record_write_reports_a_created_dir_later_ones_do_not() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path()).unwrap();
    assert!(store.persist(&record("p1", "one")).unwrap());
    assert!(!store.persist(&record("p1", "one")).unwrap());
    // A directory made earlier by a plain mkdir (create writes /etc files first):
    // insert still makes it durable via sync_containers_dir, and succeeds.
    std::fs::create_dir(store.container_dir("p2")).unwrap();
    store.reserve_name("two", "p2").unwrap();
    store.insert(record("p2", "two")).unwrap();
    assert!(store.container_dir("p2").join("config.v2.json").exists());
}
