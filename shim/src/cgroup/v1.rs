//! cgroup v1 statistics as containerd's `io.containerd.cgroups.v1.Metrics` (kernel
//! Documentation/admin-guide/cgroup-v1/{memory,cpuacct,blkio-controller,pids,hugetlb}.rst).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use berth_proto::io::containerd::cgroups::v1 as m;

use super::files::{hugetlb_sizes, read_keyed, read_list, read_opt, read_u64};
use super::CgroupError;

pub(super) fn metrics(
    dirs: &BTreeMap<String, PathBuf>,
    sys_dev_block: &Path,
) -> Result<m::Metrics, CgroupError> {
    let dir = |c: &str| dirs.get(c).map(PathBuf::as_path).filter(|d| d.is_dir());
    let mut metrics = m::Metrics::default();
    if let Some(d) = dir("pids") {
        metrics.pids = Some(m::PidsStat {
            current: read_u64(d, "pids.current", 0)?,
            // v1 reports "no limit" as 0.
            limit: read_u64(d, "pids.max", 0)?,
        });
    }
    if dir("cpuacct").is_some() || dir("cpu").is_some() {
        metrics.cpu = Some(cpu(dir("cpuacct"), dir("cpu"))?);
    }
    if let Some(d) = dir("memory") {
        metrics.memory = Some(memory(d)?);
        metrics.memory_oom_control = Some(oom_control(d)?);
    }
    if let Some(d) = dir("blkio") {
        metrics.blkio = Some(blkio(d, sys_dev_block)?);
    }
    if let Some(d) = dir("hugetlb") {
        metrics.hugetlb = hugetlb(d)?;
    }
    Ok(metrics)
}

fn cpu(cpuacct: Option<&Path>, cpu: Option<&Path>) -> Result<m::CpuStat, CgroupError> {
    let mut usage = m::CpuUsage::default();
    if let Some(d) = cpuacct {
        usage.total = read_u64(d, "cpuacct.usage", 0)?;
        usage.per_cpu = read_list(d, "cpuacct.usage_percpu")?;
        // Nanoseconds since Linux 4.7; cpuacct.stat (in USER_HZ ticks) only before.
        if read_opt(d, "cpuacct.usage_user")?.is_some() {
            usage.user = read_u64(d, "cpuacct.usage_user", 0)?;
            usage.kernel = read_u64(d, "cpuacct.usage_sys", 0)?;
        } else {
            // USER_HZ is 100 on every architecture we build for (times(2)).
            const NS_PER_TICK: u64 = 1_000_000_000 / 100;
            read_keyed(d, "cpuacct.stat", |key, value| match key {
                "user" => usage.user = value.saturating_mul(NS_PER_TICK),
                "system" => usage.kernel = value.saturating_mul(NS_PER_TICK),
                _ => {}
            })?;
        }
    }
    let mut throttling = m::Throttle::default();
    if let Some(d) = cpu {
        read_keyed(d, "cpu.stat", |key, value| match key {
            "nr_periods" => throttling.periods = value,
            "nr_throttled" => throttling.throttled_periods = value,
            "throttled_time" => throttling.throttled_time = value,
            _ => {}
        })?;
    }
    Ok(m::CpuStat {
        usage: Some(usage),
        throttling: Some(throttling),
    })
}

fn memory(d: &Path) -> Result<m::MemoryStat, CgroupError> {
    let mut s = m::MemoryStat::default();
    read_keyed(d, "memory.stat", |key, v| {
        let field = match key {
            "cache" => &mut s.cache,
            "rss" => &mut s.rss,
            "rss_huge" => &mut s.rss_huge,
            "mapped_file" => &mut s.mapped_file,
            "dirty" => &mut s.dirty,
            "writeback" => &mut s.writeback,
            "pgpgin" => &mut s.pg_pg_in,
            "pgpgout" => &mut s.pg_pg_out,
            "pgfault" => &mut s.pg_fault,
            "pgmajfault" => &mut s.pg_maj_fault,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "hierarchical_memory_limit" => &mut s.hierarchical_memory_limit,
            "hierarchical_memsw_limit" => &mut s.hierarchical_swap_limit,
            "total_cache" => &mut s.total_cache,
            "total_rss" => &mut s.total_rss,
            "total_rss_huge" => &mut s.total_rss_huge,
            "total_mapped_file" => &mut s.total_mapped_file,
            "total_dirty" => &mut s.total_dirty,
            "total_writeback" => &mut s.total_writeback,
            "total_pgpgin" => &mut s.total_pg_pg_in,
            "total_pgpgout" => &mut s.total_pg_pg_out,
            "total_pgfault" => &mut s.total_pg_fault,
            "total_pgmajfault" => &mut s.total_pg_maj_fault,
            "total_inactive_anon" => &mut s.total_inactive_anon,
            "total_active_anon" => &mut s.total_active_anon,
            "total_inactive_file" => &mut s.total_inactive_file,
            "total_active_file" => &mut s.total_active_file,
            "total_unevictable" => &mut s.total_unevictable,
            _ => return,
        };
        *field = v;
    })?;
    s.usage = entry(d, "memory")?;
    s.swap = entry(d, "memory.memsw")?;
    s.kernel = entry(d, "memory.kmem")?;
    s.kernel_tcp = entry(d, "memory.kmem.tcp")?;
    Ok(s)
}

/// `<prefix>.{usage_in_bytes,max_usage_in_bytes,failcnt,limit_in_bytes}`; `None` when the
/// counter does not exist (memsw without swap accounting, kmem on cgroup-v1-less kernels).
fn entry(d: &Path, prefix: &str) -> Result<Option<m::MemoryEntry>, CgroupError> {
    let usage = format!("{prefix}.usage_in_bytes");
    if read_opt(d, &usage)?.is_none() {
        return Ok(None);
    }
    Ok(Some(m::MemoryEntry {
        usage: read_u64(d, &usage, 0)?,
        max: read_u64(d, &format!("{prefix}.max_usage_in_bytes"), 0)?,
        failcnt: read_u64(d, &format!("{prefix}.failcnt"), 0)?,
        limit: read_u64(d, &format!("{prefix}.limit_in_bytes"), 0)?,
    }))
}

fn oom_control(d: &Path) -> Result<m::MemoryOomControl, CgroupError> {
    let mut oom = m::MemoryOomControl::default();
    read_keyed(d, "memory.oom_control", |key, v| match key {
        "oom_kill_disable" => oom.oom_kill_disable = v,
        "under_oom" => oom.under_oom = v,
        "oom_kill" => oom.oom_kill = v,
        _ => {}
    })?;
    Ok(oom)
}

fn blkio(d: &Path, sys_dev_block: &Path) -> Result<m::BlkIoStat, CgroupError> {
    let mut s = m::BlkIoStat::default();
    let read = |name: &str| blkio_entries(d, name, sys_dev_block);
    // The CFQ files (kernels before 5.0 with CFQ) are the complete set; elsewhere only the
    // throttle layer's counters exist, which count every bio (what containerd falls back to).
    if read_opt(d, "blkio.io_serviced_recursive")?.is_some() {
        s.io_service_bytes_recursive = read("blkio.io_service_bytes_recursive")?;
        s.io_serviced_recursive = read("blkio.io_serviced_recursive")?;
        s.io_queued_recursive = read("blkio.io_queued_recursive")?;
        s.io_service_time_recursive = read("blkio.io_service_time_recursive")?;
        s.io_wait_time_recursive = read("blkio.io_wait_time_recursive")?;
        s.io_merged_recursive = read("blkio.io_merged_recursive")?;
        s.io_time_recursive = read("blkio.time_recursive")?;
        s.sectors_recursive = read("blkio.sectors_recursive")?;
    } else {
        s.io_service_bytes_recursive = read("blkio.throttle.io_service_bytes_recursive")?;
        s.io_serviced_recursive = read("blkio.throttle.io_serviced_recursive")?;
    }
    Ok(s)
}

/// Lines `MAJ:MIN [OP] VALUE`; the summary line `Total N` is skipped.
fn blkio_entries(
    d: &Path,
    name: &str,
    sys_dev_block: &Path,
) -> Result<Vec<m::BlkIoEntry>, CgroupError> {
    let Some(text) = read_opt(d, name)? else {
        return Ok(Vec::new());
    };
    let bad = |line: &str| CgroupError::Parse {
        path: d.join(name),
        text: line.to_owned(),
    };
    let mut entries = Vec::new();
    for line in text.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        let (dev, op, value) = match fields[..] {
            [] | ["Total", _] => continue,
            [dev, value] => (dev, "", value),
            [dev, op, value] => (dev, op, value),
            _ => return Err(bad(line)),
        };
        let (major, minor) = dev
            .split_once(':')
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| bad(line))?;
        entries.push(m::BlkIoEntry {
            op: op.to_owned(),
            device: device_name(sys_dev_block, major, minor),
            major,
            minor,
            value: value.parse().map_err(|_| bad(line))?,
        });
    }
    Ok(entries)
}

/// `/dev/<DEVNAME>` from sysfs's uevent, or "" when the device is unknown.
fn device_name(sys_dev_block: &Path, major: u64, minor: u64) -> String {
    let uevent = sys_dev_block
        .join(format!("{major}:{minor}"))
        .join("uevent");
    std::fs::read_to_string(uevent)
        .ok()
        .and_then(|t| {
            t.lines()
                .find_map(|l| l.strip_prefix("DEVNAME=").map(|n| format!("/dev/{n}")))
        })
        .unwrap_or_default()
}

fn hugetlb(d: &Path) -> Result<Vec<m::HugetlbStat>, CgroupError> {
    hugetlb_sizes(d, ".usage_in_bytes")?
        .into_iter()
        .map(|size| {
            Ok(m::HugetlbStat {
                usage: read_u64(d, &format!("hugetlb.{size}.usage_in_bytes"), 0)?,
                max: read_u64(d, &format!("hugetlb.{size}.max_usage_in_bytes"), 0)?,
                failcnt: read_u64(d, &format!("hugetlb.{size}.failcnt"), 0)?,
                pagesize: size,
            })
        })
        .collect()
}
