//! What idle shims cost: PSS from /proc/PID/smaps_rollup of shims whose containers run.
//!
//! Run against a release build for the figures in docs/shim.md:
//! `BERTH_TEST_SHIM=target/release/berth-shim cargo test -p berth-shim --test shim memory
//! -- --nocapture`. `BERTH_TEST_SHIM_PSS_KB=N` also fails the test when the average PSS
//! is above N kB (only meaningful for release builds).

use berth_proto::containerd::task::v2::task_client::TaskClient;
use berth_proto::containerd::task::v2::{KillRequest, StartRequest, WaitRequest};
use std::time::Duration;

use tonic::transport::Channel;

use crate::harness::{poll, skip_unless_root, FakeEvents, Fixture};

/// kB figures from smaps_rollup.
#[derive(Debug, Default, Clone, Copy)]
struct Rollup {
    pss: u64,
    rss: u64,
    private_dirty: u64,
    anon: u64,
}

fn rollup(pid: u32) -> anyhow::Result<Rollup> {
    let text = std::fs::read_to_string(format!("/proc/{pid}/smaps_rollup"))?;
    let field = |name: &str| -> u64 {
        text.lines()
            .find(|l| l.starts_with(name))
            .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
            .unwrap_or(0)
    };
    Ok(Rollup {
        pss: field("Pss:"),
        rss: field("Rss:"),
        private_dirty: field("Private_Dirty:"),
        anon: field("Anonymous:"),
    })
}

fn threads(pid: u32) -> anyhow::Result<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/task"))?.count())
}

/// A shim with a running `sleep` logging to a json-file (as docker runs containers), and
/// a highd stand-in.
async fn running_shim(fx: &mut Fixture) -> anyhow::Result<TaskClient<Channel>> {
    let events = FakeEvents::default();
    events.serve(&fx.events_sock)?;
    let mut client = fx.start_shim().await?;
    let log = format!(
        "jsonfile://{}?max-size=10m&max-file=3",
        fx.path("ctr.log").display()
    );
    client.create(fx.create_request(&log, &log)).await?;
    client
        .start(StartRequest {
            id: fx.id.clone(),
            exec_id: String::new(),
        })
        .await?;
    Ok(client)
}

/// Waits until the shim has been idle long enough to trim its heap (it logs that at
/// debug level, and tests run it with --debug), so what is measured is the idle state.
async fn wait_idle(fx: &Fixture) -> anyhow::Result<()> {
    let log = fx.bundle.join("shim.log");
    let trimmed = poll(Duration::from_secs(15), || {
        std::fs::read_to_string(&log)
            .ok()?
            .contains("idle: heap trimmed")
            .then_some(())
    })
    .await;
    trimmed.ok_or_else(|| anyhow::anyhow!("shim never went idle; see {}", log.display()))
}

async fn stop(fx: &mut Fixture, client: &mut TaskClient<Channel>) -> anyhow::Result<()> {
    let id = fx.id.clone();
    client
        .kill(KillRequest {
            id: id.clone(),
            exec_id: String::new(),
            signal: 9,
            all: false,
        })
        .await?;
    client
        .wait(WaitRequest {
            id,
            exec_id: String::new(),
        })
        .await?;
    fx.delete_and_shutdown(client).await?;
    Ok(())
}

fn check_limit(what: &str, avg_pss: u64) {
    if let Some(limit) = std::env::var("BERTH_TEST_SHIM_PSS_KB")
        .ok()
        .and_then(|v| v.parse::<u64>().ok())
    {
        assert!(avg_pss <= limit, "{what}: PSS {avg_pss} kB > {limit} kB");
    }
}

#[tokio::test]
async fn idle_shim_memory() -> anyhow::Result<()> {
    crate::harness::bounded(async {
        if skip_unless_root("idle_shim_memory") {
            return Ok(());
        }
        let mut fx = Fixture::new(&["sh", "-c", "echo up; exec sleep 1000"])?;
        let mut client = running_shim(&mut fx).await?;
        wait_idle(&fx).await?;
        let pid = fx.shim_pid.unwrap_or_default();
        let r = rollup(pid)?;
        let threads = threads(pid)?;
        eprintln!(
            "idle shim {pid}: Pss {} kB, Rss {} kB, Private_Dirty {} kB, Anonymous {} kB, \
             threads {threads}",
            r.pss, r.rss, r.private_dirty, r.anon
        );
        assert_eq!(threads, 1, "the shim must stay single-threaded");
        let log = std::fs::read_to_string(fx.bundle.join("shim.log"))?;
        if let Some(line) = log.lines().rfind(|l| l.contains("heap trimmed")) {
            eprintln!("malloc after the idle trim: {line}");
        }
        check_limit("one idle shim", r.pss);
        stop(&mut fx, &mut client).await
    })
    .await
}

#[tokio::test]
async fn twenty_idle_shims_memory() -> anyhow::Result<()> {
    const SHIMS: usize = 20;
    crate::harness::bounded(async {
        if skip_unless_root("twenty_idle_shims_memory") {
            return Ok(());
        }
        let mut running = Vec::new();
        for _ in 0..SHIMS {
            let mut fx = Fixture::new(&["sh", "-c", "echo up; exec sleep 1000"])?;
            let client = running_shim(&mut fx).await?;
            running.push((fx, client));
        }
        let mut figures = Vec::new();
        for (fx, _) in &running {
            wait_idle(fx).await?;
        }
        for (fx, _) in &running {
            let pid = fx.shim_pid.unwrap_or_default();
            assert_eq!(threads(pid)?, 1, "shim {pid} is not single-threaded");
            figures.push(rollup(pid)?);
        }
        let avg = |f: fn(&Rollup) -> u64| figures.iter().map(f).sum::<u64>() / SHIMS as u64;
        let (min, max) = (
            figures.iter().map(|r| r.pss).min().unwrap_or(0),
            figures.iter().map(|r| r.pss).max().unwrap_or(0),
        );
        eprintln!(
            "{SHIMS} idle shims: Pss avg {} kB (min {min}, max {max}), Rss avg {} kB, \
             Private_Dirty avg {} kB, Anonymous avg {} kB",
            avg(|r| r.pss),
            avg(|r| r.rss),
            avg(|r| r.private_dirty),
            avg(|r| r.anon)
        );
        check_limit("20 idle shims", avg(|r| r.pss));
        for (mut fx, mut client) in running {
            stop(&mut fx, &mut client).await?;
        }
        Ok(())
    })
    .await
}
