//! Reading a container's resource usage from its cgroup files, v1 and v2, the files and
//! conversions runc's libcontainer/cgroups/fs and fs2 use. Missing files (a controller the
//! host lacks) leave their fields zero, as in runc.

use std::path::{Path, PathBuf};

use super::stats::{
    parse_blkio_v1, parse_flat_keyed, parse_io_stat, parse_list, Hugetlb, MemoryEntry, Stats,
};
use super::{under, CgroupConfig, CgroupError};

fn read(path: &Path) -> Option<String> {
    std::fs::read_to_string(path).ok()
}

/// A single-number file; "max" (v2's "no limit") reads as u64::MAX, as runc reports it.
fn num(path: &Path) -> u64 {
    match read(path).as_deref().map(str::trim) {
        Some("max") => u64::MAX,
        Some(t) => t.parse().unwrap_or(0),
        None => 0,
    }
}

fn nums(path: &Path) -> Vec<u64> {
    read(path)
        .map(|t| {
            t.split_whitespace()
                .filter_map(|n| n.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl CgroupConfig {
    /// The container's usage now. Hybrid hosts read v1 (the v2 side holds no controllers).
    pub fn stats(&self) -> Result<Stats, CgroupError> {
        if !self.layout.v1.is_empty() {
            return Ok(self.stats_v1());
        }
        match &self.layout.v2 {
            Some(root) => Ok(stats_v2(&under(root, &self.path))),
            None => Err(CgroupError::NoHierarchy),
        }
    }

    /// The container's directory in the v1 hierarchy holding `controller`.
    pub(crate) fn v1_dir(&self, controller: &str) -> Option<PathBuf> {
        self.layout
            .v1
            .iter()
            .find(|h| h.has(controller))
            .map(|h| under(&h.mountpoint, &self.path))
    }

    fn stats_v1(&self) -> Stats {
        let mut s = Stats::default();
        if let Some(d) = self.v1_dir("cpuacct") {
            let u = &mut s.cpu.usage;
            u.total = num(&d.join("cpuacct.usage"));
            u.percpu = nums(&d.join("cpuacct.usage_percpu"));
            u.percpu_kernel = nums(&d.join("cpuacct.usage_percpu_sys"));
            u.percpu_user = nums(&d.join("cpuacct.usage_percpu_user"));
            // cpuacct.stat counts USER_HZ ticks; runc reports nanoseconds.
            let stat = parse_flat_keyed(&read(&d.join("cpuacct.stat")).unwrap_or_default());
            let tick_ns = 1_000_000_000 / clock_ticks();
            u.user = stat.get("user").copied().unwrap_or(0) * tick_ns;
            u.kernel = stat.get("system").copied().unwrap_or(0) * tick_ns;
        }
        if let Some(d) = self.v1_dir("cpu") {
            let stat = parse_flat_keyed(&read(&d.join("cpu.stat")).unwrap_or_default());
            let t = &mut s.cpu.throttling;
            t.periods = stat.get("nr_periods").copied().unwrap_or(0);
            t.throttled_periods = stat.get("nr_throttled").copied().unwrap_or(0);
            t.throttled_time = stat.get("throttled_time").copied().unwrap_or(0);
        }
        if let Some(d) = self.v1_dir("cpuset") {
            s.cpuset.cpus = parse_list(&read(&d.join("cpuset.cpus")).unwrap_or_default());
            s.cpuset.mems = parse_list(&read(&d.join("cpuset.mems")).unwrap_or_default());
            s.cpuset.cpu_exclusive = num(&d.join("cpuset.cpu_exclusive"));
            s.cpuset.mem_exclusive = num(&d.join("cpuset.mem_exclusive"));
            s.cpuset.mem_hardwall = num(&d.join("cpuset.mem_hardwall"));
            s.cpuset.memory_migrate = num(&d.join("cpuset.memory_migrate"));
            s.cpuset.sched_load_balance = num(&d.join("cpuset.sched_load_balance"));
            s.cpuset.memory_spread_page = num(&d.join("cpuset.memory_spread_page"));
            s.cpuset.memory_spread_slab = num(&d.join("cpuset.memory_spread_slab"));
            s.cpuset.memory_pressure = num(&d.join("cpuset.memory_pressure"));
            s.cpuset.sched_relax_domain_level = read(&d.join("cpuset.sched_relax_domain_level"))
                .and_then(|t| t.trim().parse().ok())
                .unwrap_or(0);
        }
        if let Some(d) = self.v1_dir("memory") {
            let entry = |prefix: &str| MemoryEntry {
                limit: num(&d.join(format!("{prefix}.limit_in_bytes"))),
                usage: num(&d.join(format!("{prefix}.usage_in_bytes"))),
                max: num(&d.join(format!("{prefix}.max_usage_in_bytes"))),
                failcnt: num(&d.join(format!("{prefix}.failcnt"))),
            };
            s.memory.usage = entry("memory");
            // runc v1 reports memory+swap (memsw) under "swap".
            s.memory.swap = entry("memory.memsw");
            s.memory.kernel = entry("memory.kmem");
            s.memory.kernel_tcp = entry("memory.kmem.tcp");
            s.memory.raw = parse_flat_keyed(&read(&d.join("memory.stat")).unwrap_or_default());
            s.memory.cache = s.memory.raw.get("cache").copied().unwrap_or(0);
        }
        if let Some(d) = self.v1_dir("pids") {
            s.pids.current = num(&d.join("pids.current"));
            s.pids.limit = match num(&d.join("pids.max")) {
                u64::MAX => 0,
                n => n,
            };
        }
        if let Some(d) = self.v1_dir("blkio") {
            // CFQ/BFQ files where the scheduler has them, else the throttle ones (runc).
            let pick = |names: &[&str]| {
                names
                    .iter()
                    .map(|n| parse_blkio_v1(&read(&d.join(n)).unwrap_or_default()))
                    .find(|v| !v.is_empty())
                    .unwrap_or_default()
            };
            let b = &mut s.blkio;
            b.io_service_bytes_recursive = pick(&[
                "blkio.io_service_bytes_recursive",
                "blkio.bfq.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes_recursive",
                "blkio.throttle.io_service_bytes",
            ]);
            b.io_serviced_recursive = pick(&[
                "blkio.io_serviced_recursive",
                "blkio.bfq.io_serviced_recursive",
                "blkio.throttle.io_serviced_recursive",
                "blkio.throttle.io_serviced",
            ]);
        }
        if let Some(d) = self.v1_dir("hugetlb") {
            for size in hugepage_sizes() {
                let f = |what: &str| num(&d.join(format!("hugetlb.{size}.{what}")));
                let entry = Hugetlb {
                    usage: f("usage_in_bytes"),
                    max: f("max_usage_in_bytes"),
                    failcnt: f("failcnt"),
                };
                s.hugetlb.insert(size, entry);
            }
        }
        s
    }
}

fn stats_v2(d: &Path) -> Stats {
    let mut s = Stats::default();
    // cpu.stat's usage_usec/user_usec/system_usec are there even without the cpu
    // controller enabled; runc converts to nanoseconds.
    let cpu = parse_flat_keyed(&read(&d.join("cpu.stat")).unwrap_or_default());
    let us = |k: &str| cpu.get(k).copied().unwrap_or(0) * 1000;
    s.cpu.usage.total = us("usage_usec");
    s.cpu.usage.user = us("user_usec");
    s.cpu.usage.kernel = us("system_usec");
    s.cpu.throttling.periods = cpu.get("nr_periods").copied().unwrap_or(0);
    s.cpu.throttling.throttled_periods = cpu.get("nr_throttled").copied().unwrap_or(0);
    s.cpu.throttling.throttled_time = us("throttled_usec");
    s.cpuset.cpus = parse_list(&read(&d.join("cpuset.cpus.effective")).unwrap_or_default());
    s.cpuset.mems = parse_list(&read(&d.join("cpuset.mems.effective")).unwrap_or_default());
    let events = parse_flat_keyed(&read(&d.join("memory.events")).unwrap_or_default());
    s.memory.usage = MemoryEntry {
        limit: num(&d.join("memory.max")),
        usage: num(&d.join("memory.current")),
        max: num(&d.join("memory.peak")),
        failcnt: events.get("max").copied().unwrap_or(0),
    };
    // runc fs2 reports swap as memory+swap, like v1's memsw.
    let swap = num(&d.join("memory.swap.current"));
    let swap_max = num(&d.join("memory.swap.max"));
    s.memory.swap = MemoryEntry {
        limit: swap_max.saturating_add(s.memory.usage.limit),
        usage: swap + s.memory.usage.usage,
        max: 0,
        failcnt: 0,
    };
    s.memory.raw = parse_flat_keyed(&read(&d.join("memory.stat")).unwrap_or_default());
    s.memory.cache = s.memory.raw.get("file").copied().unwrap_or(0);
    s.pids.current = num(&d.join("pids.current"));
    s.pids.limit = match num(&d.join("pids.max")) {
        u64::MAX => 0,
        n => n,
    };
    let (bytes, ios) = parse_io_stat(&read(&d.join("io.stat")).unwrap_or_default());
    s.blkio.io_service_bytes_recursive = bytes;
    s.blkio.io_serviced_recursive = ios;
    for size in hugepage_sizes() {
        let f = |what: &str| num(&d.join(format!("hugetlb.{size}.{what}")));
        let entry = Hugetlb {
            usage: f("current"),
            max: f("max"),
            failcnt: parse_flat_keyed(
                &read(&d.join(format!("hugetlb.{size}.events"))).unwrap_or_default(),
            )
            .get("max")
            .copied()
            .unwrap_or(0),
        };
        if d.join(format!("hugetlb.{size}.current")).exists() {
            s.hugetlb.insert(size, entry);
        }
    }
    s
}

/// The host's huge page sizes in the cgroup files' spelling ("2MB", "1GB").
fn hugepage_sizes() -> Vec<String> {
    let Ok(entries) = std::fs::read_dir("/sys/kernel/mm/hugepages") else {
        return Vec::new();
    };
    let mut out: Vec<String> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            let kb: u64 = name
                .strip_prefix("hugepages-")?
                .strip_suffix("kB")?
                .parse()
                .ok()?;
            Some(match kb {
                k if k >= 1 << 20 => format!("{}GB", k >> 20),
                k if k >= 1 << 10 => format!("{}MB", k >> 10),
                k => format!("{k}KB"),
            })
        })
        .collect();
    out.sort();
    out
}

fn clock_ticks() -> u64 {
    match nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK) {
        Ok(Some(n)) if n > 0 => n as u64,
        _ => 100,
    }
}

#[cfg(test)]
mod tests {

    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};

    use super::*;
    use crate::cgroups::{CgroupLayout, OomEvent, OomWatch, V1Hierarchy};

    fn write(dir: &Path, file: &str, text: &str) {
        std::fs::write(dir.join(file), text).unwrap();
    }

    /// A pure-v2 host, faked: the files runc's fs2 reads, then inotify on memory.events.
    #[test]
    fn v2_stats_and_oom_watch_on_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path().join("ctr");
        std::fs::create_dir_all(&dir).unwrap();
        write(&dir, "cpu.stat", "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\nnr_throttled 1\nthrottled_usec 7\n");
        write(&dir, "memory.current", "8192\n");
        write(&dir, "memory.max", "max\n");
        write(&dir, "memory.swap.current", "0\n");
        write(&dir, "memory.swap.max", "0\n");
        write(&dir, "memory.stat", "anon 4096\nfile 4096\n");
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 0\nmax 2\noom 0\noom_kill 0\n",
        );
        write(&dir, "pids.current", "3\n");
        write(&dir, "pids.max", "max\n");
        write(
            &dir,
            "io.stat",
            "8:0 rbytes=512 wbytes=1024 rios=1 wios=2\n",
        );
        let cfg = CgroupConfig {
            path: PathBuf::from("/ctr"),
            layout: CgroupLayout {
                v1: Vec::new(),
                v2: Some(tmp.path().to_path_buf()),
            },
        };
        let s = cfg.stats().unwrap();
        assert_eq!(
            (s.cpu.usage.total, s.cpu.usage.user, s.cpu.usage.kernel),
            (1_500_000, 1_000_000, 500_000)
        );
        assert_eq!(s.cpu.throttling.throttled_time, 7000);
        assert_eq!(
            (s.memory.usage.usage, s.memory.usage.limit),
            (8192, u64::MAX)
        );
        assert_eq!((s.memory.usage.failcnt, s.memory.cache), (2, 4096));
        assert_eq!((s.pids.current, s.pids.limit), (3, 0));
        assert_eq!(s.blkio.io_service_bytes_recursive.len(), 2);

        let mut watch = cfg.oom_watch().unwrap().expect("a v2 watch");
        let ready = |w: &OomWatch| {
            let mut fds = [PollFd::new(w.fd(), PollFlags::POLLIN)];
            poll(&mut fds, PollTimeout::from(2000u16)).unwrap() > 0
        };
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 0\nmax 3\noom 1\noom_kill 1\n",
        );
        assert!(ready(&watch));
        assert_eq!(watch.read(), OomEvent::Oom);
        // A change that is not an OOM is not reported.
        write(
            &dir,
            "memory.events",
            "low 0\nhigh 1\nmax 3\noom 1\noom_kill 1\n",
        );
        assert!(ready(&watch));
        assert_eq!(watch.read(), OomEvent::Nothing);
    }

    #[test]
    fn v1_stats_on_a_fake_tree() {
        let tmp = tempfile::tempdir().unwrap();
        let h = |name: &str| {
            let mp = tmp.path().join(name);
            std::fs::create_dir_all(mp.join("ctr")).unwrap();
            V1Hierarchy {
                mountpoint: mp,
                controllers: vec![name.to_owned()],
            }
        };
        let layout = CgroupLayout {
            v1: vec![h("memory"), h("pids"), h("cpuacct")],
            v2: None,
        };
        let mem = tmp.path().join("memory/ctr");
        write(&mem, "memory.usage_in_bytes", "4096\n");
        write(&mem, "memory.limit_in_bytes", "33554432\n");
        write(&mem, "memory.failcnt", "5\n");
        write(&mem, "memory.stat", "cache 100\nrss 200\n");
        write(&tmp.path().join("pids/ctr"), "pids.current", "2\n");
        write(&tmp.path().join("pids/ctr"), "pids.max", "10\n");
        let acct = tmp.path().join("cpuacct/ctr");
        write(&acct, "cpuacct.usage", "999\n");
        write(&acct, "cpuacct.usage_percpu", "500 499 \n");
        let cfg = CgroupConfig {
            path: PathBuf::from("/ctr"),
            layout,
        };
        let s = cfg.stats().unwrap();
        assert_eq!(
            (
                s.memory.usage.usage,
                s.memory.usage.limit,
                s.memory.usage.failcnt
            ),
            (4096, 33554432, 5)
        );
        assert_eq!((s.memory.cache, s.memory.raw["rss"]), (100, 200));
        assert_eq!((s.pids.current, s.pids.limit), (2, 10));
        assert_eq!(
            (s.cpu.usage.total, s.cpu.usage.percpu.clone()),
            (999, vec![500, 499])
        );
    }
}
