//! create/start/delete of short-lived containers in parallel loops while busy loops keep
//! every core saturated: the conditions of a loaded CI, where `start` can be preempted
//! at any point. It caught `start` reporting "container init exited before it was ready"
//! for a container that had already run: init wrote its fifo byte, exec'd `true` and
//! exited between poll(2)'s look at the fifo and its look at the pidfd.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use super::harness::{both_runtimes, output_with_deadline, stderr, Env, Runtime};

both_runtimes!(short_lived_containers_start_under_load);

const LOOPS: usize = 4;
const ROUNDS: usize = 12;
const CHRT: &str = "/usr/bin/chrt";

fn short_lived_containers_start_under_load(rt: &Runtime) {
    let stop = Arc::new(AtomicBool::new(false));
    let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
    let hogs: Vec<_> = (0..2 * cores)
        .map(|_| {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    std::hint::spin_loop();
                }
            })
        })
        .collect();
    let loops: Vec<_> = (0..LOOPS)
        .map(|n| {
            let rt = rt.clone();
            std::thread::spawn(move || create_start_delete_loop(&rt, n))
        })
        .collect();
    let failures: Vec<String> = loops
        .into_iter()
        .flat_map(|l| l.join().unwrap_or_else(|_| vec!["loop panicked".into()]))
        .collect();
    stop.store(true, Ordering::Relaxed);
    for h in hogs {
        h.join().unwrap();
    }
    assert!(
        failures.is_empty(),
        "{}: {} of {} rounds failed: {failures:#?}",
        rt.name,
        failures.len(),
        LOOPS * ROUNDS
    );
}

fn create_start_delete_loop(rt: &Runtime, n: usize) -> Vec<String> {
    let env = Env::new(rt);
    let mut failures = Vec::new();
    for round in 0..ROUNDS {
        let id = format!("s{n}-{round}");
        env.write_config(&env.config(&id, &["true"]));
        let out = env.run(&["create", &id]);
        if !out.status.success() {
            failures.push(format!("create {id}: {}", stderr(&out)));
            continue;
        }
        // SCHED_IDLE: the busy loops preempt `start` anywhere, which is what widens the
        // window between releasing init and noticing that it has already finished.
        let out = if std::path::Path::new(CHRT).exists() {
            let mut cmd = std::process::Command::new(CHRT);
            cmd.args(["-i", "0"]).arg(&env.rt.bin);
            cmd.arg("--root").arg(&env.root).args(["start", &id]);
            output_with_deadline(cmd, Duration::from_secs(60))
        } else {
            env.run(&["start", &id])
        };
        if !out.status.success() {
            failures.push(format!("start {id}: {}", stderr(&out)));
        }
        let out = env.run(&["delete", "--force", &id]);
        if !out.status.success() {
            failures.push(format!("delete {id}: {}", stderr(&out)));
        }
    }
    failures
}
