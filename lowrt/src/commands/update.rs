//! `update`: new cgroup limits for a live container, from a `linux.resources` JSON
//! document and/or runc's per-resource flags (`--memory`, `--cpu-quota`, `--pids-limit`, …).
//!
//! Only what the caller names is written to the cgroups: re-applying the whole stored
//! document would, on cgroup v1, rewrite the device rules (deny all, then allow), briefly
//! denying devices to a running container. The stored spec gets the merge.

use std::io::Read;
use std::path::Path;

use oci_spec::runtime::LinuxResources;
use serde_json::{json, Map, Value};

use super::Globals;
use crate::cli::UpdateFlags;
use crate::container::{io_err, ContainerError};
use crate::intelrdt::RdtGroup;
use crate::state::{State, StateError, Status};

pub fn update(
    g: &Globals,
    id: &str,
    resources: Option<&Path>,
    flags: &UpdateFlags,
) -> Result<i32, ContainerError> {
    let mut st = State::load(&g.root, id)?;
    let status = st.status(&g.root);
    if status == Status::Stopped {
        return Err(ContainerError::BadTransition("update", status));
    }
    let mut delta = match resources {
        Some(path) => read_document(path)?,
        None => Value::Object(Map::new()),
    };
    merge(&mut delta, flags_document(flags));
    let rdt = flags.l3_cache_schema.is_some() || flags.mem_bw_schema.is_some();
    let no_resources = delta.as_object().is_none_or(Map::is_empty);
    if no_resources && !rdt {
        return Err(ContainerError::NothingToUpdate);
    }
    let corrupt = |source| StateError::Corrupt {
        path: resources.unwrap_or(Path::new("flags")).to_path_buf(),
        source,
    };
    // Parsed before anything changes: a bad document leaves the resctrl group alone too.
    let res: LinuxResources = serde_json::from_value(delta.clone()).map_err(corrupt)?;
    if rdt {
        update_intel_rdt(&mut st, flags)?;
        if no_resources {
            st.save(&State::dir(&g.root, id))?;
            return Ok(0);
        }
    }
    st.cgroup.manager().apply(&res)?;
    if let Some(linux) = st.config.linux_mut() {
        let mut stored = match linux.resources() {
            Some(r) => serde_json::to_value(r).map_err(corrupt)?,
            None => Value::Object(Map::new()),
        };
        merge(&mut stored, delta);
        linux.set_resources(Some(serde_json::from_value(stored).map_err(corrupt)?));
    }
    st.save(&State::dir(&g.root, id))?;
    Ok(0)
}

/// `--l3-cache-schema`/`--mem-bw-schema`: written to the container's resctrl group live;
/// a container created without `linux.intelRdt` gets its own group first, with init in
/// it, as runc's update does.
fn update_intel_rdt(st: &mut State, flags: &UpdateFlags) -> Result<(), ContainerError> {
    let mut cfg = st
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.intel_rdt().clone())
        .unwrap_or_default();
    let l3 = flags.l3_cache_schema.as_deref();
    let mb = flags.mem_bw_schema.as_deref();
    if let Some(l3) = l3 {
        cfg.set_l3_cache_schema(Some(l3.to_owned()));
    }
    if let Some(mb) = mb {
        cfg.set_mem_bw_schema(Some(mb.to_owned()));
    }
    // Checked against the host the same way as at create (feature present, mounted).
    let planned = RdtGroup::plan(&cfg, &st.id, crate::intelrdt::host_root())?;
    let group = match st.intel_rdt.clone() {
        Some(group) => group,
        None => {
            let mut group = planned;
            group.create(&oci_spec::runtime::LinuxIntelRdt::default())?;
            if let Err(e) = group.add_task(st.pid) {
                let _ = group.destroy();
                return Err(e.into());
            }
            st.intel_rdt = Some(group.clone());
            group
        }
    };
    group.write_schemata(l3, mb, &[])?;
    if let Some(linux) = st.config.linux_mut() {
        linux.set_intel_rdt(Some(cfg));
    }
    Ok(())
}

fn read_document(path: &Path) -> Result<Value, ContainerError> {
    let mut text = Vec::new();
    if path == Path::new("-") {
        std::io::stdin()
            .read_to_end(&mut text)
            .map_err(io_err("read", Path::new("stdin")))?;
    } else {
        text = std::fs::read(path).map_err(io_err("read", path))?;
    }
    // Parsed as LinuxResources first, so a bad document is named before anything changes.
    let res: LinuxResources =
        serde_json::from_slice(&text).map_err(|source| StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })?;
    serde_json::to_value(res).map_err(|source| {
        ContainerError::State(StateError::Corrupt {
            path: path.to_path_buf(),
            source,
        })
    })
}

/// The flags as a sparse `linux.resources` document (runc's mapping).
pub fn flags_document(f: &UpdateFlags) -> Value {
    let mut doc = Value::Object(Map::new());
    let mut set = |section: &str, key: &str, value: Value| {
        doc[section][key] = value;
    };
    if let Some(v) = f.blkio_weight {
        set("blockIO", "weight", json!(v));
    }
    if let Some(v) = f.cpu_period {
        set("cpu", "period", json!(v));
    }
    if let Some(v) = f.cpu_quota {
        set("cpu", "quota", json!(v));
    }
    if let Some(v) = f.cpu_rt_period {
        set("cpu", "realtimePeriod", json!(v));
    }
    if let Some(v) = f.cpu_rt_runtime {
        set("cpu", "realtimeRuntime", json!(v));
    }
    if let Some(v) = f.cpu_share {
        set("cpu", "shares", json!(v));
    }
    if let Some(v) = &f.cpuset_cpus {
        set("cpu", "cpus", json!(v));
    }
    if let Some(v) = &f.cpuset_mems {
        set("cpu", "mems", json!(v));
    }
    if let Some(v) = f.memory {
        set("memory", "limit", json!(v));
    }
    if let Some(v) = f.memory_reservation {
        set("memory", "reservation", json!(v));
    }
    if let Some(v) = f.memory_swap {
        set("memory", "swap", json!(v));
    }
    if let Some(v) = f.pids_limit {
        set("pids", "limit", json!(v));
    }
    doc
}

/// Deep merge: objects key by key, anything else replaced.
fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (slot, v) => *slot = v,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cli::parse_bytes;

    #[test]
    fn flags_become_a_sparse_resources_document() {
        let f = UpdateFlags {
            memory: Some(64 << 20),
            cpu_quota: Some(-1),
            pids_limit: Some(10),
            ..UpdateFlags::default()
        };
        let doc = flags_document(&f);
        assert_eq!(
            doc,
            json!({"memory": {"limit": 67108864}, "cpu": {"quota": -1}, "pids": {"limit": 10}})
        );
        let res: LinuxResources = serde_json::from_value(doc).unwrap();
        assert_eq!(res.pids().as_ref().unwrap().limit(), 10);
    }

    #[test]
    fn merge_keeps_what_the_update_does_not_name() {
        let mut stored = json!({"memory": {"limit": 1, "swap": 2}, "devices": [{"allow": false}]});
        merge(&mut stored, json!({"memory": {"limit": 5}}));
        assert_eq!(
            stored,
            json!({"memory": {"limit": 5, "swap": 2}, "devices": [{"allow": false}]})
        );
    }

    #[test]
    fn sizes_take_binary_suffixes() {
        assert_eq!(parse_bytes("1048576"), Ok(1 << 20));
        assert_eq!(parse_bytes("64m"), Ok(64 << 20));
        assert_eq!(parse_bytes("1G"), Ok(1 << 30));
        assert_eq!(parse_bytes("512kb"), Ok(512 << 10));
        assert_eq!(parse_bytes("-1"), Ok(-1));
        assert!(parse_bytes("lots").unwrap_err().contains("invalid size"));
    }
}
