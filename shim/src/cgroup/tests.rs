//! The metrics readers against fake cgroupfs trees in temp dirs, written in the kernel's
//! own file formats (captured from Linux 6.x v1 and v2 hosts).

use std::collections::BTreeMap;
use std::path::Path;

use berth_proto::io::containerd::cgroups::{v1, v2};

use super::CgroupPaths;

fn write(dir: &Path, files: &[(&str, &str)]) {
    std::fs::create_dir_all(dir).expect("mkdir");
    for (name, text) in files {
        std::fs::write(dir.join(name), text).expect("write");
    }
}

fn fake_v1(base: &Path) -> CgroupPaths {
    let c = "berth/c1";
    write(
        &base.join("pids").join(c),
        &[("pids.current", "3\n"), ("pids.max", "max\n")],
    );
    write(
        &base.join("cpuacct").join(c),
        &[
            ("cpuacct.usage", "123456789\n"),
            ("cpuacct.usage_percpu", "100000000 23456789 \n"),
            ("cpuacct.usage_user", "80000000\n"),
            ("cpuacct.usage_sys", "43456789\n"),
            ("cpuacct.stat", "user 8\nsystem 4\n"),
        ],
    );
    write(
        &base.join("cpu").join(c),
        &[(
            "cpu.stat",
            "nr_periods 10\nnr_throttled 2\nthrottled_time 5000\nnr_bursts 0\n",
        )],
    );
    write(
        &base.join("memory").join(c),
        &[
            (
                "memory.stat",
                "cache 4096\nrss 8192\nrss_huge 0\nshmem 0\nmapped_file 1024\npgfault 77\n\
                 hierarchical_memory_limit 67108864\nhierarchical_memsw_limit 134217728\n\
                 total_cache 4096\ntotal_rss 8192\ntotal_unevictable 5\nworkingset_refault_file 9\n",
            ),
            ("memory.usage_in_bytes", "12288\n"),
            ("memory.max_usage_in_bytes", "20480\n"),
            ("memory.failcnt", "1\n"),
            ("memory.limit_in_bytes", "67108864\n"),
            ("memory.memsw.usage_in_bytes", "12288\n"),
            ("memory.memsw.max_usage_in_bytes", "20480\n"),
            ("memory.memsw.failcnt", "0\n"),
            ("memory.memsw.limit_in_bytes", "134217728\n"),
            ("memory.kmem.usage_in_bytes", "512\n"),
            ("memory.oom_control", "oom_kill_disable 0\nunder_oom 0\noom_kill 2\n"),
        ],
    );
    write(
        &base.join("blkio").join(c),
        &[
            (
                "blkio.throttle.io_service_bytes_recursive",
                "8:0 Read 4096\n8:0 Write 8192\n8:0 Sync 0\n8:0 Total 12288\nTotal 12288\n",
            ),
            (
                "blkio.throttle.io_serviced_recursive",
                "8:0 Read 1\n8:0 Write 2\nTotal 3\n",
            ),
        ],
    );
    write(
        &base.join("hugetlb").join(c),
        &[
            ("hugetlb.2MB.usage_in_bytes", "2097152\n"),
            ("hugetlb.2MB.max_usage_in_bytes", "4194304\n"),
            ("hugetlb.2MB.failcnt", "0\n"),
        ],
    );
    let dirs: BTreeMap<String, _> = ["pids", "cpu", "cpuacct", "memory", "blkio", "hugetlb"]
        .iter()
        .map(|ctrl| (ctrl.to_string(), base.join(ctrl).join(c)))
        .collect();
    CgroupPaths::V1(dirs)
}

#[test]
fn v1_metrics_from_a_fake_tree() {
    let base = tempfile::tempdir().expect("tempdir");
    let paths = fake_v1(base.path());
    let devices = base.path().join("sys-dev-block");
    write(
        &devices.join("8:0"),
        &[("uevent", "MAJOR=8\nMINOR=0\nDEVNAME=sda\nDEVTYPE=disk\n")],
    );
    let any = paths.metrics_with_devices(&devices).expect("metrics");
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    let m: v1::Metrics = berth_proto::any::unpack(&any).expect("decode");

    assert_eq!(
        m.pids,
        Some(v1::PidsStat {
            current: 3,
            limit: 0
        })
    );
    let cpu = m.cpu.expect("cpu");
    let usage = cpu.usage.expect("usage");
    assert_eq!(
        (usage.total, usage.user, usage.kernel),
        (123456789, 80000000, 43456789)
    );
    assert_eq!(usage.per_cpu, [100000000, 23456789]);
    let throttle = cpu.throttling.expect("throttling");
    assert_eq!(
        (
            throttle.periods,
            throttle.throttled_periods,
            throttle.throttled_time
        ),
        (10, 2, 5000)
    );

    let mem = m.memory.expect("memory");
    assert_eq!(
        (mem.cache, mem.rss, mem.mapped_file, mem.pg_fault),
        (4096, 8192, 1024, 77)
    );
    assert_eq!(mem.hierarchical_swap_limit, 134217728);
    assert_eq!(mem.total_unevictable, 5);
    let usage = mem.usage.expect("usage");
    assert_eq!(
        (usage.usage, usage.max, usage.failcnt, usage.limit),
        (12288, 20480, 1, 67108864)
    );
    assert_eq!(mem.swap.expect("memsw").limit, 134217728);
    assert_eq!(mem.kernel.expect("kmem").usage, 512);
    assert_eq!(mem.kernel_tcp, None, "kmem.tcp files are absent");
    assert_eq!(m.memory_oom_control.expect("oom").oom_kill, 2);

    let blkio = m.blkio.expect("blkio");
    let bytes: Vec<_> = blkio
        .io_service_bytes_recursive
        .iter()
        .map(|e| (e.device.as_str(), e.major, e.minor, e.op.as_str(), e.value))
        .collect();
    assert_eq!(
        bytes,
        [
            ("/dev/sda", 8, 0, "Read", 4096),
            ("/dev/sda", 8, 0, "Write", 8192),
            ("/dev/sda", 8, 0, "Sync", 0),
            ("/dev/sda", 8, 0, "Total", 12288),
        ]
    );
    assert_eq!(blkio.io_serviced_recursive.len(), 2);
    assert_eq!(m.hugetlb.len(), 1);
    assert_eq!(m.hugetlb[0].pagesize, "2MB");
    assert_eq!((m.hugetlb[0].usage, m.hugetlb[0].max), (2097152, 4194304));
}

#[test]
fn v1_cpu_falls_back_to_cpuacct_stat_ticks_and_cfq_files() {
    let base = tempfile::tempdir().expect("tempdir");
    let acct = base.path().join("cpuacct");
    write(
        &acct,
        &[
            ("cpuacct.usage", "5\n"),
            ("cpuacct.stat", "user 8\nsystem 4\n"),
        ],
    );
    let blkio = base.path().join("blkio");
    write(
        &blkio,
        &[
            ("blkio.io_serviced_recursive", "8:16 Read 7\nTotal 7\n"),
            ("blkio.sectors_recursive", "8:16 99\n"),
            ("blkio.throttle.io_serviced_recursive", "8:16 Read 1000\n"),
        ],
    );
    let paths = CgroupPaths::V1(BTreeMap::from([
        ("cpuacct".to_owned(), acct),
        ("blkio".to_owned(), blkio),
    ]));
    let m: v1::Metrics = berth_proto::any::unpack(&paths.metrics().expect("metrics")).expect("v1");
    let usage = m.cpu.expect("cpu").usage.expect("usage");
    assert_eq!((usage.user, usage.kernel), (80_000_000, 40_000_000));
    let blkio = m.blkio.expect("blkio");
    assert_eq!(blkio.io_serviced_recursive[0].value, 7, "CFQ files win");
    assert_eq!(
        (
            blkio.sectors_recursive[0].op.as_str(),
            blkio.sectors_recursive[0].value
        ),
        ("", 99)
    );
    assert_eq!(m.memory, None);
    assert_eq!(m.pids, None);
}

#[test]
fn v2_metrics_from_a_fake_tree() {
    let base = tempfile::tempdir().expect("tempdir");
    let d = base.path().join("berth/c1");
    write(
        &d,
        &[
            ("pids.current", "2\n"),
            ("pids.max", "max\n"),
            (
                "cpu.stat",
                "usage_usec 1500\nuser_usec 1000\nsystem_usec 500\nnr_periods 4\n\
                 nr_throttled 1\nthrottled_usec 250\nnr_bursts 0\nburst_usec 0\n",
            ),
            (
                "memory.stat",
                "anon 4096\nfile 8192\nkernel_stack 16384\nslab 100\nsock 0\nshmem 0\n\
                 file_mapped 512\npgfault 33\npgmajfault 1\nworkingset_refault_anon 2\n\
                 workingset_refault_file 3\nworkingset_activate_anon 0\n\
                 workingset_activate_file 4\nthp_fault_alloc 0\n",
            ),
            ("memory.current", "28672\n"),
            ("memory.max", "max\n"),
            ("memory.swap.current", "0\n"),
            ("memory.swap.max", "1048576\n"),
            (
                "memory.events",
                "low 0\nhigh 0\nmax 5\noom 1\noom_kill 1\noom_group_kill 0\n",
            ),
            (
                "io.stat",
                "8:0 rbytes=4096 wbytes=8192 rios=1 wios=2 dbytes=0 dios=0\n\
                 253:1 rbytes=1 wbytes=0 rios=1 wios=0 dbytes=0 dios=0\n",
            ),
            ("hugetlb.2MB.current", "0\n"),
            ("hugetlb.2MB.max", "max\n"),
            ("hugetlb.2MB.rsvd.current", "0\n"),
        ],
    );
    let any = CgroupPaths::V2(d).metrics().expect("metrics");
    assert_eq!(any.type_url, "io.containerd.cgroups.v2.Metrics");
    let m: v2::Metrics = berth_proto::any::unpack(&any).expect("decode");
    assert_eq!(
        m.pids,
        Some(v2::PidsStat {
            current: 2,
            limit: u64::MAX
        })
    );
    let cpu = m.cpu.expect("cpu");
    assert_eq!(
        (cpu.usage_usec, cpu.user_usec, cpu.system_usec),
        (1500, 1000, 500)
    );
    assert_eq!(
        (cpu.nr_periods, cpu.nr_throttled, cpu.throttled_usec),
        (4, 1, 250)
    );
    let mem = m.memory.expect("memory");
    assert_eq!(
        (mem.anon, mem.file, mem.kernel_stack, mem.file_mapped),
        (4096, 8192, 16384, 512)
    );
    assert_eq!((mem.workingset_refault, mem.workingset_activate), (5, 4));
    assert_eq!((mem.usage, mem.usage_limit), (28672, u64::MAX));
    assert_eq!((mem.swap_usage, mem.swap_limit), (0, 1048576));
    let events = m.memory_events.expect("events");
    assert_eq!((events.max, events.oom, events.oom_kill), (5, 1, 1));
    let io = m.io.expect("io").usage;
    assert_eq!(io.len(), 2);
    assert_eq!(
        (io[0].major, io[0].minor, io[0].rbytes, io[0].wios),
        (8, 0, 4096, 2)
    );
    assert_eq!((io[1].major, io[1].minor), (253, 1));
    assert_eq!(m.hugetlb.len(), 1);
    assert_eq!(
        (m.hugetlb[0].pagesize.as_str(), m.hugetlb[0].max),
        ("2MB", u64::MAX)
    );
}

#[test]
fn v2_without_controllers_reports_cpu_only_and_bad_files_are_named() {
    let base = tempfile::tempdir().expect("tempdir");
    let d = base.path().join("c1");
    write(
        &d,
        &[("cpu.stat", "usage_usec 7\nuser_usec 4\nsystem_usec 3\n")],
    );
    let m: v2::Metrics =
        berth_proto::any::unpack(&CgroupPaths::V2(d.clone()).metrics().expect("m")).expect("v2");
    assert_eq!(m.cpu.map(|c| c.usage_usec), Some(7));
    assert_eq!((m.pids, m.memory, m.io), (None, None, None));

    write(&d, &[("io.stat", "garbage\n")]);
    let err = CgroupPaths::V2(d.clone()).metrics().unwrap_err();
    assert!(err.to_string().contains("io.stat"), "{err}");
    let gone = CgroupPaths::V2(base.path().join("gone"))
        .metrics()
        .unwrap_err();
    assert!(matches!(gone, super::CgroupError::Gone { .. }), "{gone}");
}

#[test]
fn spec_cgroups_path_is_read_from_the_bundle() {
    let bundle = tempfile::tempdir().expect("tempdir");
    std::fs::write(bundle.path().join("config.json"), r#"{"linux":{}}"#).expect("write");
    let err = CgroupPaths::from_bundle(bundle.path()).unwrap_err();
    assert!(matches!(err, super::CgroupError::NoSpecPath), "{err}");
}
