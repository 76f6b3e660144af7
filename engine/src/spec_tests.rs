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
        binds: Some(vec!["/tmp/x:/data:ro".into()]),
        ..Default::default()
    };
    let v = generate(&input(&host)).unwrap();
    assert_eq!(v["root"]["readonly"], true);
    assert_eq!(v["linux"]["resources"]["memory"]["limit"], 1 << 26);
    assert!(!v["linux"]["namespaces"]
        .as_array()
        .unwrap()
        .contains(&json!({"type": "network"})));
    let last = v["mounts"].as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["destination"], "/data");
    assert_eq!(last["options"], json!(["rbind", "ro", "rprivate"]));
    for bad in ["data:/x", "/x:rel", "/x:/y:zz", "/x"] {
        let h = HostConfig {
            binds: Some(vec![bad.into()]),
            ..Default::default()
        };
        assert!(generate(&input(&h)).is_err(), "{bad}");
    }
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
