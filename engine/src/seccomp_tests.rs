use super::*;

fn caps(list: &[&str]) -> Vec<String> {
    list.iter().map(|s| s.to_string()).collect()
}

fn default_for(arch: &str, scmp: &str, c: &[String]) -> Value {
    let t = Target {
        arch,
        scmp_arch: scmp,
        kernel: (6, 1),
        caps: c,
    };
    to_oci(DEFAULT_PROFILE, &t).unwrap()
}

/// Every name a rule with `action` allows, ignoring argument conditions.
fn names_with(v: &Value, action: &str) -> Vec<String> {
    v["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == action)
        .flat_map(|r| r["names"].as_array().unwrap().clone())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

fn unconditional(v: &Value) -> Vec<String> {
    v["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["action"] == "SCMP_ACT_ALLOW" && r.get("args").is_none())
        .flat_map(|r| r["names"].as_array().unwrap().clone())
        .map(|n| n.as_str().unwrap().to_string())
        .collect()
}

#[test]
fn default_profile_for_amd64_with_docker_caps() {
    let c = caps(crate::spec::DEFAULT_CAPS);
    let v = default_for("amd64", "SCMP_ARCH_X86_64", &c);
    assert_eq!(v["defaultAction"], "SCMP_ACT_ERRNO");
    assert_eq!(v["defaultErrnoRet"], 1);
    assert_eq!(
        v["architectures"],
        json!(["SCMP_ARCH_X86_64", "SCMP_ARCH_X86", "SCMP_ARCH_X32"])
    );
    let allowed = unconditional(&v);
    for s in [
        "read",
        "execve",
        "arch_prctl",
        "modify_ldt",
        "chroot",
        "ptrace",
    ] {
        assert!(allowed.contains(&s.to_string()), "{s} should be allowed");
    }
    for s in [
        "mount",
        "unshare",
        "setns",
        "reboot",
        "init_module",
        "keyctl",
        "add_key",
        "bpf",
    ] {
        assert!(!allowed.contains(&s.to_string()), "{s} should be denied");
    }
    // clone only without namespace flags; clone3 fails with ENOSYS so libcs fall back.
    let clone: Vec<&Value> = v["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"] == json!(["clone"]))
        .collect();
    assert_eq!(clone.len(), 1);
    assert_eq!(clone[0]["args"][0]["index"], 0);
    let enosys: Vec<&Value> = v["syscalls"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["names"] == json!(["clone3"]))
        .collect();
    assert_eq!(enosys[0]["errnoRet"], 38);
    // arm-only calls are not in an amd64 filter.
    assert!(!names_with(&v, "SCMP_ACT_ALLOW").contains(&"cacheflush".to_string()));
}

#[test]
fn capabilities_unlock_their_syscalls() {
    let mut c = caps(crate::spec::DEFAULT_CAPS);
    c.push("CAP_SYS_ADMIN".into());
    c.push("CAP_SYS_TIME".into());
    let v = default_for("amd64", "SCMP_ARCH_X86_64", &c);
    let allowed = unconditional(&v);
    for s in [
        "mount",
        "unshare",
        "setns",
        "clone",
        "clone3",
        "settimeofday",
    ] {
        assert!(allowed.contains(&s.to_string()), "{s} should be allowed");
    }
    assert!(!names_with(&v, "SCMP_ACT_ERRNO").contains(&"clone3".to_string()));
    // Without CAP_SYS_CHROOT (docker --cap-drop), chroot is gone.
    let c: Vec<String> = caps(crate::spec::DEFAULT_CAPS)
        .into_iter()
        .filter(|c| c != "CAP_SYS_CHROOT")
        .collect();
    let v = default_for("amd64", "SCMP_ARCH_X86_64", &c);
    assert!(!unconditional(&v).contains(&"chroot".to_string()));
}

#[test]
fn arm64_gets_its_arch_rules() {
    let v = default_for("arm64", "SCMP_ARCH_AARCH64", &[]);
    assert_eq!(
        v["architectures"],
        json!(["SCMP_ARCH_AARCH64", "SCMP_ARCH_ARM"])
    );
    let allowed = unconditional(&v);
    assert!(allowed.contains(&"cacheflush".to_string()));
    assert!(!allowed.contains(&"arch_prctl".to_string()));
}

#[test]
fn kernel_minimum_is_honoured() {
    let t = Target {
        arch: "amd64",
        scmp_arch: "SCMP_ARCH_X86_64",
        kernel: (4, 4),
        caps: &[],
    };
    let v = to_oci(DEFAULT_PROFILE, &t).unwrap();
    assert!(!unconditional(&v).contains(&"ptrace".to_string()));
    assert_eq!(parse_kernel("6.18.0-1-amd64\n"), Some((6, 18)));
}

fn host(opts: &[&str], privileged: bool) -> HostConfig {
    let mut h = HostConfig {
        privileged,
        ..Default::default()
    };
    h.extra.insert("SecurityOpt".into(), json!(opts));
    h
}

#[test]
fn security_opts_choose_the_profile() {
    let spec = || json!({"process": {"capabilities": {"bounding": ["CAP_CHOWN"]}}, "linux": {}});
    let mut s = spec();
    apply(&mut s, &host(&[], false)).unwrap();
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ERRNO");
    let mut s = spec();
    apply(&mut s, &host(&["seccomp=unconfined"], false)).unwrap();
    assert!(s["linux"].get("seccomp").is_none());
    let mut s = spec();
    apply(&mut s, &host(&[], true)).unwrap();
    assert!(s["linux"].get("seccomp").is_none());
    let custom = r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#;
    let mut s = spec();
    apply(
        &mut s,
        &host(&[&format!("seccomp={custom}"), "no-new-privileges"], false),
    )
    .unwrap();
    assert_eq!(s["linux"]["seccomp"]["defaultAction"], "SCMP_ACT_ALLOW");
    assert_eq!(
        s["linux"]["seccomp"]["syscalls"][0]["names"],
        json!(["mkdir"])
    );
    assert_eq!(s["process"]["noNewPrivileges"], true);
    let mut s = spec();
    let err = apply(&mut s, &host(&["seccomp={not json"], false)).unwrap_err();
    assert!(
        err.to_string()
            .starts_with("decoding seccomp profile failed"),
        "{err}"
    );
    assert!(matches!(
        apply(&mut spec(), &host(&["bogus=1"], false)),
        Err(SeccompError::Opt { .. })
    ));
}
