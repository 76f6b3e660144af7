//! linux.intelRdt end to end on a fake resctrl tree (this host has no resctrl; the
//! runtime is pointed at a temp dir laid out like /sys/fs/resctrl): which files create,
//! exec, update, events and delete touch. The kernel's side (merging schemata lines,
//! refusing bad ones, listing tasks) is simulated where a step needs it. Berth only.

use std::path::Path;
use std::process::Output;
use std::time::Duration;

use serde_json::{json, Value};

use super::harness::{berth, output_with_deadline, skip_unless_root, stderr, stdout, Env};

const ENV: &str = "_BERTH_LOWRT_TEST_RESCTRL";

fn run(env: &Env, root: &Path, args: &[&str]) -> Output {
    let mut cmd = env.cmd(args);
    cmd.env(ENV, root);
    output_with_deadline(cmd, Duration::from_secs(30))
}

fn fake_resctrl(root: &Path) {
    for (path, text) in [
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
        ("schemata", "    MB:0=100\n    L3:0=7ff\n"),
        ("tasks", ""),
        // A shared class of service made by someone else, with resctrl's mon_groups.
        ("gold/schemata", "    MB:0=100\n    L3:0=7ff\n"),
        ("gold/tasks", ""),
        ("gold/mon_groups/.keep", ""),
    ] {
        let path = root.join(path);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, text).unwrap();
    }
}

fn read(path: impl AsRef<Path>) -> String {
    std::fs::read_to_string(path.as_ref())
        .unwrap_or_else(|e| panic!("{}: {e}", path.as_ref().display()))
}

#[test]
fn intel_rdt_groups_on_a_fake_resctrl_tree() {
    if skip_unless_root("intel_rdt_groups_on_a_fake_resctrl_tree") {
        return;
    }
    let env = Env::new(&berth());
    let rdt = env.tmp.path().join("resctrl");
    fake_resctrl(&rdt);
    let gold = rdt.join("gold");

    // A shared closID group with a monitoring group of the container's own.
    let mut config = env.config("rdt1", &["sleep", "60"]);
    config["linux"]["intelRdt"] =
        json!({"closID": "gold", "l3CacheSchema": "L3:0=f", "enableMonitoring": true});
    env.write_config(&config);
    let out = run(&env, &rdt, &["run", "--detach", "rdt1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let pid = env.state("rdt1").unwrap()["pid"]
        .as_i64()
        .unwrap()
        .to_string();
    let mon = gold.join("mon_groups/rdt1");
    assert_eq!(read(gold.join("schemata")), "L3:0=f\n");
    assert_eq!(read(gold.join("tasks")), pid);
    assert_eq!(read(mon.join("tasks")), pid);

    // exec'd processes join the group themselves.
    let out = run(&env, &rdt, &["exec", "rdt1", "true"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let written = read(gold.join("tasks"));
    assert!(
        !written.is_empty() && written != pid,
        "exec wrote {written:?}"
    );

    // update writes the new line live (the kernel merges it with the L3 line).
    let out = run(
        &env,
        &rdt,
        &["update", "--mem-bw-schema", "MB:0=50", "rdt1"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(gold.join("schemata")), "MB:0=50\n");
    let state: Value = serde_json::from_str(&read(env.root.join("rdt1/state.json"))).unwrap();
    assert_eq!(
        state["config"]["linux"]["intelRdt"]["memBwSchema"], "MB:0=50",
        "{state}"
    );
    // A bad resources document fails the whole update before the schemata change.
    let bad = env.tmp.path().join("bad.json");
    std::fs::write(&bad, r#"{"memory": 5}"#).unwrap();
    let bad = bad.to_str().unwrap();
    let out = run(
        &env,
        &rdt,
        &["update", "-r", bad, "--l3-cache-schema", "L3:0=1", "rdt1"],
    );
    assert!(!out.status.success());
    assert_eq!(read(gold.join("schemata")), "MB:0=50\n");

    // events --stats: runc's intel_rdt section from what resctrl shows.
    std::fs::write(gold.join("schemata"), "    MB:0=50\n    L3:0=00f\n").unwrap();
    let dom = mon.join("mon_data/mon_L3_00");
    std::fs::create_dir_all(&dom).unwrap();
    for (file, v) in [
        ("mbm_total_bytes", "300"),
        ("mbm_local_bytes", "200"),
        ("llc_occupancy", "4096"),
    ] {
        std::fs::write(dom.join(file), v).unwrap();
    }
    let out = run(&env, &rdt, &["events", "--stats", "rdt1"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let event: Value = serde_json::from_str(stdout(&out).trim()).unwrap();
    let stats = &event["data"]["intel_rdt"];
    assert_eq!(stats["l3_cache_schema"], "L3:0=00f", "{stats}");
    assert_eq!(stats["l3_cache_schema_root"], "L3:0=7ff", "{stats}");
    assert_eq!(stats["mem_bw_schema"], "MB:0=50", "{stats}");
    assert_eq!(stats["l3_cache_info"]["num_closids"], 16, "{stats}");
    assert_eq!(
        stats["mbm_stats"],
        json!([{"mbm_total_bytes": 300, "mbm_local_bytes": 200}]),
        "{stats}"
    );
    assert_eq!(
        stats["cmt_stats"],
        json!([{"llc_occupancy": 4096}]),
        "{stats}"
    );

    // delete: the monitoring group goes, the shared group stays.
    assert!(run(&env, &rdt, &["delete", "--force", "rdt1"])
        .status
        .success());
    assert!(!mon.exists() && gold.is_dir());
    env.assert_nothing_left("rdt1");

    // A group of its own, named by the container, is made and removed.
    let mut config = env.config("rdt2", &["sleep", "60"]);
    config["linux"]["intelRdt"] = json!({"schemata": ["L3:0=3", "MB:0=20"]});
    env.write_config(&config);
    let out = run(&env, &rdt, &["run", "--detach", "rdt2"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(read(rdt.join("rdt2/schemata")), "L3:0=3\nMB:0=20\n");
    assert!(run(&env, &rdt, &["delete", "--force", "rdt2"])
        .status
        .success());
    assert!(!rdt.join("rdt2").exists());
    env.assert_nothing_left("rdt2");

    // A line the kernel refuses (here: the write fails, last_cmd_status says why): the
    // field, the line and the kernel's reason are named, nothing is left.
    std::fs::create_dir_all(rdt.join("rdt3/schemata")).unwrap();
    std::fs::write(
        rdt.join("info/last_cmd_status"),
        "Unknown or unsupported resource L4\n",
    )
    .unwrap();
    let mut config = env.config("rdt3", &["true"]);
    config["linux"]["intelRdt"] = json!({"l3CacheSchema": "L4:0=f"});
    env.write_config(&config);
    let out = run(&env, &rdt, &["run", "rdt3"]);
    let err = stderr(&out);
    assert!(!out.status.success());
    assert!(
        err.contains("linux.intelRdt.l3CacheSchema: writing \"L4:0=f\"")
            && err.contains("last_cmd_status: Unknown or unsupported resource L4"),
        "{err}"
    );
    env.assert_nothing_left("rdt3");
}
