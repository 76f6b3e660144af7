use super::*;

#[test]
fn system_cpu_sums_seven_fields_and_counts_cpus() {
    let stat = "cpu  100 2 30 400 5 6 7 8 0 0\ncpu0 50 1 15 200 2 3 3 4 0 0\n\
                cpu1 50 1 15 200 3 3 4 4 0 0\nintr 1 2 3\n";
    assert_eq!(system_cpu(stat), (550 * NANOS_PER_TICK, 2));
}

#[test]
fn host_memory_reads_mem_total() {
    assert_eq!(
        host_memory("MemTotal:        2048 kB\nMemFree: 1 kB\n"),
        2048 * 1024
    );
    assert_eq!(host_memory(""), 0);
}

#[test]
fn networks_leave_out_loopback() {
    let dev = "Inter-|   Receive                                                |  Transmit\n \
 face |bytes    packets errs drop fifo frame compressed multicast|bytes    packets errs drop fifo colls carrier compressed\n    \
 lo:     100       1    0    0    0     0          0         0      100       1    0    0    0     0       0          0\n  \
 eth0:    1500      10    1    2    0     0          0         0      700       5    3    4    0     0       0          0\n";
    let n = networks(dev);
    assert_eq!(n.len(), 1);
    assert_eq!(
        n["eth0"],
        json!({"rx_bytes": 1500, "rx_packets": 10, "rx_errors": 1, "rx_dropped": 2,
               "tx_bytes": 700, "tx_packets": 5, "tx_errors": 3, "tx_dropped": 4})
    );
}

#[test]
fn v1_metrics_become_dockerd_fields() {
    let m = v1::Metrics {
        pids: Some(v1::PidsStat {
            current: 3,
            limit: 0,
        }),
        cpu: Some(v1::CpuStat {
            usage: Some(v1::CpuUsage {
                total: 9,
                kernel: 4,
                user: 5,
                per_cpu: vec![6, 3],
            }),
            throttling: None,
        }),
        memory: Some(v1::MemoryStat {
            total_inactive_file: 10,
            usage: Some(v1::MemoryEntry {
                usage: 4096,
                limit: u64::MAX / 2,
                max: 8192,
                failcnt: 0,
            }),
            ..Default::default()
        }),
        blkio: Some(v1::BlkIoStat {
            io_service_bytes_recursive: vec![v1::BlkIoEntry {
                op: "Read".into(),
                device: String::new(),
                major: 8,
                minor: 0,
                value: 512,
            }],
            ..Default::default()
        }),
        ..Default::default()
    };
    let s = cgroup_stats(&CgroupMetrics::V1(Box::new(m)), 1 << 30);
    assert_eq!(s["pids_stats"], json!({"current": 3}));
    assert_eq!(s["cpu_stats"]["cpu_usage"]["total_usage"], 9);
    assert_eq!(s["cpu_stats"]["cpu_usage"]["percpu_usage"], json!([6, 3]));
    assert_eq!(s["memory_stats"]["usage"], 4096);
    assert_eq!(s["memory_stats"]["max_usage"], 8192);
    // No memory limit: the host's memory, as dockerd shows it.
    assert_eq!(s["memory_stats"]["limit"], 1u64 << 30);
    assert_eq!(s["memory_stats"]["stats"]["total_inactive_file"], 10);
    assert_eq!(
        s["blkio_stats"]["io_service_bytes_recursive"],
        json!([{"major": 8, "minor": 0, "op": "Read", "value": 512}])
    );
    assert_eq!(s["blkio_stats"]["io_serviced_recursive"], Value::Null);
}

#[test]
fn v2_metrics_become_dockerd_fields() {
    let m = v2::Metrics {
        pids: Some(v2::PidsStat {
            current: 2,
            limit: 100,
        }),
        cpu: Some(v2::CpuStat {
            usage_usec: 7,
            user_usec: 3,
            system_usec: 4,
            ..Default::default()
        }),
        memory: Some(v2::MemoryStat {
            usage: 1000,
            usage_limit: 5000,
            inactive_file: 10,
            ..Default::default()
        }),
        io: Some(v2::IoStat {
            usage: vec![v2::IoEntry {
                major: 8,
                minor: 1,
                rbytes: 10,
                wbytes: 20,
                rios: 1,
                wios: 2,
            }],
        }),
        ..Default::default()
    };
    let s = cgroup_stats(&CgroupMetrics::V2(Box::new(m)), 1 << 30);
    assert_eq!(s["pids_stats"], json!({"current": 2, "limit": 100}));
    assert_eq!(s["cpu_stats"]["cpu_usage"]["total_usage"], 7000);
    assert_eq!(s["cpu_stats"]["cpu_usage"]["usage_in_kernelmode"], 4000);
    assert_eq!(s["memory_stats"]["limit"], 5000);
    assert_eq!(s["memory_stats"]["stats"]["inactive_file"], 10);
    assert_eq!(
        s["blkio_stats"]["io_service_bytes_recursive"],
        json!([{"major": 8, "minor": 1, "op": "read", "value": 10},
               {"major": 8, "minor": 1, "op": "write", "value": 20}])
    );
}
