//! Observing running containers with the real docker CLI: `docker top` (ListPids + ps)
//! and `docker stats` (task metrics as dockerd's stats JSON).

use std::io::{Read, Write};
use std::os::unix::net::UnixStream;
use std::time::{Duration, Instant};

use anyhow::{ensure, Context, Result};
use berth_integration::Stack;

use crate::common::{expect_contains, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "stats_top::top_lists_the_container_processes",
            needs: DOCKER,
            run: top,
        },
        Spec {
            name: "stats_top::stats_no_stream_and_streaming",
            needs: DOCKER,
            run: stats,
        },
    ]
}

fn top() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&[
        "run",
        "-d",
        "--name",
        "tp",
        "busybox",
        "sh",
        "-c",
        "sleep 1001 & sleep 1002; true",
    ])?
    .ok()?;
    let out = s.docker(&["top", "tp"])?.ok()?;
    let mut lines = out.stdout.lines();
    let header = lines.next().unwrap_or("");
    for title in ["UID", "PID", "PPID", "CMD"] {
        expect_contains("docker top header", header, title)?;
    }
    let rows: Vec<&str> = lines.collect();
    ensure!(
        rows.len() == 3,
        "docker top rows {rows:?}, want sh and two sleeps"
    );
    expect_contains("docker top", &out.stdout, "sleep 1001")?;
    expect_contains("docker top", &out.stdout, "sleep 1002")?;
    // ps arguments pass through; only the container's processes are kept.
    let out = s.docker(&["top", "tp", "-o", "pid,comm"])?.ok()?;
    let comms: Vec<&str> = out
        .stdout
        .lines()
        .skip(1)
        .filter_map(|l| l.split_whitespace().nth(1))
        .collect();
    ensure!(
        comms == ["sh", "sleep", "sleep"],
        "docker top -o pid,comm: {:?}",
        out.stdout
    );
    let bad = s.docker(&["top", "tp", "-o", "ppid=PID"])?;
    ensure!(bad.code != 0, "a PID rename must be refused");
    expect_contains(
        "docker top -o ppid=PID",
        &bad.stderr,
        "specifying \"ppid=PID\" is not allowed",
    )?;
    s.docker(&["rm", "-f", "tp"])?.ok()?;
    let stopped = s.docker(&["create", "--name", "tq", "busybox", "true"])?;
    stopped.ok()?;
    let out = s.docker(&["top", "tq"])?;
    expect_contains(
        "docker top of a created container",
        &out.stderr,
        "is not running",
    )?;
    Ok(())
}

fn stats() -> Result<()> {
    let s = Stack::with_busybox()?;
    s.docker(&["run", "-d", "--name", "st", "busybox", "sleep", "1000"])?
        .ok()?;
    let out = s
        .docker(&[
            "stats",
            "--no-stream",
            "--format",
            "{{.Name}}|{{.MemUsage}}|{{.PIDs}}",
            "st",
        ])?
        .ok()?;
    let fields: Vec<&str> = out.out().split('|').collect();
    ensure!(fields.len() == 3, "stats line {:?}", out.stdout);
    ensure!(fields[0] == "st", "stats name {:?}", fields[0]);
    ensure!(
        !fields[1].starts_with("0B "),
        "memory usage is zero: {:?}",
        fields[1]
    );
    let pids: u64 = fields[2].trim().parse().context("PIDs column")?;
    ensure!(pids >= 1, "PIDs {pids}");
    // The streaming API sends a sample a second until the client leaves.
    let samples = stream_samples(&s, "st", Duration::from_millis(3500))?;
    ensure!(
        samples.len() >= 2,
        "streaming stats sent {} samples in 3.5 s",
        samples.len()
    );
    ensure!(
        samples
            .iter()
            .all(|v| v["pids_stats"]["current"].as_u64().unwrap_or(0) >= 1),
        "a sample without pids: {samples:?}"
    );
    ensure!(
        samples[1]["precpu_stats"]["cpu_usage"]["total_usage"]
            == samples[0]["cpu_stats"]["cpu_usage"]["total_usage"],
        "precpu_stats of a sample must be the previous sample's cpu_stats"
    );
    Ok(())
}

/// Reads `GET /containers/NAME/stats` for `dur` and returns the JSON samples seen.
fn stream_samples(s: &Stack, name: &str, dur: Duration) -> Result<Vec<serde_json::Value>> {
    let mut conn = UnixStream::connect(s.engine_sock())?;
    write!(
        conn,
        "GET /containers/{name}/stats HTTP/1.1\r\nHost: d\r\n\r\n"
    )?;
    conn.set_read_timeout(Some(Duration::from_millis(200)))?;
    let start = Instant::now();
    let mut raw = Vec::new();
    let mut buf = [0u8; 16384];
    while start.elapsed() < dur {
        match conn.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => raw.extend_from_slice(&buf[..n]),
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) => {}
            Err(e) => return Err(e.into()),
        }
    }
    // Chunk-size lines are hex digits; every sample is one JSON line.
    Ok(String::from_utf8_lossy(&raw)
        .lines()
        .filter(|l| l.starts_with('{'))
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect())
}
