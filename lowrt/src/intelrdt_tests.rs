//! The manager on a fake resctrl tree: a temp dir laid out as the kernel lays out
//! /sys/fs/resctrl (info/, schemata, tasks), with the kernel's side simulated where a
//! test needs it (a read-only schemata file stands in for a rejected line).

use super::*;

fn cfg(json: &str) -> LinuxIntelRdt {
    serde_json::from_str(json).unwrap()
}

/// info/L3, info/MB and info/L3_MON like a host with CAT, MBA, CMT and MBM.
fn fake_resctrl() -> tempfile::TempDir {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path();
    let files = [
        ("info/L3/cbm_mask", "7ff"),
        ("info/L3/min_cbm_bits", "1"),
        ("info/L3/num_closids", "16"),
        ("info/MB/bandwidth_gran", "10"),
        ("info/MB/delay_linear", "1"),
        ("info/MB/min_bandwidth", "10"),
        ("info/MB/num_closids", "8"),
        (
            "info/L3_MON/mon_features",
            "llc_occupancy\nmbm_total_bytes\nmbm_local_bytes\n",
        ),
        ("info/last_cmd_status", "ok\n"),
        ("schemata", "    MB:0=100;1=100\n    L3:0=7ff;1=7ff\n"),
        ("tasks", ""),
    ];
    for (path, text) in files {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
    tmp
}

#[test]
fn mount_point_comes_from_mountinfo() {
    let info = "22 1 0:21 / /proc rw,nosuid - proc proc rw\n\
                40 22 0:38 / /sys/fs/res\\040ctrl rw,relatime shared:20 - resctrl resctrl rw\n";
    assert_eq!(mount_point(info), Some(PathBuf::from("/sys/fs/res ctrl")));
    assert_eq!(mount_point("22 1 0:21 / /proc rw - proc proc rw\n"), None);
}

#[test]
fn missing_resctrl_and_bad_closid_are_named() {
    let err = RdtGroup::plan(&cfg("{}"), "c1", None)
        .unwrap_err()
        .to_string();
    assert!(err.contains("resctrl filesystem is not mounted"), "{err}");
    let tree = fake_resctrl();
    for bad in ["", ".", "..", "a/b"] {
        let json = format!(r#"{{"closID":{bad:?}}}"#);
        let err = RdtGroup::plan(&cfg(&json), "c1", Some(tree.path().into()))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("linux.intelRdt.closID: invalid"),
            "{bad}: {err}"
        );
    }
}

#[test]
fn schema_without_the_feature_is_named() {
    let tree = fake_resctrl();
    std::fs::remove_dir_all(tree.path().join("info/MB")).unwrap();
    let err = RdtGroup::plan(
        &cfg(r#"{"memBwSchema":"MB:0=50"}"#),
        "c1",
        Some(tree.path().into()),
    )
    .unwrap_err()
    .to_string();
    assert!(
        err.contains("linux.intelRdt.memBwSchema is set, but Intel RDT/MBA is not enabled"),
        "{err}"
    );
}

#[test]
fn own_group_gets_schemata_tasks_and_is_removed() {
    let tree = fake_resctrl();
    let c = cfg(r#"{"l3CacheSchema":"L3:0=f;1=f","memBwSchema":"MB:0=50;1=50"}"#);
    let mut g = RdtGroup::plan(&c, "c1", Some(tree.path().into())).unwrap();
    assert_eq!(g.path, tree.path().join("c1"));
    g.create(&c).unwrap();
    assert!(g.created);
    assert_eq!(
        std::fs::read_to_string(g.path.join("schemata")).unwrap(),
        "L3:0=f;1=f\nMB:0=50;1=50\n"
    );
    g.add_task(4242).unwrap();
    assert_eq!(
        std::fs::read_to_string(g.path.join("tasks")).unwrap(),
        "4242"
    );
    // Live update of one resource leaves the other alone (the kernel merges per line).
    g.write_schemata(Some("L3:0=3;1=3"), None, &[]).unwrap();
    assert_eq!(
        std::fs::read_to_string(g.path.join("schemata")).unwrap(),
        "L3:0=3;1=3\n"
    );
    g.destroy().unwrap();
    assert!(!g.path.exists());
    g.destroy().unwrap();
}

#[test]
fn existing_closid_is_shared_and_kept() {
    let tree = fake_resctrl();
    let shared = tree.path().join("gold");
    // resctrl makes mon_groups in every group on a host with monitoring.
    std::fs::create_dir_all(shared.join("mon_groups")).unwrap();
    let c = cfg(r#"{"closID":"gold","schemata":["L3:0=ff","MB:0=70"],"enableMonitoring":true}"#);
    let mut g = RdtGroup::plan(&c, "c2", Some(tree.path().into())).unwrap();
    g.create(&c).unwrap();
    assert!(!g.created);
    let mon = shared.join("mon_groups/c2");
    assert_eq!(g.mon_group.as_deref(), Some(mon.as_path()));
    assert!(mon.is_dir());
    assert_eq!(
        std::fs::read_to_string(shared.join("schemata")).unwrap(),
        "L3:0=ff\nMB:0=70\n"
    );
    g.add_task(77).unwrap();
    assert_eq!(std::fs::read_to_string(mon.join("tasks")).unwrap(), "77");
    g.destroy().unwrap();
    assert!(!mon.exists());
    assert!(shared.is_dir(), "a shared closID group must stay");

    // A closID group that did not exist is made and removed like a container's own, once
    // no task is left in it (another container may have joined it meanwhile).
    let c = cfg(r#"{"closID":"silver"}"#);
    let mut g = RdtGroup::plan(&c, "c3", Some(tree.path().into())).unwrap();
    g.create(&c).unwrap();
    assert!(g.created && tree.path().join("silver").is_dir());
    g.add_task(88).unwrap();
    g.destroy().unwrap();
    assert!(
        tree.path().join("silver").is_dir(),
        "removed with a task in it"
    );
    // What the kernel shows once the tasks have exited.
    std::fs::write(tree.path().join("silver/tasks"), "").unwrap();
    g.destroy().unwrap();
    assert!(!tree.path().join("silver").exists());
}

#[test]
fn rejected_schema_carries_last_cmd_status_and_leaves_nothing() {
    let tree = fake_resctrl();
    let c = cfg(r#"{"closID":"shared","l3CacheSchema":"L3:0=zz"}"#);
    let mut g = RdtGroup::plan(&c, "c4", Some(tree.path().into())).unwrap();
    // resctrl fails the write of a bad line and says why in last_cmd_status; here a
    // directory in place of schemata makes the write fail (for root too).
    std::fs::create_dir_all(g.path.join("schemata")).unwrap();
    std::fs::write(
        tree.path().join("info/last_cmd_status"),
        "non-hex character in mask zz for cache 0\n",
    )
    .unwrap();
    let err = g.create(&c).unwrap_err().to_string();
    assert!(
        err.starts_with("linux.intelRdt.l3CacheSchema: writing \"L3:0=zz\""),
        "{err}"
    );
    assert!(
        err.contains("(last_cmd_status: non-hex character in mask zz for cache 0)"),
        "{err}"
    );
    assert!(!g.created, "the closID group existed before");
    assert!(g.path.is_dir(), "a shared group must stay");

    // A group this create made is removed again when a later step fails (here the
    // monitoring group: mon_groups is missing from this fake tree).
    let c = cfg(r#"{"enableMonitoring":true}"#);
    let mut g = RdtGroup::plan(&c, "c5", Some(tree.path().into())).unwrap();
    let err = g.create(&c).unwrap_err().to_string();
    assert!(err.contains("cannot create monitoring group"), "{err}");
    assert!(!g.path.exists(), "{} left behind", g.path.display());
}

#[test]
fn stats_read_like_runc() {
    let tree = fake_resctrl();
    let c = cfg(r#"{"l3CacheSchema":"L3:0=f;1=f","enableMonitoring":true}"#);
    let mut g = RdtGroup::plan(&c, "c6", Some(tree.path().into())).unwrap();
    std::fs::create_dir_all(g.path.join("mon_groups")).unwrap();
    g.create(&c).unwrap();
    std::fs::write(
        g.path.join("schemata"),
        "    MB:0=100;1=100\n    L3:0=00f;1=00f\n",
    )
    .unwrap();
    let mon = g.mon_group.clone().unwrap();
    for (dom, total, local, llc) in [("mon_L3_00", 10, 4, 65536), ("mon_L3_01", 20, 8, 0)] {
        let d = mon.join("mon_data").join(dom);
        std::fs::create_dir_all(&d).unwrap();
        std::fs::write(d.join("mbm_total_bytes"), format!("{total}\n")).unwrap();
        std::fs::write(d.join("mbm_local_bytes"), format!("{local}\n")).unwrap();
        std::fs::write(d.join("llc_occupancy"), format!("{llc}\n")).unwrap();
    }
    let stats = serde_json::to_value(g.stats().unwrap()).unwrap();
    assert_eq!(
        stats,
        serde_json::json!({
            "l3_cache_info": {"cbm_mask": "7ff", "min_cbm_bits": 1, "num_closids": 16},
            "l3_cache_schema_root": "L3:0=7ff;1=7ff",
            "l3_cache_schema": "L3:0=00f;1=00f",
            "mem_bw_info": {"bandwidth_gran": 10, "delay_linear": 1, "min_bandwidth": 10, "num_closids": 8},
            "mem_bw_schema_root": "MB:0=100;1=100",
            "mem_bw_schema": "MB:0=100;1=100",
            "mbm_stats": [
                {"mbm_total_bytes": 10, "mbm_local_bytes": 4},
                {"mbm_total_bytes": 20, "mbm_local_bytes": 8}
            ],
            "cmt_stats": [{"llc_occupancy": 65536}, {"llc_occupancy": 0}]
        })
    );
    g.destroy().unwrap();
}
