use super::*;

fn input(host: &HostConfig) -> SpecInput<'_> {
    SpecInput {
        id: "0123456789abcdef",
        args: vec!["echo".into(), "hi".into()],
        env: vec!["FOO=bar".into()],
        cwd: String::new(),
        user: String::new(),
        tty: false,
        hostname: "0123456789ab".into(),
        cgroup_parent: "/berth-test",
        host_config: host,
        etc_files: vec![("/etc/hostname", "/data/c/hostname".into())],
    }
}

#[test]
fn spec_has_dockerd_defaults_and_parses_as_oci() {
    let host = HostConfig::default();
    let v = generate(&input(&host)).unwrap();
    let spec: oci_spec::runtime::Spec = serde_json::from_value(v.clone()).unwrap();
    let p = spec.process().as_ref().unwrap();
    assert_eq!(p.args().as_ref().unwrap(), &["echo", "hi"]);
    assert_eq!(p.cwd().to_str(), Some("/"));
    assert_eq!(
        p.env().as_ref().unwrap(),
        &[DEFAULT_PATH, "HOSTNAME=0123456789ab", "FOO=bar"]
    );
    assert_eq!(spec.hostname().as_deref(), Some("0123456789ab"));
    let linux = spec.linux().as_ref().unwrap();
    assert_eq!(
        linux.cgroups_path().as_ref().unwrap().to_str(),
        Some("/berth-test/0123456789abcdef")
    );
    let ns: Vec<String> = v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .map(|n| n["type"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(ns, ["pid", "ipc", "uts", "mount", "network"]);
    let dests: Vec<&str> = v["mounts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["destination"].as_str().unwrap())
        .collect();
    for d in [
        "/proc",
        "/dev",
        "/dev/pts",
        "/dev/shm",
        "/dev/mqueue",
        "/sys",
        "/sys/fs/cgroup",
        "/etc/hostname",
    ] {
        assert!(dests.contains(&d), "{d} missing from {dests:?}");
    }
    let shm = &v["mounts"][6];
    assert_eq!(shm["destination"], "/dev/shm");
    assert!(shm["options"]
        .as_array()
        .unwrap()
        .contains(&json!("size=67108864")));
    assert!(v["linux"]["maskedPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/proc/kcore")));
    assert!(v["linux"]["readonlyPaths"]
        .as_array()
        .unwrap()
        .contains(&json!("/proc/sys")));
    assert_eq!(
        v["process"]["capabilities"]["bounding"]
            .as_array()
            .unwrap()
            .len(),
        DEFAULT_CAPS.len()
    );
    assert!(v["linux"].get("seccomp").is_none());
}

#[test]
fn env_merges_replace_in_place() {
    let merged = merge_env(
        &["PATH=/bin".into(), "A=1".into()],
        &["A=2".into(), "B=3".into()],
    );
    assert_eq!(merged, ["PATH=/bin", "A=2", "B=3"]);
    let env = process_env(&["PATH=/custom".into()], "h", true);
    assert_eq!(env, ["PATH=/custom", "HOSTNAME=h", "TERM=xterm"]);
}

#[test]
fn users() {
    assert_eq!(parse_user("").unwrap(), (0, 0));
    assert_eq!(parse_user("root").unwrap(), (0, 0));
    assert_eq!(parse_user("1000").unwrap(), (1000, 1000));
    assert_eq!(parse_user("1000:50").unwrap(), (1000, 50));
    assert_eq!(
        parse_user("nobody").unwrap_err().to_string(),
        "unable to find user nobody: only numeric uid[:gid] and root are supported for now"
    );
}

#[test]
fn capability_add_and_drop() {
    let host = HostConfig {
        cap_add: Some(vec!["sys_admin".into()]),
        cap_drop: Some(vec!["CAP_KILL".into(), "chown".into()]),
        ..Default::default()
    };
    let caps = capabilities(&host).unwrap();
    assert!(caps.contains(&"CAP_SYS_ADMIN".to_string()));
    assert!(!caps.contains(&"CAP_KILL".to_string()));
    assert!(!caps.contains(&"CAP_CHOWN".to_string()));
    let none = HostConfig {
        cap_drop: Some(vec!["ALL".into()]),
        ..Default::default()
    };
    assert!(capabilities(&none).unwrap().is_empty());
    let bad = HostConfig {
        cap_add: Some(vec!["no such".into()]),
        ..Default::default()
    };
    assert!(capabilities(&bad).is_err());
}

#[test]
fn host_options() {
    let host = HostConfig {
        network_mode: "host".into(),
        readonly_rootfs: true,
        memory: 1 << 26,
        shm_size: 1 << 20,
        ..Default::default()
    };
    let v = generate(&input(&host)).unwrap();
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(v["linux"]["resources"]["memory"]["limit"], 1 << 26);
    assert!(!v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!({"type": "network"})));
    // A user-defined network: a namespace of its own (the engine fills in its path).
    let h = HostConfig {
        network_mode: "mynet".into(),
        ..Default::default()
    };
    let spec = generate(&input(&h)).unwrap();
    assert!(spec["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["type"] == "network"));
    let h = HostConfig {
        privileged: true,
        ..Default::default()
    };
    assert_eq!(generate(&input(&h)).unwrap_err(), SpecError::Privileged);
}

#[test]
fn user_mounts_replace_defaults_and_sort_parents_first() {
    let host = HostConfig::default();
    let mut v = generate(&input(&host)).unwrap();
    let mounts = crate::volumes::parse::container_mounts(
        &[],
        &[],
        &["/tmp/x:/data/sub:ro".into(), "vol:/data".into()],
        &[],
        &[("/dev/shm".to_string(), "size=1m,exec".to_string())].into(),
    )
    .unwrap();
    let mut mounts = mounts;
    mounts[1].source = "/vols/vol/_data".into();
    add_mounts(&mut v, &mounts);
    let list = v["mounts"].as_array().unwrap();
    let shm: Vec<_> = list
        .iter()
        .filter(|m| m["destination"] == "/dev/shm")
        .collect();
    assert_eq!(shm.len(), 1);
    assert_eq!(
        shm[0]["options"],
        json!(["nosuid", "nodev", "size=1m", "exec", "rw"])
    );
    let pos = |d: &str| list.iter().position(|m| m["destination"] == d).unwrap();
    assert!(pos("/data") < pos("/data/sub"));
    assert_eq!(
        list[pos("/data/sub")]["options"],
        json!(["rbind", "ro", "rprivate"])
    );
    assert_eq!(list[pos("/data")]["source"], "/vols/vol/_data");
    let _: oci_spec::runtime::Spec = serde_json::from_value(v).unwrap();
}
