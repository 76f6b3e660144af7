//! A container's mounts from its create request, as dockerd's `registerMountPoints` and
//! `volume/mounts/linux_parser.go` make them: image and `Config.Volumes` (anonymous
//! volumes), `HostConfig.Binds` (`-v`), `HostConfig.Mounts` (`--mount`) and
//! `HostConfig.Tmpfs` (`--tmpfs`). Pure: volumes are created and bind sources checked by
//! the daemon afterwards.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MountError {
    #[error("invalid volume specification: '{raw}'")]
    Spec { raw: String },
    #[error("invalid volume specification: '{raw}': {detail}")]
    SpecDetail { raw: String, detail: String },
    #[error("invalid mode: {mode}")]
    Mode { mode: String },
    #[error("invalid mount config for type {kind:?}: {detail}")]
    Config { kind: String, detail: String },
    #[error("Duplicate mount point: {dst}")]
    Duplicate { dst: String },
    #[error("invalid tmpfs option {opt:?}")]
    TmpfsOption { opt: String },
    #[error("invalid mount spec: {detail}")]
    Decode { detail: String },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MountKind {
    Bind,
    Volume,
    Tmpfs,
}

impl MountKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Bind => "bind",
            Self::Volume => "volume",
            Self::Tmpfs => "tmpfs",
        }
    }
}

/// One mount of a container, kept in its record (dockerd's `MountPoint`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct MountPoint {
    #[serde(rename = "Type")]
    pub kind: MountKind,
    /// Volume name (volumes only).
    #[serde(default)]
    pub name: String,
    /// Host path: the bind source or the volume's `_data` (filled in by the daemon).
    #[serde(default)]
    pub source: String,
    pub destination: String,
    #[serde(default)]
    pub mode: String,
    #[serde(rename = "RW")]
    pub rw: bool,
    #[serde(default)]
    pub propagation: String,
    /// Volumes made for this container only (`-v /path`, image `VOLUME`): `rm -v` and
    /// `--rm` remove them.
    #[serde(default)]
    pub anonymous: bool,
    /// Copy the image's content at the destination into a new, empty volume.
    #[serde(default)]
    pub copy_data: bool,
    /// `-v` creates a missing bind source; `--mount` refuses it.
    #[serde(default)]
    pub create_source: bool,
    /// tmpfs mount options (size, mode, ...), without the defaults.
    #[serde(default)]
    pub tmpfs_options: Vec<String>,
    /// Volume options for a volume created on demand (`--mount volume-opt=`).
    #[serde(default)]
    pub volume_options: BTreeMap<String, String>,
    #[serde(default)]
    pub volume_labels: BTreeMap<String, String>,
}

impl MountPoint {
    fn new(kind: MountKind, destination: &str) -> Self {
        Self {
            kind,
            name: String::new(),
            source: String::new(),
            destination: clean(destination),
            mode: String::new(),
            rw: true,
            propagation: String::new(),
            anonymous: false,
            copy_data: false,
            create_source: false,
            tmpfs_options: Vec::new(),
            volume_options: BTreeMap::new(),
            volume_labels: BTreeMap::new(),
        }
    }

    /// dockerd's `Mounts` entry of `docker inspect`.
    pub fn inspect(&self) -> Value {
        let mut v = serde_json::json!({
            "Type": self.kind.as_str(),
            "Source": self.source,
            "Destination": self.destination,
            "Mode": self.mode,
            "RW": self.rw,
            "Propagation": self.propagation,
        });
        if self.kind == MountKind::Volume {
            v["Name"] = self.name.clone().into();
            v["Driver"] = "local".into();
        }
        v
    }
}

/// Lexically cleaned absolute path (Go's `filepath.Clean`), without a trailing slash.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in p.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let joined = parts.join("/");
    if p.starts_with('/') {
        format!("/{joined}")
    } else if joined.is_empty() {
        ".".into()
    } else {
        joined
    }
}

const PROPAGATIONS: &[&str] = &[
    "shared", "rshared", "slave", "rslave", "private", "rprivate",
];

/// Parsed `-v` mode words.
#[derive(Default)]
struct Mode {
    rw: Option<bool>,
    label: bool,
    nocopy: bool,
    propagation: Option<String>,
}

fn parse_mode(mode: &str) -> Option<Mode> {
    let mut m = Mode::default();
    let mut consistency = false;
    for word in mode.split(',') {
        match word {
            "rw" | "ro" if m.rw.is_none() => m.rw = Some(word == "rw"),
            "z" | "Z" if !m.label => m.label = true,
            "nocopy" if !m.nocopy => m.nocopy = true,
            "consistent" | "cached" | "delegated" if !consistency => consistency = true,
            p if PROPAGATIONS.contains(&p) && m.propagation.is_none() => {
                m.propagation = Some(p.into())
            }
            _ => return None,
        }
    }
    Some(m)
}

/// One `HostConfig.Binds` entry: `SRC:DST[:MODE]`; a SRC that is not an absolute path is a
/// volume name.
pub fn parse_bind(raw: &str) -> Result<MountPoint, MountError> {
    let spec = || MountError::Spec { raw: raw.into() };
    let arr: Vec<&str> = raw.split(':').collect();
    let (src, dst, mode) = match arr.as_slice() {
        [s, d] if parse_mode(d).is_none() => (*s, *d, ""),
        [s, d, m] => (*s, *d, *m),
        _ => return Err(spec()),
    };
    if src.is_empty() || dst.is_empty() {
        return Err(spec());
    }
    let m = if mode.is_empty() {
        Mode::default()
    } else {
        parse_mode(mode).ok_or_else(|| MountError::Mode { mode: mode.into() })?
    };
    let detail = |kind: &str, detail: String| MountError::SpecDetail {
        raw: raw.into(),
        detail: MountError::Config {
            kind: kind.into(),
            detail,
        }
        .to_string(),
    };
    let kind = if src.starts_with('/') {
        MountKind::Bind
    } else {
        MountKind::Volume
    };
    if !dst.starts_with('/') {
        return Err(detail(
            kind.as_str(),
            format!("invalid mount path: '{dst}' mount path must be absolute"),
        ));
    }
    if clean(dst) == "/" {
        return Err(detail(
            kind.as_str(),
            "invalid specification: destination can't be '/'".into(),
        ));
    }
    let mut mp = MountPoint::new(kind, dst);
    mp.rw = m.rw.unwrap_or(true);
    mp.mode = mode.to_string();
    match kind {
        MountKind::Bind => {
            if m.nocopy {
                return Err(MountError::Mode { mode: mode.into() });
            }
            mp.source = clean(src);
            mp.propagation = m.propagation.unwrap_or_else(|| "rprivate".into());
            mp.create_source = true;
        }
        _ => {
            if m.propagation.is_some() {
                return Err(MountError::Mode { mode: mode.into() });
            }
            mp.name = src.to_string();
            mp.copy_data = !m.nocopy;
            if mode.is_empty() {
                mp.mode = "z".into();
            }
        }
    }
    Ok(mp)
}

/// `HostConfig.Mounts` entry (moby `api/types/mount.Mount`).
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct MountSpec {
    #[serde(rename = "Type")]
    kind: String,
    source: String,
    target: String,
    read_only: bool,
    bind_options: Option<BindOptions>,
    volume_options: Option<VolumeOptions>,
    tmpfs_options: Option<TmpfsOptions>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct BindOptions {
    propagation: String,
    create_mountpoint: bool,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct VolumeOptions {
    no_copy: bool,
    labels: Option<BTreeMap<String, String>>,
    driver_config: Option<DriverConfig>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct DriverConfig {
    name: String,
    options: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
struct TmpfsOptions {
    size_bytes: i64,
    mode: u32,
}

fn parse_mount(v: &Value) -> Result<MountPoint, MountError> {
    let s: MountSpec = serde_json::from_value(v.clone()).map_err(|e| MountError::Decode {
        detail: e.to_string(),
    })?;
    let err = |detail: String| MountError::Config {
        kind: s.kind.clone(),
        detail,
    };
    let kind = match s.kind.as_str() {
        "bind" => MountKind::Bind,
        "volume" => MountKind::Volume,
        "tmpfs" => MountKind::Tmpfs,
        _ => return Err(err("mount type unknown".into())),
    };
    if s.target.is_empty() {
        return Err(err("field Target must not be empty".into()));
    }
    if !s.target.starts_with('/') {
        return Err(err(format!(
            "invalid mount path: '{}' mount path must be absolute",
            s.target
        )));
    }
    if clean(&s.target) == "/" {
        return Err(err("invalid specification: destination can't be '/'".into()));
    }
    let extra = |field: &str| err(format!("field {field} must not be specified"));
    let mut mp = MountPoint::new(kind, &s.target);
    mp.rw = !s.read_only;
    match kind {
        MountKind::Bind => {
            if s.volume_options.is_some() {
                return Err(extra("VolumeOptions"));
            }
            if s.tmpfs_options.is_some() {
                return Err(extra("TmpfsOptions"));
            }
            if s.source.is_empty() {
                return Err(err("field Source must not be empty".into()));
            }
            if !s.source.starts_with('/') {
                return Err(err(format!(
                    "invalid mount path: '{}' mount path must be absolute",
                    s.source
                )));
            }
            let b = s.bind_options.unwrap_or_default();
            if !b.propagation.is_empty() && !PROPAGATIONS.contains(&b.propagation.as_str()) {
                return Err(err(format!("invalid propagation mode: {}", b.propagation)));
            }
            mp.source = clean(&s.source);
            mp.propagation = if b.propagation.is_empty() {
                "rprivate".into()
            } else {
                b.propagation
            };
            mp.create_source = b.create_mountpoint;
        }
        MountKind::Volume => {
            if s.bind_options.is_some() {
                return Err(extra("BindOptions"));
            }
            if s.tmpfs_options.is_some() {
                return Err(extra("TmpfsOptions"));
            }
            let vo = s.volume_options.unwrap_or_default();
            if let Some(d) = &vo.driver_config {
                if !d.name.is_empty() && d.name != "local" {
                    return Err(err(format!(
                        "error looking up volume plugin {0}: plugin \"{0}\" not found",
                        d.name
                    )));
                }
            }
            mp.name = s.source.clone();
            mp.anonymous = s.source.is_empty();
            mp.copy_data = !vo.no_copy;
            mp.mode = "z".into();
            mp.volume_labels = vo.labels.unwrap_or_default();
            mp.volume_options = vo.driver_config.and_then(|d| d.options).unwrap_or_default();
        }
        MountKind::Tmpfs => {
            if !s.source.is_empty() {
                return Err(extra("Source"));
            }
            if s.bind_options.is_some() {
                return Err(extra("BindOptions"));
            }
            if s.volume_options.is_some() {
                return Err(extra("VolumeOptions"));
            }
            let t = s.tmpfs_options.unwrap_or_default();
            if t.size_bytes < 0 {
                return Err(err(format!("invalid tmpfs size: {}", t.size_bytes)));
            }
            if t.size_bytes > 0 {
                mp.tmpfs_options.push(tmpfs_size(t.size_bytes));
            }
            if t.mode != 0 {
                mp.tmpfs_options.push(format!("mode={:o}", t.mode & 0o7777));
            }
        }
    }
    Ok(mp)
}

/// moby's `ConvertTmpfsOptions` size spelling.
fn tmpfs_size(n: i64) -> String {
    if n % (1 << 20) == 0 {
        format!("size={}m", n >> 20)
    } else if n % 1024 == 0 {
        format!("size={}k", n >> 10)
    } else {
        format!("size={n}")
    }
}

/// `--tmpfs /dst:opts`: options checked against mount(8)'s tmpfs words.
fn parse_tmpfs(dst: &str, opts: &str) -> Result<MountPoint, MountError> {
    if !dst.starts_with('/') {
        return Err(MountError::Config {
            kind: "tmpfs".into(),
            detail: format!("invalid mount path: '{dst}' mount path must be absolute"),
        });
    }
    let mut mp = MountPoint::new(MountKind::Tmpfs, dst);
    for o in opts.split(',').filter(|o| !o.is_empty()) {
        let key = o.split_once('=').map_or(o, |(k, _)| k);
        match key {
            "ro" => mp.rw = false,
            "rw" => mp.rw = true,
            "size" | "mode" | "uid" | "gid" | "nr_inodes" | "nr_blocks" | "mpol" => {
                mp.tmpfs_options.push(o.into())
            }
            "exec" | "noexec" | "suid" | "nosuid" | "dev" | "nodev" | "atime" | "noatime"
            | "diratime" | "nodiratime" | "relatime" | "norelatime" | "strictatime"
            | "nostrictatime" | "sync" | "async" | "dirsync" => mp.tmpfs_options.push(o.into()),
            _ => return Err(MountError::TmpfsOption { opt: o.into() }),
        }
    }
    Ok(mp)
}

/// Every mount of a new container, in dockerd's precedence: image volumes, then
/// `Config.Volumes`, replaced by `Binds`, `Mounts` and `Tmpfs` at the same destination
/// (which must not repeat among themselves).
pub fn container_mounts(
    image_volumes: &[String],
    config_volumes: &[String],
    binds: &[String],
    mounts: &[Value],
    tmpfs: &BTreeMap<String, String>,
) -> Result<Vec<MountPoint>, MountError> {
    let mut out: Vec<MountPoint> = Vec::new();
    for dst in image_volumes.iter().chain(config_volumes) {
        // `-v /path` arrives as Config.Volumes; a `-v` spec with a colon is not valid here.
        if dst.contains(':') || !dst.starts_with('/') {
            return Err(MountError::Spec { raw: dst.clone() });
        }
        let mut mp = MountPoint::new(MountKind::Volume, dst);
        if mp.destination == "/" {
            return Err(MountError::SpecDetail {
                raw: dst.clone(),
                detail: "invalid specification: destination can't be '/'".into(),
            });
        }
        mp.anonymous = true;
        mp.copy_data = true;
        out.retain(|m| m.destination != mp.destination);
        out.push(mp);
    }
    let mut user: Vec<MountPoint> = Vec::new();
    for raw in binds {
        user.push(parse_bind(raw)?);
    }
    for m in mounts {
        user.push(parse_mount(m)?);
    }
    for (dst, opts) in tmpfs {
        user.push(parse_tmpfs(dst, opts)?);
    }
    for (i, m) in user.iter().enumerate() {
        if user[..i].iter().any(|o| o.destination == m.destination) {
            return Err(MountError::Duplicate {
                dst: m.destination.clone(),
            });
        }
    }
    for m in user {
        out.retain(|o| o.destination != m.destination);
        out.push(m);
    }
    Ok(out)
}

/// Destinations of a `{"/path": {}}` map (`Config.Volumes`, image `Volumes`), sorted.
pub fn volume_keys(v: Option<&Value>) -> Vec<String> {
    let mut keys: Vec<String> = v
        .and_then(Value::as_object)
        .map(|m| m.keys().cloned().collect())
        .unwrap_or_default();
    keys.sort();
    keys
}

#[cfg(test)]
#[path = "parse_tests.rs"]
mod tests;
