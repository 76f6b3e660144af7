//! `docker stats`: highd's task Metrics (the shim's cgroup v1 or v2 reading) turned into
//! dockerd's stats JSON, with the host's CPU time and the container netns' interface
//! counters added as dockerd adds them.

use std::time::Duration;

use chrono::{SecondsFormat, Utc};
use serde_json::{json, Map, Value};
use tokio::sync::mpsc;

use super::{Daemon, DaemonResult};
use crate::backend::{Backend, CgroupMetrics};
use berth_proto::io::containerd::cgroups::{v1, v2};

/// dockerd collects every second.
pub const INTERVAL: Duration = Duration::from_secs(1);
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";
/// Linux reports /proc/stat in USER_HZ, 100 on every architecture docker supports.
const NANOS_PER_TICK: u64 = 10_000_000;

/// Host CPU time in nanoseconds (the first seven `cpu` fields, as dockerd sums them) and
/// the number of online CPUs (`cpuN` lines).
pub fn system_cpu(proc_stat: &str) -> (u64, u64) {
    let mut total = 0;
    let mut cpus = 0;
    for line in proc_stat.lines() {
        let mut f = line.split_ascii_whitespace();
        match f.next() {
            Some("cpu") => {
                let ticks: u64 = f.take(7).filter_map(|v| v.parse::<u64>().ok()).sum();
                total = ticks.saturating_mul(NANOS_PER_TICK);
            }
            Some(c) if c.starts_with("cpu") => cpus += 1,
            _ => {}
        }
    }
    (total, cpus)
}

/// `MemTotal` of /proc/meminfo in bytes: the limit dockerd shows without a memory limit.
pub fn host_memory(meminfo: &str) -> u64 {
    meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_ascii_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Interface counters of /proc/<pid>/net/dev, loopback left out as dockerd does.
pub fn networks(net_dev: &str) -> Map<String, Value> {
    let mut out = Map::new();
    for line in net_dev.lines().skip(2) {
        let Some((name, rest)) = line.split_once(':') else {
            continue;
        };
        let name = name.trim();
        if name == "lo" {
            continue;
        }
        let v: Vec<u64> = rest
            .split_ascii_whitespace()
            .map(|x| x.parse().unwrap_or(0))
            .collect();
        if v.len() < 12 {
            continue;
        }
        out.insert(
            name.to_string(),
            json!({
                "rx_bytes": v[0], "rx_packets": v[1], "rx_errors": v[2], "rx_dropped": v[3],
                "tx_bytes": v[8], "tx_packets": v[9], "tx_errors": v[10], "tx_dropped": v[11],
            }),
        );
    }
    out
}

fn blkio(entries: &[v1::BlkIoEntry]) -> Value {
    if entries.is_empty() {
        return Value::Null;
    }
    entries
        .iter()
        .map(|e| json!({"major": e.major, "minor": e.minor, "op": e.op, "value": e.value}))
        .collect()
}

fn pids_stats(current: u64, limit: u64) -> Value {
    let mut p = json!({ "current": current });
    if limit > 0 {
        p["limit"] = json!(limit);
    }
    p
}

/// The cgroup part of one sample: `cpu_stats` (without the system fields), `memory_stats`,
/// `pids_stats`, `blkio_stats`. `host_mem` caps an unlimited memory limit.
pub fn cgroup_stats(m: &CgroupMetrics, host_mem: u64) -> Map<String, Value> {
    let cap = |limit: u64| {
        if limit == 0 || (host_mem > 0 && limit > host_mem) {
            host_mem
        } else {
            limit
        }
    };
    let mut out = Map::new();
    match m {
        CgroupMetrics::V1(m) => {
            let cpu = m.cpu.clone().unwrap_or_default();
            let usage = cpu.usage.unwrap_or_default();
            let thr = cpu.throttling.unwrap_or_default();
            out.insert(
                "cpu_stats".into(),
                json!({
                    "cpu_usage": {
                        "total_usage": usage.total, "percpu_usage": usage.per_cpu,
                        "usage_in_kernelmode": usage.kernel, "usage_in_usermode": usage.user,
                    },
                    "throttling_data": {
                        "periods": thr.periods, "throttled_periods": thr.throttled_periods,
                        "throttled_time": thr.throttled_time,
                    },
                }),
            );
            let mem = m.memory.unwrap_or_default();
            let u = mem.usage.unwrap_or_default();
            out.insert(
                "memory_stats".into(),
                json!({
                    "usage": u.usage, "max_usage": u.max, "failcnt": u.failcnt,
                    "limit": cap(u.limit),
                    "stats": {
                        "active_anon": mem.active_anon, "active_file": mem.active_file,
                        "cache": mem.cache, "dirty": mem.dirty,
                        "hierarchical_memory_limit": mem.hierarchical_memory_limit,
                        "hierarchical_memsw_limit": mem.hierarchical_swap_limit,
                        "inactive_anon": mem.inactive_anon, "inactive_file": mem.inactive_file,
                        "mapped_file": mem.mapped_file, "pgfault": mem.pg_fault,
                        "pgmajfault": mem.pg_maj_fault, "pgpgin": mem.pg_pg_in,
                        "pgpgout": mem.pg_pg_out, "rss": mem.rss, "rss_huge": mem.rss_huge,
                        "total_active_anon": mem.total_active_anon,
                        "total_active_file": mem.total_active_file,
                        "total_cache": mem.total_cache, "total_dirty": mem.total_dirty,
                        "total_inactive_anon": mem.total_inactive_anon,
                        "total_inactive_file": mem.total_inactive_file,
                        "total_mapped_file": mem.total_mapped_file,
                        "total_pgfault": mem.total_pg_fault,
                        "total_pgmajfault": mem.total_pg_maj_fault,
                        "total_pgpgin": mem.total_pg_pg_in, "total_pgpgout": mem.total_pg_pg_out,
                        "total_rss": mem.total_rss, "total_rss_huge": mem.total_rss_huge,
                        "total_unevictable": mem.total_unevictable,
                        "total_writeback": mem.total_writeback,
                        "unevictable": mem.unevictable, "writeback": mem.writeback,
                    },
                }),
            );
            let p = m.pids.unwrap_or_default();
            out.insert("pids_stats".into(), pids_stats(p.current, p.limit));
            let b = m.blkio.clone().unwrap_or_default();
            out.insert(
                "blkio_stats".into(),
                json!({
                    "io_service_bytes_recursive": blkio(&b.io_service_bytes_recursive),
                    "io_serviced_recursive": blkio(&b.io_serviced_recursive),
                    "io_queue_recursive": blkio(&b.io_queued_recursive),
                    "io_service_time_recursive": blkio(&b.io_service_time_recursive),
                    "io_wait_time_recursive": blkio(&b.io_wait_time_recursive),
                    "io_merged_recursive": blkio(&b.io_merged_recursive),
                    "io_time_recursive": blkio(&b.io_time_recursive),
                    "sectors_recursive": blkio(&b.sectors_recursive),
                }),
            );
        }
        CgroupMetrics::V2(m) => {
            let cpu = m.cpu.unwrap_or_default();
            out.insert(
                "cpu_stats".into(),
                json!({
                    "cpu_usage": {
                        "total_usage": cpu.usage_usec * 1000,
                        "usage_in_kernelmode": cpu.system_usec * 1000,
                        "usage_in_usermode": cpu.user_usec * 1000,
                    },
                    "throttling_data": {
                        "periods": cpu.nr_periods, "throttled_periods": cpu.nr_throttled,
                        "throttled_time": cpu.throttled_usec * 1000,
                    },
                }),
            );
            out.insert("memory_stats".into(), v2_memory(m, cap));
            let p = m.pids.unwrap_or_default();
            out.insert("pids_stats".into(), pids_stats(p.current, p.limit));
            let io = m.io.clone().unwrap_or_default();
            let entries = |f: fn(&v2::IoEntry) -> (u64, u64)| -> Value {
                if io.usage.is_empty() {
                    return Value::Null;
                }
                io.usage
                    .iter()
                    .flat_map(|e| {
                        let (r, w) = f(e);
                        [
                            json!({"major": e.major, "minor": e.minor, "op": "read", "value": r}),
                            json!({"major": e.major, "minor": e.minor, "op": "write", "value": w}),
                        ]
                    })
                    .collect()
            };
            out.insert(
                "blkio_stats".into(),
                json!({
                    "io_service_bytes_recursive": entries(|e| (e.rbytes, e.wbytes)),
                    "io_serviced_recursive": entries(|e| (e.rios, e.wios)),
                    "io_queue_recursive": null, "io_service_time_recursive": null,
                    "io_wait_time_recursive": null, "io_merged_recursive": null,
                    "io_time_recursive": null, "sectors_recursive": null,
                }),
            );
        }
    }
    out
}

fn v2_memory(m: &v2::Metrics, cap: impl Fn(u64) -> u64) -> Value {
    let mem = m.memory.unwrap_or_default();
    json!({
        "usage": mem.usage,
        "limit": cap(mem.usage_limit),
        "stats": {
            "anon": mem.anon, "file": mem.file, "kernel_stack": mem.kernel_stack,
            "slab": mem.slab, "sock": mem.sock, "shmem": mem.shmem,
            "file_mapped": mem.file_mapped, "file_dirty": mem.file_dirty,
            "file_writeback": mem.file_writeback, "anon_thp": mem.anon_thp,
            "inactive_anon": mem.inactive_anon, "active_anon": mem.active_anon,
            "inactive_file": mem.inactive_file, "active_file": mem.active_file,
            "unevictable": mem.unevictable, "slab_reclaimable": mem.slab_reclaimable,
            "slab_unreclaimable": mem.slab_unreclaimable, "pgfault": mem.pgfault,
            "pgmajfault": mem.pgmajfault, "workingset_refault": mem.workingset_refault,
            "workingset_activate": mem.workingset_activate,
            "workingset_nodereclaim": mem.workingset_nodereclaim, "pgrefill": mem.pgrefill,
            "pgscan": mem.pgscan, "pgsteal": mem.pgsteal, "pgactivate": mem.pgactivate,
            "pgdeactivate": mem.pgdeactivate, "pglazyfree": mem.pglazyfree,
            "pglazyfreed": mem.pglazyfreed, "thp_fault_alloc": mem.thp_fault_alloc,
            "thp_collapse_alloc": mem.thp_collapse_alloc,
        },
    })
}

/// dockerd's zero stats: a container that is not running.
fn empty(name: &str, id: &str) -> Value {
    json!({
        "name": name, "id": id, "read": ZERO_TIME, "preread": ZERO_TIME,
        "pids_stats": {}, "blkio_stats": {
            "io_service_bytes_recursive": null, "io_serviced_recursive": null,
            "io_queue_recursive": null, "io_service_time_recursive": null,
            "io_wait_time_recursive": null, "io_merged_recursive": null,
            "io_time_recursive": null, "sectors_recursive": null,
        },
        "num_procs": 0, "storage_stats": {},
        "cpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                      "usage_in_usermode": 0}, "throttling_data": {"periods": 0,
                      "throttled_periods": 0, "throttled_time": 0}},
        "precpu_stats": {"cpu_usage": {"total_usage": 0, "usage_in_kernelmode": 0,
                         "usage_in_usermode": 0}, "throttling_data": {"periods": 0,
                         "throttled_periods": 0, "throttled_time": 0}},
        "memory_stats": {},
    })
}

/// One sample and what the next one needs as its `pre*` fields.
struct Previous {
    read: String,
    cpu: Value,
}

impl<B: Backend> Daemon<B> {
    /// One sample of a running container, or `None` when it is not running (any more).
    async fn stats_sample(&self, id: &str, prev: &Option<Previous>) -> Option<Value> {
        let rec = self.store.get(id)?;
        if !rec.state.status.is_running() {
            return None;
        }
        let metrics = match self.backend.task_metrics(id).await {
            Ok(m) => m,
            Err(e) => {
                tracing::debug!(%id, error = %e, "no metrics");
                return None;
            }
        };
        let read = Utc::now().to_rfc3339_opts(SecondsFormat::Nanos, true);
        let host_mem = host_memory(&std::fs::read_to_string("/proc/meminfo").unwrap_or_default());
        let (system, cpus) = system_cpu(&std::fs::read_to_string("/proc/stat").unwrap_or_default());
        let mut s = cgroup_stats(&metrics, host_mem);
        if let Some(cpu) = s.get_mut("cpu_stats") {
            cpu["system_cpu_usage"] = json!(system);
            cpu["online_cpus"] = json!(cpus);
        }
        s.insert(
            "name".into(),
            json!(format!("/{}", rec.name.trim_start_matches('/'))),
        );
        s.insert("id".into(), json!(rec.id));
        s.insert("read".into(), json!(read));
        s.insert("num_procs".into(), json!(0));
        s.insert("storage_stats".into(), json!({}));
        let (preread, precpu) = match prev {
            Some(p) => (json!(p.read), p.cpu.clone()),
            None => (json!(ZERO_TIME), empty("", "")["precpu_stats"].clone()),
        };
        s.insert("preread".into(), preread);
        s.insert("precpu_stats".into(), precpu);
        // The netns of the container's init; a host-network container has none of its own.
        if rec.host_config.network_mode != "host" && rec.state.pid > 0 {
            let dev = std::fs::read_to_string(format!("/proc/{}/net/dev", rec.state.pid));
            let nets = networks(&dev.unwrap_or_default());
            if !nets.is_empty() {
                s.insert("networks".into(), Value::Object(nets));
            }
        }
        Some(Value::Object(s))
    }

    /// `GET /containers/{id}/stats`: newline-separated JSON. Streaming sends a sample
    /// every second until the client leaves or the container is removed (a stopped one
    /// gets dockerd's zero stats); `stream=false` waits for a second sample so
    /// `precpu_stats` is filled (unless `one-shot`).
    pub fn container_stats(
        self: &std::sync::Arc<Self>,
        reference: &str,
        stream: bool,
        one_shot: bool,
    ) -> DaemonResult<mpsc::Receiver<bytes::Bytes>> {
        let rec = self.container(reference)?;
        let (tx, rx) = mpsc::channel(4);
        let this = std::sync::Arc::clone(self);
        tokio::spawn(async move {
            let line = |v: &Value| bytes::Bytes::from(format!("{v}\n"));
            let name = format!("/{}", rec.name.trim_start_matches('/'));
            let mut prev: Option<Previous> = None;
            let mut first = true;
            loop {
                if this.store.get(&rec.id).is_none() {
                    return;
                }
                let sample = this.stats_sample(&rec.id, &prev).await;
                let Some(v) = sample else {
                    prev = None;
                    let _ = tx.send(line(&empty(&name, &rec.id))).await;
                    if !stream {
                        return;
                    }
                    if tx.is_closed() {
                        return;
                    }
                    tokio::time::sleep(INTERVAL).await;
                    continue;
                };
                prev = Some(Previous {
                    read: v["read"].as_str().unwrap_or(ZERO_TIME).to_string(),
                    cpu: v["cpu_stats"].clone(),
                });
                let skip = !stream && !one_shot && first;
                first = false;
                if !skip && (tx.send(line(&v)).await.is_err() || !stream) {
                    return;
                }
                tokio::select! {
                    () = tokio::time::sleep(INTERVAL) => {}
                    () = tx.closed() => return,
                }
            }
        });
        Ok(rx)
    }
}

#[cfg(test)]
#[path = "stats_tests.rs"]
mod tests;
