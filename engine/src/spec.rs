//! OCI runtime spec generation with dockerd's defaults (moby `oci/defaults.go`,
//! `daemon/oci_linux.go`). Not yet: seccomp (a later issue) and networking beyond a
//! loopback-only network namespace (a later issue).

use serde_json::{json, Value};

use crate::types::HostConfig;
use crate::volumes::{MountKind, MountPoint};

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpecError {
    #[error("unable to find user {user}: only numeric uid[:gid] and root are supported for now")]
    User { user: String },
    #[error("invalid capability {cap:?}")]
    Capability { cap: String },
    #[error("privileged containers are not implemented yet")]
    Privileged,
    #[error(
        "network mode {mode:?} is not implemented yet (supported: default, bridge, none, host, container:<name|id>)"
    )]
    NetworkMode { mode: String },
}

pub const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// dockerd's default capability set.
pub const DEFAULT_CAPS: &[&str] = &[
    "CAP_CHOWN",
    "CAP_DAC_OVERRIDE",
    "CAP_FSETID",
    "CAP_FOWNER",
    "CAP_MKNOD",
    "CAP_NET_RAW",
    "CAP_SETGID",
    "CAP_SETUID",
    "CAP_SETFCAP",
    "CAP_SETPCAP",
    "CAP_NET_BIND_SERVICE",
    "CAP_SYS_CHROOT",
    "CAP_KILL",
    "CAP_AUDIT_WRITE",
];

const MASKED_PATHS: &[&str] = &[
    "/proc/asound",
    "/proc/acpi",
    "/proc/interrupts",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/proc/scsi",
    "/sys/firmware",
    "/sys/devices/virtual/powercap",
];

const READONLY_PATHS: &[&str] = &[
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
];

/// Everything the spec is made from, already merged from image config and user options.
#[derive(Debug, Clone)]
pub struct SpecInput<'a> {
    pub id: &'a str,
    pub args: Vec<String>,
    /// Image env overridden by user env, without PATH/HOSTNAME defaults.
    pub env: Vec<String>,
    pub cwd: String,
    pub user: String,
    pub tty: bool,
    pub hostname: String,
    pub cgroup_parent: &'a str,
    pub host_config: &'a HostConfig,
    /// (destination, host source) of the files the engine generates per container.
    pub etc_files: Vec<(&'static str, String)>,
}

/// `KEY=VALUE` lists merged like docker's `ReplaceOrAppendEnvValues`: later keys replace
/// earlier ones in place.
pub fn merge_env(base: &[String], overrides: &[String]) -> Vec<String> {
    let key = |e: &str| e.split_once('=').map_or(e, |(k, _)| k).to_string();
    let mut out: Vec<String> = base.to_vec();
    for e in overrides {
        match out.iter_mut().find(|x| key(x) == key(e)) {
            Some(slot) => *slot = e.clone(),
            None => out.push(e.clone()),
        }
    }
    out
}

/// Process environment as dockerd builds it: PATH and HOSTNAME first, TERM for a tty,
/// then the container's env replacing any of them.
pub fn process_env(env: &[String], hostname: &str, tty: bool) -> Vec<String> {
    let mut base = vec![DEFAULT_PATH.to_string(), format!("HOSTNAME={hostname}")];
    if tty {
        base.push("TERM=xterm".into());
    }
    merge_env(&base, env)
}

/// `uid[:gid]` or `root`; names need the container's /etc/passwd, which lives in highd's
/// snapshot, so they are refused with a clear message for now.
pub fn parse_user(user: &str) -> Result<(u32, u32), SpecError> {
    let err = || SpecError::User { user: user.into() };
    let (u, g) = match user.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (user, None),
    };
    let uid = match u {
        "" | "root" => 0,
        n => n.parse().map_err(|_| err())?,
    };
    let gid = match g {
        None => uid,
        Some("root") => 0,
        Some(n) => n.parse().map_err(|_| err())?,
    };
    Ok((uid, gid))
}

pub fn capabilities(host: &HostConfig) -> Result<Vec<String>, SpecError> {
    let norm = |c: &str| -> Result<String, SpecError> {
        let up = c.to_ascii_uppercase();
        let up = if up == "ALL" || up.starts_with("CAP_") {
            up
        } else {
            format!("CAP_{up}")
        };
        if up != "ALL" && !up[4..].bytes().all(|b| b.is_ascii_uppercase() || b == b'_') {
            return Err(SpecError::Capability { cap: c.into() });
        }
        Ok(up)
    };
    let drop: Vec<String> = host
        .cap_drop
        .iter()
        .flatten()
        .map(|c| norm(c))
        .collect::<Result<_, _>>()?;
    let add: Vec<String> = host
        .cap_add
        .iter()
        .flatten()
        .map(|c| norm(c))
        .collect::<Result<_, _>>()?;
    if add.iter().any(|c| c == "ALL") {
        return Err(SpecError::Capability { cap: "ALL".into() });
    }
    let mut caps: Vec<String> = if drop.iter().any(|c| c == "ALL") {
        Vec::new()
    } else {
        DEFAULT_CAPS
            .iter()
            .map(|c| c.to_string())
            .filter(|c| !drop.contains(c))
            .collect()
    };
    for c in add {
        if !caps.contains(&c) {
            caps.push(c);
        }
    }
    Ok(caps)
}

/// The container's own mounts (volumes, binds, tmpfs; sources already resolved) added to
/// the spec: each replaces a default mount at the same destination, and all are ordered
/// parents first, as dockerd sorts them, so a mount inside another lands on top of it.
pub fn add_mounts(spec: &mut Value, mounts: &[MountPoint]) {
    let Some(list) = spec["mounts"].as_array_mut() else {
        return;
    };
    list.retain(|m| {
        !mounts
            .iter()
            .any(|u| m["destination"].as_str() == Some(u.destination.as_str()))
    });
    for m in mounts {
        let rw = if m.rw { "rw" } else { "ro" };
        let v = match m.kind {
            MountKind::Tmpfs => {
                let mut opts: Vec<String> = vec!["nosuid".into(), "nodev".into(), "noexec".into()];
                for o in &m.tmpfs_options {
                    // A user's word replaces its default opposite (`exec` for `noexec`).
                    let opposite = o
                        .strip_prefix("no")
                        .map_or(format!("no{o}"), str::to_string);
                    opts.retain(|d| *d != opposite && d != o);
                    opts.push(o.clone());
                }
                opts.push(rw.into());
                json!({"destination": m.destination, "type": "tmpfs", "source": "tmpfs",
                       "options": opts})
            }
            MountKind::Bind | MountKind::Volume => {
                let propagation = if m.propagation.is_empty() {
                    "rprivate"
                } else {
                    &m.propagation
                };
                json!({"destination": m.destination, "type": "bind", "source": m.source,
                       "options": ["rbind", rw, propagation]})
            }
        };
        list.push(v);
    }
    let depth = |m: &Value| {
        m["destination"]
            .as_str()
            .map_or(0, |d| d.split('/').filter(|c| !c.is_empty()).count())
    };
    list.sort_by_key(depth);
}

fn default_mounts(host: &HostConfig) -> Vec<Value> {
    let shm = if host.shm_size > 0 {
        host.shm_size
    } else {
        64 * 1024 * 1024
    };
    vec![
        json!({"destination": "/proc", "type": "proc", "source": "proc",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev", "type": "tmpfs", "source": "tmpfs",
               "options": ["nosuid", "strictatime", "mode=755", "size=65536k"]}),
        json!({"destination": "/dev/pts", "type": "devpts", "source": "devpts",
               "options": ["nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620", "gid=5"]}),
        json!({"destination": "/sys", "type": "sysfs", "source": "sysfs",
               "options": ["nosuid", "noexec", "nodev", "ro"]}),
        json!({"destination": "/sys/fs/cgroup", "type": "cgroup", "source": "cgroup",
               "options": ["ro", "nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/mqueue", "type": "mqueue", "source": "mqueue",
               "options": ["nosuid", "noexec", "nodev"]}),
        json!({"destination": "/dev/shm", "type": "tmpfs", "source": "shm",
               "options": ["nosuid", "noexec", "nodev", "mode=1777", format!("size={shm}")]}),
    ]
}

/// dockerd's device cgroup rules: deny all, then the usual character devices.
fn device_rules() -> Value {
    let allow = |major: i64, minor: Option<i64>| json!({"allow": true, "type": "c", "major": major, "minor": minor, "access": "rwm"});
    json!([
        {"allow": false, "access": "rwm"},
        {"allow": true, "type": "c", "access": "m"},
        {"allow": true, "type": "b", "access": "m"},
        allow(1, Some(3)), allow(1, Some(5)), allow(1, Some(7)), allow(1, Some(8)),
        allow(1, Some(9)), allow(5, Some(0)), allow(5, Some(1)), allow(5, Some(2)),
        allow(136, None), allow(10, Some(200)),
    ])
}

pub fn namespaces(network_mode: &str) -> Result<Vec<Value>, SpecError> {
    let mut ns: Vec<Value> = ["pid", "ipc", "uts", "mount"]
        .iter()
        .map(|t| json!({"type": t}))
        .collect();
    match network_mode {
        "host" => {}
        // A namespace of its own: the engine fills in the path of the persistent one it
        // made (bridge and user-defined networks) or of the other container's
        // (`container:`), see crate::network; `none` keeps the runtime's empty one.
        _ => ns.push(json!({"type": "network"})),
    }
    Ok(ns)
}

/// Builds the OCI runtime spec (config.json) for a container or, with `process_only`, the
/// `Process` of an exec.
pub fn generate(input: &SpecInput<'_>) -> Result<Value, SpecError> {
    let host = input.host_config;
    if host.privileged {
        return Err(SpecError::Privileged);
    }
    let mut mounts = default_mounts(host);
    for (dst, src) in &input.etc_files {
        mounts.push(json!({"destination": dst, "type": "bind", "source": src,
                           "options": ["rbind", "rprivate"]}));
    }
    let mut resources = crate::resources::Resources::of(host).to_oci();
    resources.insert("devices".into(), device_rules());
    Ok(json!({
        "ociVersion": "1.2.0",
        "process": process(input)?,
        "root": {"path": "rootfs", "readonly": host.readonly_rootfs},
        "hostname": input.hostname,
        "mounts": mounts,
        "linux": {
            "cgroupsPath": format!("{}/{}", input.cgroup_parent.trim_end_matches('/'), input.id),
            "resources": resources,
            "namespaces": namespaces(&host.network_mode)?,
            "maskedPaths": MASKED_PATHS,
            "readonlyPaths": READONLY_PATHS,
        },
    }))
}

/// The OCI `Process` (also what an exec runs, with its own args/env/user/cwd).
pub fn process(input: &SpecInput<'_>) -> Result<Value, SpecError> {
    let (uid, gid) = parse_user(&input.user)?;
    let caps = capabilities(input.host_config)?;
    Ok(json!({
        "terminal": input.tty,
        "user": {"uid": uid, "gid": gid},
        "args": input.args,
        "env": process_env(&input.env, &input.hostname, input.tty),
        "cwd": if input.cwd.is_empty() { "/" } else { &input.cwd },
        "capabilities": {
            "bounding": caps, "effective": caps, "permitted": caps,
        },
        "noNewPrivileges": false,
    }))
}

#[cfg(test)]
#[path = "spec_tests.rs"]
mod tests;
