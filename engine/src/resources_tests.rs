use serde_json::json;

use super::*;

fn host() -> HostCpus {
    HostCpus {
        ncpu: 2,
        cpus: "0-1".into(),
        mems: "0".into(),
        realtime: true,
    }
}

fn res(v: Value) -> Resources {
    Resources::from_map(v.as_object().unwrap())
}

#[test]
fn verify_uses_dockerds_messages() {
    let err = |v: Value| res(v).verify(false, &host()).unwrap_err().to_string();
    assert_eq!(
        err(json!({"Memory": 1024})),
        "Minimum memory limit allowed is 6MB"
    );
    assert_eq!(
        err(json!({"Memory": 64 << 20, "MemorySwap": 32 << 20})),
        "Minimum memoryswap limit should be larger than memory limit, see usage"
    );
    assert_eq!(
        err(json!({"MemorySwap": 32 << 20})),
        "You should always set the Memory limit when using Memoryswap limit, see usage"
    );
    assert!(res(json!({"MemorySwap": 32 << 20}))
        .verify(true, &host())
        .is_ok());
    assert_eq!(
        err(json!({"NanoCpus": 3_000_000_000i64})),
        "Range of CPUs is from 0.01 to 2.00, as there are only 2 CPUs available"
    );
    assert_eq!(
        err(json!({"CpuPeriod": 10})),
        "CPU cfs period can not be less than 1ms (i.e. 1000) or larger than 1s (i.e. 1000000)"
    );
    assert_eq!(
        err(json!({"CpusetCpus": "5"})),
        "Requested CPUs are not available - requested 5, available: 0-1"
    );
    assert_eq!(
        err(json!({"CpusetCpus": "x"})),
        "Invalid value x for cpuset cpus: invalid format: x"
    );
    assert_eq!(
        err(json!({"BlkioWeight": 5})),
        "Range of blkio weight is from 10 to 1000"
    );
    assert!(
        res(json!({"Memory": 64 << 20, "NanoCpus": 1_500_000_000i64, "CpusetCpus": "0,1"}))
            .verify(false, &host())
            .is_ok()
    );
}

#[test]
fn merge_follows_dockerds_update_rules() {
    let mut cur =
        res(json!({"Memory": 64 << 20, "MemorySwap": 128 << 20, "NanoCpus": 1_000_000_000i64}));
    // Zero fields keep what the container has.
    cur.merge(&res(json!({"CpuShares": 512, "PidsLimit": 20})))
        .unwrap();
    assert_eq!(cur.memory, 64 << 20);
    assert_eq!(cur.cpu_shares, 512);
    assert_eq!(cur.pids_limit, Some(20));
    assert_eq!(
        cur.merge(&res(json!({"Memory": 256 << 20}))).unwrap_err(),
        UpdateConflict::MemoryAboveSwap
    );
    assert_eq!(
        cur.merge(&res(json!({"CpuQuota": 50_000}))).unwrap_err(),
        UpdateConflict::QuotaAfterNanoCpus
    );
    cur.merge(&res(json!({"Memory": 256 << 20, "MemorySwap": -1})))
        .unwrap();
    assert_eq!((cur.memory, cur.memory_swap), (256 << 20, -1));
}

#[test]
fn oci_resources() {
    let r = res(
        json!({"Memory": 64 << 20, "MemorySwap": 128 << 20, "NanoCpus": 500_000_000,
                       "CpuShares": 512, "PidsLimit": 0, "BlkioWeight": 300, "CpusetCpus": "0"}),
    );
    assert_eq!(
        Value::Object(r.to_oci()),
        json!({
            "memory": {"limit": 64 << 20, "swap": 128 << 20},
            "cpu": {"shares": 512, "cpus": "0", "period": 100_000, "quota": 50_000},
            "pids": {"limit": -1},
            "blockIO": {"weight": 300},
        })
    );
    assert!(Resources::default().to_oci().is_empty());
}

#[test]
fn create_doubles_memory_for_swap_and_round_trips() {
    let mut h = HostConfig {
        memory: 64 << 20,
        ..HostConfig::default()
    };
    check_create(&mut h).unwrap();
    let r = Resources::of(&h);
    assert_eq!(r.memory_swap, 128 << 20);
    assert_eq!(r.memory, 64 << 20);
    h.memory = 1;
    assert!(check_create(&mut h).is_err());
}

#[test]
fn realtime_cpu_checks_merge_and_oci() {
    let r = res(json!({"CpuRealtimePeriod": 1000, "CpuRealtimeRuntime": 2000}));
    assert_eq!(
        r.verify(false, &host()).unwrap_err().to_string(),
        "cpu real-time runtime cannot be higher than cpu real-time period"
    );
    let no_rt = HostCpus {
        realtime: false,
        ..host()
    };
    let r = res(json!({"CpuRealtimeRuntime": 500}));
    assert_eq!(
        r.verify(true, &no_rt).unwrap_err().to_string(),
        "kernel does not support CPU real-time scheduler"
    );
    assert!(r.verify(true, &host()).is_ok());
    let mut cur = res(json!({"CpuRealtimePeriod": 100_000}));
    cur.merge(&r).unwrap();
    assert_eq!((cur.cpu_rt_period, cur.cpu_rt_runtime), (100_000, 500));
    assert_eq!(
        cur.to_oci()["cpu"],
        json!({"realtimePeriod": 100_000, "realtimeRuntime": 500})
    );
    let mut host_config = crate::types::HostConfig::default();
    cur.store(&mut host_config);
    assert_eq!(host_config.extra["CpuRealtimeRuntime"], json!(500));
}
