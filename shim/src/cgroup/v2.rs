//! cgroup v2 statistics as containerd's `io.containerd.cgroups.v2.Metrics` (kernel
//! Documentation/admin-guide/cgroup-v2.rst, "Core interface files" and per controller).

use std::path::Path;

use berth_proto::io::containerd::cgroups::v2 as m;

use super::files::{hugetlb_sizes, read_keyed, read_opt, read_u64};
use super::CgroupError;

/// Each part is read only where its controller is enabled (its files exist); `cpu.stat`
/// exists in every v2 cgroup, with usage even without the cpu controller.
pub(super) fn metrics(d: &Path) -> Result<m::Metrics, CgroupError> {
    let mut metrics = m::Metrics::default();
    if read_opt(d, "pids.current")?.is_some() {
        metrics.pids = Some(m::PidsStat {
            current: read_u64(d, "pids.current", 0)?,
            // containerd's v2 reader turns every "max" into u64::MAX.
            limit: read_u64(d, "pids.max", u64::MAX)?,
        });
    }
    let mut cpu = m::CpuStat::default();
    if read_keyed(d, "cpu.stat", |key, v| {
        let field = match key {
            "usage_usec" => &mut cpu.usage_usec,
            "user_usec" => &mut cpu.user_usec,
            "system_usec" => &mut cpu.system_usec,
            "nr_periods" => &mut cpu.nr_periods,
            "nr_throttled" => &mut cpu.nr_throttled,
            "throttled_usec" => &mut cpu.throttled_usec,
            _ => return,
        };
        *field = v;
    })? {
        metrics.cpu = Some(cpu);
    }
    if read_opt(d, "memory.current")?.is_some() {
        metrics.memory = Some(memory(d)?);
        let mut events = m::MemoryEvents::default();
        read_keyed(d, "memory.events", |key, v| match key {
            "low" => events.low = v,
            "high" => events.high = v,
            "max" => events.max = v,
            "oom" => events.oom = v,
            "oom_kill" => events.oom_kill = v,
            _ => {}
        })?;
        metrics.memory_events = Some(events);
    }
    if let Some(text) = read_opt(d, "io.stat")? {
        metrics.io = Some(m::IoStat {
            usage: io_stat(d, &text)?,
        });
    }
    metrics.hugetlb = hugetlb_sizes(d, ".current")?
        .into_iter()
        .map(|size| {
            Ok(m::HugeTlbStat {
                current: read_u64(d, &format!("hugetlb.{size}.current"), 0)?,
                max: read_u64(d, &format!("hugetlb.{size}.max"), u64::MAX)?,
                pagesize: size,
            })
        })
        .collect::<Result<_, CgroupError>>()?;
    Ok(metrics)
}

fn memory(d: &Path) -> Result<m::MemoryStat, CgroupError> {
    let mut s = m::MemoryStat::default();
    // Since Linux 5.9 the workingset counters are split into _anon and _file.
    let (mut refault, mut activate) = (None::<u64>, None::<u64>);
    read_keyed(d, "memory.stat", |key, v| {
        let field = match key {
            "anon" => &mut s.anon,
            "file" => &mut s.file,
            "kernel_stack" => &mut s.kernel_stack,
            "slab" => &mut s.slab,
            "sock" => &mut s.sock,
            "shmem" => &mut s.shmem,
            "file_mapped" => &mut s.file_mapped,
            "file_dirty" => &mut s.file_dirty,
            "file_writeback" => &mut s.file_writeback,
            "anon_thp" => &mut s.anon_thp,
            "inactive_anon" => &mut s.inactive_anon,
            "active_anon" => &mut s.active_anon,
            "inactive_file" => &mut s.inactive_file,
            "active_file" => &mut s.active_file,
            "unevictable" => &mut s.unevictable,
            "slab_reclaimable" => &mut s.slab_reclaimable,
            "slab_unreclaimable" => &mut s.slab_unreclaimable,
            "pgfault" => &mut s.pgfault,
            "pgmajfault" => &mut s.pgmajfault,
            "workingset_nodereclaim" => &mut s.workingset_nodereclaim,
            "pgrefill" => &mut s.pgrefill,
            "pgscan" => &mut s.pgscan,
            "pgsteal" => &mut s.pgsteal,
            "pgactivate" => &mut s.pgactivate,
            "pgdeactivate" => &mut s.pgdeactivate,
            "pglazyfree" => &mut s.pglazyfree,
            "pglazyfreed" => &mut s.pglazyfreed,
            "thp_fault_alloc" => &mut s.thp_fault_alloc,
            "thp_collapse_alloc" => &mut s.thp_collapse_alloc,
            "workingset_refault" | "workingset_refault_anon" | "workingset_refault_file" => {
                refault = Some(refault.unwrap_or(0).saturating_add(v));
                return;
            }
            "workingset_activate" | "workingset_activate_anon" | "workingset_activate_file" => {
                activate = Some(activate.unwrap_or(0).saturating_add(v));
                return;
            }
            _ => return,
        };
        *field = v;
    })?;
    s.workingset_refault = refault.unwrap_or(0);
    s.workingset_activate = activate.unwrap_or(0);
    s.usage = read_u64(d, "memory.current", 0)?;
    s.usage_limit = read_u64(d, "memory.max", u64::MAX)?;
    s.swap_usage = read_u64(d, "memory.swap.current", 0)?;
    s.swap_limit = read_u64(d, "memory.swap.max", u64::MAX)?;
    Ok(s)
}

/// Lines `MAJ:MIN rbytes=N wbytes=N rios=N wios=N dbytes=N dios=N`.
fn io_stat(d: &Path, text: &str) -> Result<Vec<m::IoEntry>, CgroupError> {
    let bad = |line: &str| CgroupError::Parse {
        path: d.join("io.stat"),
        text: line.to_owned(),
    };
    let mut entries = Vec::new();
    for line in text.lines().filter(|l| !l.trim().is_empty()) {
        let mut fields = line.split_whitespace();
        let (major, minor) = fields
            .next()
            .and_then(|dev| dev.split_once(':'))
            .and_then(|(a, b)| Some((a.parse().ok()?, b.parse().ok()?)))
            .ok_or_else(|| bad(line))?;
        let mut entry = m::IoEntry {
            major,
            minor,
            ..Default::default()
        };
        for field in fields {
            let (key, value) = field.split_once('=').ok_or_else(|| bad(line))?;
            let value: u64 = value.parse().map_err(|_| bad(line))?;
            match key {
                "rbytes" => entry.rbytes = value,
                "wbytes" => entry.wbytes = value,
                "rios" => entry.rios = value,
                "wios" => entry.wios = value,
                _ => {}
            }
        }
        entries.push(entry);
    }
    Ok(entries)
}
