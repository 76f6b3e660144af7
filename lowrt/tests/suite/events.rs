//! `events`: one stats event with --stats, an oom event when the memory limit is hit, and
//! the stream ending with the container.

use std::io::{BufRead, BufReader};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::harness::{both_runtimes, poll_until, stderr, stdout, Env, Runtime};

both_runtimes!(
    events_stats_show_pids_and_memory,
    events_report_oom_and_end_with_container
);

/// The streaming `events` process must not outlive a failed test.
struct KillOnDrop(std::process::Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn start_sleeper(env: &Env, id: &str, memory: Option<i64>) {
    let mut config = env.config(id, &["sleep", "600"]);
    if let Some(limit) = memory {
        config["linux"]["resources"] = json!({"memory": {"limit": limit, "swap": limit}});
    }
    env.write_config(&config);
    let out = env.run(&["create", id]);
    assert!(out.status.success(), "{}: {}", env.rt.name, stderr(&out));
    assert!(env.run(&["start", id]).status.success());
}

fn events_stats_show_pids_and_memory(rt: &Runtime) {
    let env = Env::new(rt);
    start_sleeper(&env, "ev", None);
    let out = env.run(&["events", "--stats", "ev"]);
    assert!(out.status.success(), "{}: {}", rt.name, stderr(&out));
    let text = stdout(&out);
    assert_eq!(text.lines().count(), 1, "{}: {text}", rt.name);
    let ev: Value = serde_json::from_str(&text).unwrap();
    assert_eq!(ev["type"], "stats", "{}: {ev}", rt.name);
    assert_eq!(ev["id"], "ev");
    let data = &ev["data"];
    assert!(
        data["pids"]["current"].as_u64().unwrap_or(0) >= 1,
        "{}: {data}",
        rt.name
    );
    assert!(
        data["memory"]["usage"]["usage"].as_u64().unwrap_or(0) > 0,
        "{}: {data}",
        rt.name
    );
    assert!(
        data["memory"]["usage"]["limit"].as_u64().unwrap_or(0) > 0,
        "{}: {data}",
        rt.name
    );
    assert!(
        data["cpu"]["usage"]["total"].as_u64().unwrap_or(0) > 0,
        "{}: {data}",
        rt.name
    );
    for key in ["cpuset", "blkio", "hugetlb", "memory", "pids", "cpu"] {
        assert!(data.get(key).is_some(), "{}: no {key} in {data}", rt.name);
    }
    assert!(env.run(&["delete", "--force", "ev"]).status.success());
    // A stopped or missing container is an error.
    assert!(!env.run(&["events", "--stats", "ev"]).status.success());
    env.assert_nothing_left("ev");
}

fn events_report_oom_and_end_with_container(rt: &Runtime) {
    if !std::path::Path::new("/sys/fs/cgroup/memory/cgroup.event_control").exists() {
        eprintln!("SKIPPED oom events: no cgroup v1 memory controller here");
        return;
    }
    let env = Env::new(rt);
    start_sleeper(&env, "oom", Some(32 << 20));
    let mut events = KillOnDrop(
        env.cmd(&["events", "--interval", "1s", "oom"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    );
    let (tx, rx) = mpsc::channel::<Value>();
    let reader = BufReader::new(events.0.stdout.take().unwrap());
    std::thread::spawn(move || {
        for line in reader.lines().map_while(Result::ok) {
            if tx.send(serde_json::from_str(&line).unwrap()).is_err() {
                break;
            }
        }
    });
    // The stream is up once the first stats event arrives; then blow the limit.
    let first = rx
        .recv_timeout(Duration::from_secs(20))
        .expect("a stats event");
    assert_eq!(first["type"], "stats", "{}: {first}", rt.name);
    // dd allocates its 128M block and touches it reading /dev/zero: the OOM killer ends it.
    let out = env.run(&[
        "exec",
        "oom",
        "dd",
        "if=/dev/zero",
        "of=/dev/null",
        "bs=128M",
        "count=1",
    ]);
    assert!(
        !out.status.success(),
        "{}: dd survived a 32M limit",
        rt.name
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let oom = loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(ev) if ev["type"] == "oom" => break ev,
            Ok(_) => continue,
            Err(_) => panic!("{}: no oom event within 20 s", rt.name),
        }
    };
    assert_eq!(oom["id"], "oom");
    assert!(oom.get("data").is_none(), "{}: {oom}", rt.name);
    assert!(env.run(&["kill", "oom", "KILL"]).status.success());
    if rt.name == "runc" {
        // runc 1.1's stream outlives the container (its select waits forever once the
        // oom channel closes); ours ends with init, checked below.
        let _ = events.0.kill();
        let _ = events.0.wait();
    } else {
        poll_until(
            Duration::from_secs(20),
            || events.0.try_wait().unwrap().is_some(),
            "events to end after the container died",
        );
    }
    assert!(env.run(&["delete", "--force", "oom"]).status.success());
    env.assert_nothing_left("oom");
}
