use super::*;

fn opts(name: &str) -> CreateOptions {
    CreateOptions {
        name: name.into(),
        ..Default::default()
    }
}

#[test]
fn create_inspect_reopen_remove() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().join("volumes");
    let s = VolumeStore::open(&root).unwrap();
    let (v, new) = s
        .create(CreateOptions {
            name: "data".into(),
            labels: Some([("a".to_string(), "b".to_string())].into()),
            ..Default::default()
        })
        .unwrap();
    assert!(new);
    assert!(root.join("data/_data").is_dir());
    let (again, new) = s.create(opts("data")).unwrap();
    assert!(!new);
    assert_eq!(again, v);
    let view = s.view(&v, false);
    assert_eq!(
        view["Mountpoint"],
        root.join("data/_data").to_str().unwrap()
    );
    assert_eq!(view["Labels"]["a"], "b");
    assert_eq!(view["Options"], Value::Null);
    assert_eq!(view["Scope"], "local");
    // A leftover without metadata (a crashed create) disappears at open.
    std::fs::create_dir_all(root.join("junk/_data")).unwrap();
    let s = VolumeStore::open(&root).unwrap();
    assert!(!root.join("junk").exists());
    assert_eq!(s.get("data").unwrap(), v);
    s.add_ref("data", "c1").unwrap();
    assert_eq!(
        s.remove("data", false).unwrap_err().to_string(),
        "remove data: volume is in use - [c1]"
    );
    assert_eq!(s.prune(|_| true).0, Vec::<String>::new());
    s.remove_ref("data", "c1");
    s.remove("data", false).unwrap();
    assert!(!root.join("data").exists());
    assert_eq!(
        s.remove("data", false).unwrap_err().to_string(),
        "get data: no such volume"
    );
    s.remove("data", true).unwrap();
}

#[test]
fn bad_names_and_options() {
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStore::open(dir.path()).unwrap();
    assert!(matches!(
        s.create(opts("a")),
        Err(VolumeError::NameTooShort)
    ));
    let e = s.create(opts("a/b")).unwrap_err();
    assert!(e.is_bad_input());
    assert!(e
        .to_string()
        .starts_with("\"a/b\" includes invalid characters"));
    let e = s
        .create(CreateOptions {
            name: "ok".into(),
            driver_opts: Some([("foo".to_string(), "1".to_string())].into()),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(e.to_string(), "invalid option key: \"foo\"");
    let e = s
        .create(CreateOptions {
            name: "ok".into(),
            driver: "nfs".into(),
            ..Default::default()
        })
        .unwrap_err();
    assert_eq!(
        e.to_string(),
        "error looking up volume plugin nfs: plugin \"nfs\" not found"
    );
    assert!(s.list().is_empty());
}

#[test]
fn prune_selects_anonymous() {
    let dir = tempfile::tempdir().unwrap();
    let s = VolumeStore::open(dir.path()).unwrap();
    s.create(opts("named")).unwrap();
    s.create(CreateOptions {
        name: "anon1".into(),
        labels: Some([(ANONYMOUS_LABEL.to_string(), String::new())].into()),
        ..Default::default()
    })
    .unwrap();
    let (gone, _) = s.prune(Volume::is_anonymous);
    assert_eq!(gone, ["anon1"]);
    assert_eq!(s.list().len(), 1);
}
