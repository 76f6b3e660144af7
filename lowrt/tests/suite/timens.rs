//! Time namespaces: `{"type":"time"}` with linux.timeOffsets. runc 1.1 has no time
//! namespace support (it came in 1.2), so these run on berth-lowrt only.

use serde_json::json;

use super::harness::{berth, skip_unless_root, stderr, stdout, Env};

const TEN_DAYS: u64 = 10 * 86400;

fn host_uptime() -> f64 {
    let text = std::fs::read_to_string("/proc/uptime").unwrap();
    text.split_whitespace().next().unwrap().parse().unwrap()
}

fn uptime_of(out: &std::process::Output) -> f64 {
    stdout(out)
        .split_whitespace()
        .next()
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no uptime in {:?}: {}", stdout(out), stderr(out)))
}

#[test]
fn time_namespace_offsets_show_in_uptime() {
    if skip_unless_root("time_namespace_offsets_show_in_uptime") {
        return;
    }
    if !std::path::Path::new("/proc/self/ns/time").exists() {
        eprintln!("SKIPPED time_namespace_offsets_show_in_uptime: kernel without time namespaces");
        return;
    }
    let env = Env::new(&berth());
    let mut config = env.config("tns", &["sleep", "60"]);
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    config["linux"]["timeOffsets"] = json!({
        "boottime": {"secs": TEN_DAYS, "nanosecs": 0},
        "monotonic": {"secs": TEN_DAYS}
    });
    env.write_config(&config);
    let out = env.run(&["run", "--detach", "tns"]);
    assert!(out.status.success(), "{}", stderr(&out));
    // Init is in its own time namespace, the runtime left it in ours.
    let pid = env.state("tns").unwrap()["pid"].as_i64().unwrap();
    let ns = std::fs::read_link(format!("/proc/{pid}/ns/time")).unwrap();
    assert_ne!(ns, std::fs::read_link("/proc/self/ns/time").unwrap());
    let offsets = std::fs::read_to_string(format!("/proc/{pid}/timens_offsets")).unwrap();
    let boottime: Vec<&str> = offsets
        .lines()
        .map(|l| l.split_whitespace().collect::<Vec<_>>())
        .find(|f| f.first() == Some(&"boottime"))
        .map(|f| f[1..].to_vec())
        .unwrap_or_default();
    assert_eq!(boottime, [TEN_DAYS.to_string(), "0".into()], "{offsets}");
    // /proc/uptime is CLOCK_BOOTTIME: ten days ahead inside, for exec'd processes too.
    let before = host_uptime();
    let out = env.run(&["exec", "tns", "cat", "/proc/uptime"]);
    let inside = uptime_of(&out);
    let after = host_uptime();
    let shift = TEN_DAYS as f64;
    assert!(
        inside >= before + shift && inside <= after + shift + 1.0,
        "uptime inside {inside}, host {before}..{after}"
    );
    assert!(env.run(&["delete", "--force", "tns"]).status.success());
    env.assert_nothing_left("tns");
}

#[test]
fn time_offsets_without_time_namespace_are_refused() {
    if skip_unless_root("time_offsets_without_time_namespace_are_refused") {
        return;
    }
    let env = Env::new(&berth());
    let mut config = env.config("tbad", &["true"]);
    config["linux"]["timeOffsets"] = json!({"boottime": {"secs": 5}});
    env.write_config(&config);
    let out = env.run(&["run", "tbad"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("linux.timeOffsets"),
        "{}",
        stderr(&out)
    );
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time"}));
    config["linux"]["timeOffsets"] = json!({"realtime": {"secs": 5}});
    env.write_config(&config);
    let out = env.run(&["run", "tbad"]);
    assert!(
        stderr(&out).contains("unknown clock \"realtime\""),
        "{}",
        stderr(&out)
    );
    env.assert_nothing_left("tbad");
}

/// A time namespace given by path (held by an `unshare --time --boottime` sleep we start):
/// init joins it, and the createContainer and startContainer hooks run in it (the
/// container's namespaces, runtime-spec), with its boottime offset in /proc/uptime.
#[test]
fn container_hooks_run_in_a_joined_time_namespace() {
    use std::process::{Command, Stdio};
    if skip_unless_root("container_hooks_run_in_a_joined_time_namespace") {
        return;
    }
    if !std::path::Path::new("/proc/self/ns/time").exists() {
        eprintln!("SKIPPED container_hooks_run_in_a_joined_time_namespace: no time namespaces");
        return;
    }
    let env = Env::new(&berth());
    let mut holder = Command::new("unshare")
        .args(["--time", "--boottime", &TEN_DAYS.to_string()])
        .args(["/bin/busybox", "sleep", "600"])
        .stdin(Stdio::null())
        .spawn()
        .unwrap();
    let hpid = holder.id();
    let ns_path = format!("/proc/{hpid}/ns/time");
    let own = std::fs::read_link("/proc/self/ns/time").unwrap();
    super::harness::poll_until(
        std::time::Duration::from_secs(10),
        || std::fs::read_link(&ns_path).is_ok_and(|l| l != own),
        "the holder to enter its time namespace",
    );
    let holder_ns = std::fs::read_link(&ns_path).unwrap();
    let shared = env.tmp.path().join("shared");
    std::fs::create_dir(&shared).unwrap();
    std::fs::create_dir(env.bundle.join("rootfs/shared")).unwrap();
    let report = "readlink /proc/self/ns/time; cut -d' ' -f1 /proc/uptime";
    let mut config = env.config("hktime", &["sleep", "60"]);
    config["mounts"].as_array_mut().unwrap().push(
        json!({"destination": "/shared", "type": "bind", "source": shared, "options": ["rbind"]}),
    );
    config["linux"]["namespaces"]
        .as_array_mut()
        .unwrap()
        .push(json!({"type": "time", "path": ns_path}));
    let create_out = shared.join("createContainer");
    config["hooks"] = json!({
        "createContainer": [{"path": "/bin/busybox", "args": ["sh", "-c", format!("({report}) > {}", create_out.display())]}],
        "startContainer": [{"path": "/bin/sh", "args": ["sh", "-c", format!("({report}) > /shared/startContainer")]}]
    });
    env.write_config(&config);
    let before = host_uptime();
    let out = env.run(&["create", "hktime"]);
    let created = out.status.success();
    let started = created && env.run(&["start", "hktime"]).status.success();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(5);
    // Both lines: the shell creates the file before it writes.
    let lines =
        || std::fs::read_to_string(shared.join("startContainer")).map_or(0, |t| t.lines().count());
    while started && lines() < 2 && std::time::Instant::now() < deadline {
        std::thread::sleep(std::time::Duration::from_millis(10));
    }
    let after = host_uptime();
    let _ = env.run(&["delete", "--force", "hktime"]);
    let _ = holder.kill();
    let _ = holder.wait();
    assert!(created && started, "{}", stderr(&out));
    for hook in ["createContainer", "startContainer"] {
        let text = std::fs::read_to_string(shared.join(hook)).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.first().copied(), holder_ns.to_str(), "{hook}: {text}");
        let uptime: f64 = lines.get(1).and_then(|u| u.parse().ok()).unwrap_or(0.0);
        let shift = TEN_DAYS as f64;
        assert!(
            uptime >= before + shift - 1.0 && uptime <= after + shift + 1.0,
            "{hook}: uptime {uptime}, host {before}..{after}"
        );
    }
    env.assert_nothing_left("hktime");
}
