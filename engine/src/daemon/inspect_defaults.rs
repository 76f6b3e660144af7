//! dockerd's inspect always carries every `HostConfig` and `Config` field (Go marshals zero
//! values), and clients index into them without checking (docker-py reads
//! `HostConfig.LogConfig.Type` after every foreground `run`). The record keeps what the
//! client sent; these views fill in what dockerd would show for everything else.

use serde_json::{json, Map, Value};

use crate::types::{ContainerConfig, HostConfig};

/// The log driver dockerd applies when the request names none.
pub const DEFAULT_LOG_DRIVER: &str = "json-file";

/// dockerd's `HostConfig` with zero values, as a create request with no host settings shows it.
fn host_config_zero() -> Value {
    json!({
        "Binds": null, "ContainerIDFile": "",
        "LogConfig": {"Type": DEFAULT_LOG_DRIVER, "Config": {}},
        "NetworkMode": "default", "PortBindings": {},
        "RestartPolicy": {"Name": "no", "MaximumRetryCount": 0},
        "AutoRemove": false, "VolumeDriver": "", "VolumesFrom": null, "ConsoleSize": [0, 0],
        "CapAdd": null, "CapDrop": null, "CgroupnsMode": "private", "Dns": [], "DnsOptions": [],
        "DnsSearch": [], "ExtraHosts": null, "GroupAdd": null, "IpcMode": "private", "Cgroup": "",
        "Links": null, "OomScoreAdj": 0, "PidMode": "", "Privileged": false,
        "PublishAllPorts": false, "ReadonlyRootfs": false, "SecurityOpt": null, "UTSMode": "",
        "UsernsMode": "", "ShmSize": 67108864, "Runtime": "runc", "Isolation": "",
        "CpuShares": 0, "Memory": 0, "NanoCpus": 0, "CgroupParent": "", "BlkioWeight": 0,
        "BlkioWeightDevice": [], "BlkioDeviceReadBps": [], "BlkioDeviceWriteBps": [],
        "BlkioDeviceReadIOps": [], "BlkioDeviceWriteIOps": [], "CpuPeriod": 0, "CpuQuota": 0,
        "CpuRealtimePeriod": 0, "CpuRealtimeRuntime": 0, "CpusetCpus": "", "CpusetMems": "",
        "Devices": [], "DeviceCgroupRules": null, "DeviceRequests": null,
        "MemoryReservation": 0, "MemorySwap": 0, "MemorySwappiness": null,
        "OomKillDisable": null, "PidsLimit": null, "Ulimits": [], "CpuCount": 0,
        "CpuPercent": 0, "IOMaximumIOps": 0, "IOMaximumBandwidth": 0,
        "MaskedPaths": null, "ReadonlyPaths": null,
    })
}

/// Overlays `sent` on `zero`: keys the client sent win unless they are JSON null where
/// dockerd shows a non-null zero value (Go clients send null for nil maps and slices).
fn overlay(zero: Value, sent: Value) -> Value {
    let (Value::Object(mut out), Value::Object(sent)) = (zero, sent) else {
        return Value::Null;
    };
    for (k, v) in sent {
        let keep_zero = v.is_null() && out.get(&k).is_some_and(|z| !z.is_null());
        if !keep_zero {
            out.insert(k, v);
        }
    }
    Value::Object(out)
}

/// `HostConfig` as dockerd's inspect shows it.
pub fn host_config(h: &HostConfig) -> Value {
    let mut v = overlay(
        host_config_zero(),
        serde_json::to_value(h).unwrap_or(Value::Null),
    );
    if let Some(obj) = v.as_object_mut() {
        if obj.get("NetworkMode").and_then(Value::as_str) == Some("") {
            obj.insert("NetworkMode".into(), json!("default"));
        }
        if obj.get("ShmSize").and_then(Value::as_i64) == Some(0) {
            obj.insert("ShmSize".into(), json!(67_108_864));
        }
        normalize_log_config(obj);
        normalize_restart_policy(obj);
    }
    v
}

/// dockerd fills an empty log driver with its default and `Config: null` with `{}`.
fn normalize_log_config(obj: &mut Map<String, Value>) {
    let lc = obj
        .entry("LogConfig")
        .or_insert_with(|| json!({}))
        .as_object_mut();
    let Some(lc) = lc else {
        obj.insert(
            "LogConfig".into(),
            json!({"Type": DEFAULT_LOG_DRIVER, "Config": {}}),
        );
        return;
    };
    if lc
        .get("Type")
        .and_then(Value::as_str)
        .unwrap_or("")
        .is_empty()
    {
        lc.insert("Type".into(), json!(DEFAULT_LOG_DRIVER));
    }
    if lc.get("Config").is_none_or(Value::is_null) {
        lc.insert("Config".into(), json!({}));
    }
}

/// An empty restart policy name means "no" (API ≥ 1.44 shows it that way).
fn normalize_restart_policy(obj: &mut Map<String, Value>) {
    if let Some(rp) = obj.get_mut("RestartPolicy").and_then(Value::as_object_mut) {
        if rp
            .get("Name")
            .and_then(Value::as_str)
            .unwrap_or("")
            .is_empty()
        {
            rp.insert("Name".into(), json!("no"));
        }
        rp.entry("MaximumRetryCount").or_insert(json!(0));
    }
}

/// `Config` as dockerd's inspect shows it: `Volumes`, `OnBuild` and `Labels` are always
/// present.
pub fn config(c: &ContainerConfig) -> Value {
    overlay(
        json!({"Volumes": null, "OnBuild": null, "Labels": {}, "Env": [], "Cmd": null,
               "Entrypoint": null}),
        serde_json::to_value(c).unwrap_or(Value::Null),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_bare_host_config_gets_dockerds_defaults() {
        let v = host_config(&HostConfig::default());
        assert_eq!(v["LogConfig"], json!({"Type": "json-file", "Config": {}}));
        assert_eq!(v["RestartPolicy"]["Name"], "no");
        assert_eq!(v["NetworkMode"], "default");
        assert_eq!(v["ShmSize"], 67_108_864);
        assert_eq!(v["PortBindings"], json!({}));
    }

    #[test]
    fn what_the_client_sent_wins() {
        let h: HostConfig = serde_json::from_value(json!({
            "NetworkMode": "none", "Memory": 1048576,
            "LogConfig": {"Type": "", "Config": {"max-size": "1m"}},
            "RestartPolicy": {"Name": "always", "MaximumRetryCount": 0},
            "PortBindings": null,
        }))
        .unwrap();
        let v = host_config(&h);
        assert_eq!(v["NetworkMode"], "none");
        assert_eq!(v["Memory"], 1_048_576);
        assert_eq!(v["LogConfig"]["Type"], "json-file");
        assert_eq!(v["LogConfig"]["Config"]["max-size"], "1m");
        assert_eq!(v["RestartPolicy"]["Name"], "always");
        assert_eq!(v["PortBindings"], json!({}), "null keeps the zero value");
    }

    #[test]
    fn config_always_has_volumes_and_labels() {
        let v = config(&ContainerConfig::default());
        assert!(v.as_object().unwrap().contains_key("Volumes"));
        assert_eq!(v["Labels"], json!({}));
    }
}
