//! Reading and checking config.json, and runc's default spec for `spec`.

use std::collections::HashSet;
use std::io;
use std::path::{Path, PathBuf};

use oci_spec::runtime::{LinuxNamespaceType, Spec};

use crate::namespaces;

#[derive(Debug, thiserror::Error)]
pub enum SpecError {
    #[error("cannot read {}: {source}", path.display())]
    Read { path: PathBuf, source: io::Error },
    #[error("invalid {}: {source}", path.display())]
    Parse {
        path: PathBuf,
        source: serde_json::Error,
    },
    #[error("config.json: unknown namespace type {0:?} in linux.namespaces")]
    UnknownNamespace(String),
    #[error("config.json: linux.timeOffsets: {0}")]
    TimeOffsets(String),
    #[error("config.json: namespace type {0:?} is listed twice")]
    DuplicateNamespace(String),
    #[error("config.json: a new mount namespace is required (add {{\"type\": \"mount\"}} to linux.namespaces)")]
    NoMountNamespace,
    #[error("config.json: mount destination {0:?} must be an absolute path")]
    RelativeMountDestination(PathBuf),
    #[error("config.json: {0} is required")]
    Missing(&'static str),
    #[error("config.json: process.args must not be empty")]
    EmptyArgs,
    #[error("config.json: hostname is set but the container has no private UTS namespace")]
    HostnameWithoutUts,
    #[error("config.json: {0} is not supported yet")]
    Unsupported(&'static str),
    #[error(
        "invalid container id {0:?}: use letters, digits, '_', '-', '.' (not starting with '.')"
    )]
    InvalidId(String),
}

pub const KNOWN_NAMESPACES: [&str; 8] = [
    "pid", "network", "mount", "ipc", "uts", "user", "cgroup", "time",
];

/// runc's id rule: `^[\w+-\.]+$`, and never "." or "..".
pub fn validate_id(id: &str) -> Result<(), SpecError> {
    let ok = !id.is_empty()
        && id.len() <= 1024
        && !id.starts_with('.')
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '+' | '-' | '.'));
    if ok {
        Ok(())
    } else {
        Err(SpecError::InvalidId(id.to_owned()))
    }
}

/// Loads `<bundle>/config.json`, naming bad namespace types before serde's generic error.
pub fn load(bundle: &Path) -> Result<Spec, SpecError> {
    let path = bundle.join("config.json");
    let text = std::fs::read(&path).map_err(|source| SpecError::Read {
        path: path.clone(),
        source,
    })?;
    let raw: serde_json::Value =
        serde_json::from_slice(&text).map_err(|source| SpecError::Parse {
            path: path.clone(),
            source,
        })?;
    if let Some(list) = raw.pointer("/linux/namespaces").and_then(|v| v.as_array()) {
        for ns in list {
            let typ = ns.get("type").and_then(|t| t.as_str()).unwrap_or_default();
            if !KNOWN_NAMESPACES.contains(&typ) {
                return Err(SpecError::UnknownNamespace(typ.to_owned()));
            }
        }
    }
    serde_json::from_value(raw).map_err(|source| SpecError::Parse { path, source })
}

/// Checks what lowrt needs and refuses what it cannot do yet, before anything is created.
pub fn validate(spec: &Spec) -> Result<(), SpecError> {
    let process = spec
        .process()
        .as_ref()
        .ok_or(SpecError::Missing("process"))?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(SpecError::EmptyArgs);
    }
    spec.root().as_ref().ok_or(SpecError::Missing("root"))?;
    let linux = spec.linux().as_ref().ok_or(SpecError::Missing("linux"))?;
    if linux
        .mount_label()
        .as_deref()
        .is_some_and(|l| !l.is_empty())
    {
        return Err(SpecError::Unsupported(
            "linux.mountLabel (SELinux context= of mounts)",
        ));
    }
    let mut seen = HashSet::new();
    for ns in linux.namespaces().as_deref().unwrap_or(&[]) {
        if !seen.insert(ns.typ()) {
            return Err(SpecError::DuplicateNamespace(ns.typ().to_string()));
        }
        match ns.typ() {
            LinuxNamespaceType::Time if !Path::new("/proc/self/ns/time").exists() => {
                return Err(SpecError::Unsupported(
                    "a time namespace on this kernel (no /proc/self/ns/time)",
                ))
            }
            _ => {}
        }
    }
    validate_time_offsets(linux, &seen)?;
    // runtime-spec: "Currently no flag values are supported."
    if linux
        .personality()
        .as_ref()
        .is_some_and(|p| p.flags().as_ref().is_some_and(|f| !f.is_empty()))
    {
        return Err(SpecError::Unsupported("linux.personality.flags"));
    }
    let new_user = namespaces::is_new_in(linux, LinuxNamespaceType::User);
    let joined_user = seen.contains(&LinuxNamespaceType::User) && !new_user;
    let has_maps = |m: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        m.as_ref().is_some_and(|m| !m.is_empty())
    };
    if new_user {
        if !has_maps(linux.uid_mappings()) || !has_maps(linux.gid_mappings()) {
            return Err(SpecError::Missing(
                "linux.uidMappings and linux.gidMappings (a new user namespace needs both)",
            ));
        }
    } else if joined_user {
        // The joined namespace's own maps apply; runc 1.1 insists on mappings here anyway,
        // so configs written for it carry them: accepted, not written.
    } else if has_maps(linux.uid_mappings()) || has_maps(linux.gid_mappings()) {
        return Err(SpecError::Unsupported(
            "linux.uidMappings without a user namespace",
        ));
    }
    if !seen.contains(&LinuxNamespaceType::Mount) {
        return Err(SpecError::NoMountNamespace);
    }
    if spec.hostname().as_deref().is_some_and(|h| !h.is_empty())
        && !seen.contains(&LinuxNamespaceType::Uts)
    {
        return Err(SpecError::HostnameWithoutUts);
    }
    for m in spec.mounts().as_deref().unwrap_or(&[]) {
        if !m.destination().is_absolute() {
            return Err(SpecError::RelativeMountDestination(m.destination().clone()));
        }
    }
    Ok(())
}

/// The config.json that `spec` writes: oci-spec's defaults adjusted to runc's (terminal
/// on, the host's kernel features), with our own hostname.
pub fn default_spec() -> Spec {
    let mut spec = Spec::default();
    if let Some(p) = spec.process_mut() {
        p.set_terminal(Some(true));
    }
    spec.set_hostname(Some("berth".to_owned()));
    spec
}

/// runtime-spec: timeOffsets only for a new time namespace, clocks "monotonic" and
/// "boottime" only (the two time_namespaces(7) virtualizes).
fn validate_time_offsets(
    linux: &oci_spec::runtime::Linux,
    seen: &HashSet<LinuxNamespaceType>,
) -> Result<(), SpecError> {
    let Some(offsets) = linux.time_offsets().as_ref().filter(|o| !o.is_empty()) else {
        return Ok(());
    };
    let new_time = linux
        .namespaces()
        .as_deref()
        .unwrap_or(&[])
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::Time && n.path().is_none());
    if !new_time {
        let why = if seen.contains(&LinuxNamespaceType::Time) {
            "offsets cannot be set on a time namespace joined by path"
        } else {
            "offsets are given but linux.namespaces has no new time namespace"
        };
        return Err(SpecError::TimeOffsets(why.into()));
    }
    for (clock, off) in offsets {
        if clock != "monotonic" && clock != "boottime" {
            return Err(SpecError::TimeOffsets(format!(
                "unknown clock {clock:?} (want \"monotonic\" or \"boottime\")"
            )));
        }
        if off.nanosecs().unwrap_or(0) >= 1_000_000_000 {
            return Err(SpecError::TimeOffsets(format!(
                "{clock}.nanosecs must be below 1000000000"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids() {
        assert!(validate_id("abc-1_2.x").is_ok());
        for bad in ["", ".", "..", "a/b", ".hidden", "a b"] {
            assert!(validate_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn unknown_namespace_is_named() {
        let tmp = tempfile::tempdir().unwrap();
        std::fs::write(
            tmp.path().join("config.json"),
            r#"{"ociVersion":"1.0.2","linux":{"namespaces":[{"type":"bogus"}]}}"#,
        )
        .unwrap();
        let err = load(tmp.path()).unwrap_err().to_string();
        assert!(err.contains("unknown namespace type \"bogus\""), "{err}");
    }

    #[test]
    fn default_spec_validates_and_relative_destination_does_not() {
        let mut spec = default_spec();
        validate(&spec).unwrap();
        let mut mounts = spec.mounts().clone().unwrap();
        mounts[0].set_destination(PathBuf::from("proc"));
        spec.set_mounts(Some(mounts));
        let err = validate(&spec).unwrap_err().to_string();
        assert!(err.contains("\"proc\" must be an absolute path"), "{err}");
    }
}
