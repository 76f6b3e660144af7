//! Daemon configuration: command-line flags merged with an optional TOML file.
//!
//! Precedence, highest first: an explicit field of a `[runtimes."name"]` entry in the
//! file, then `--shim`/`--runtime`, then the binary found next to our own executable,
//! then `$PATH`. Directories: flags, then the file's top-level keys, then the defaults
//! of docs/ARCHITECTURE.md.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

/// Runtime names served by default; both map to berth-shim driving berth-lowrt, the way
/// containerd maps them to its runc shim.
pub const DEFAULT_RUNTIMES: [&str; 2] = ["io.containerd.runc.v2", "io.containerd.runtime.v1.linux"];

pub const DEFAULT_ROOT: &str = "/var/lib/berth/highd";
pub const DEFAULT_STATE: &str = "/run/berth/highd";
pub const DEFAULT_ADDRESS: &str = "/run/berth/highd.sock";
const SHIM_BIN: &str = "berth-shim";
const RUNTIME_BIN: &str = "berth-lowrt";

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("cannot find the {name} binary next to {exe} or in $PATH (use --{flag})")]
    BinaryNotFound {
        name: &'static str,
        exe: PathBuf,
        flag: &'static str,
    },
    #[error("{what} must be an absolute path, got {path}")]
    NotAbsolute { what: &'static str, path: PathBuf },
}

/// Flags as given on the command line (all optional so the file can fill them in).
#[derive(Debug, Default, Clone)]
pub struct Flags {
    pub root: Option<PathBuf>,
    pub state: Option<PathBuf>,
    pub address: Option<PathBuf>,
    pub shim: Option<PathBuf>,
    pub runtime: Option<PathBuf>,
    pub config: Option<PathBuf>,
}

/// The TOML file's shape (containerd-like names where one exists).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileConfig {
    root: Option<PathBuf>,
    state: Option<PathBuf>,
    address: Option<PathBuf>,
    #[serde(default)]
    runtimes: BTreeMap<String, FileRuntime>,
    #[serde(default)]
    gc: FileGc,
    #[serde(default)]
    snapshotter: FileSnapshotter,
}

/// `[snapshotter]`: `mode = "copy"` forces the copying snapshotter even where overlayfs
/// works (tests of the fallback, filesystems overlay misbehaves on); `"auto"` (the
/// default) probes overlayfs at start.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileSnapshotter {
    mode: Option<String>,
}

/// `[gc]`: seconds, so the file needs no duration syntax.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileGc {
    /// Seconds between background collections; 0 turns them off.
    interval: Option<u64>,
    /// Seconds unreferenced content and snapshots are kept (docs/storage.md, grace).
    grace: Option<u64>,
}

/// Background collection every 30 minutes: deletes already collect right away, so the
/// loop only catches expired leases and leftovers of crashes.
pub const DEFAULT_GC_INTERVAL: Duration = Duration::from_secs(30 * 60);

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct FileRuntime {
    shim: Option<PathBuf>,
    runtime: Option<PathBuf>,
    runtime_root: Option<PathBuf>,
}

/// How to run the tasks of containers asking for one runtime name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuntimeConfig {
    pub shim: PathBuf,
    pub runtime: PathBuf,
    /// Parent of the per-namespace runtime roots; `None` means `<state>/runtime`.
    pub runtime_root: Option<PathBuf>,
}

/// The validated configuration the daemon runs with.
#[derive(Debug, Clone)]
pub struct Config {
    pub root: PathBuf,
    pub state: PathBuf,
    pub address: PathBuf,
    pub runtimes: BTreeMap<String, RuntimeConfig>,
    /// Period of the background GC; `None` disables it.
    pub gc_interval: Option<Duration>,
    /// Overrides the GC's grace period for unreferenced young objects.
    pub gc_grace: Option<Duration>,
    /// `Some(Mode::Copy)`: the copying snapshotter whatever overlayfs can do; `None` probes.
    pub snapshot_mode: Option<crate::snapshots::Mode>,
}

impl Config {
    /// Merges flags, the optional file and the defaults; `exe` is our own executable,
    /// whose directory is searched first for the shim and runtime binaries.
    pub fn load(flags: Flags, exe: &Path) -> Result<Config, ConfigError> {
        let file = match &flags.config {
            Some(path) => parse_file(path)?,
            None => FileConfig::default(),
        };
        let root = pick(flags.root, file.root, DEFAULT_ROOT, "--root")?;
        let state = pick(flags.state, file.state, DEFAULT_STATE, "--state")?;
        let address = pick(flags.address, file.address, DEFAULT_ADDRESS, "--address")?;

        // Binaries are only looked up when some runtime needs them, so a file that
        // names every binary works on a host without berth-shim installed.
        let mut runtimes = BTreeMap::new();
        let mut names: Vec<String> = DEFAULT_RUNTIMES.iter().map(|s| s.to_string()).collect();
        names.extend(file.runtimes.keys().cloned());
        names.sort();
        names.dedup();
        let mut empty = FileRuntime::default();
        let mut file_runtimes = file.runtimes;
        for name in names {
            let entry = file_runtimes.get_mut(&name).unwrap_or(&mut empty);
            let shim = match entry.shim.take().or_else(|| flags.shim.clone()) {
                Some(p) => p,
                None => find_binary(SHIM_BIN, exe, "shim")?,
            };
            let runtime = match entry.runtime.take().or_else(|| flags.runtime.clone()) {
                Some(p) => p,
                None => find_binary(RUNTIME_BIN, exe, "runtime")?,
            };
            // Shims start in the task dir and run the runtime from theirs, so a path
            // like `./bin/x` must not depend on the cwd; bare names go through $PATH.
            let (shim, runtime) = (anchored(shim), anchored(runtime));
            let runtime_root = entry.runtime_root.take();
            if let Some(rr) = &runtime_root {
                absolute("runtime_root", rr)?;
            }
            runtimes.insert(
                name,
                RuntimeConfig {
                    shim,
                    runtime,
                    runtime_root,
                },
            );
        }
        let gc_interval = match file.gc.interval {
            None => Some(DEFAULT_GC_INTERVAL),
            Some(0) => None,
            Some(secs) => Some(Duration::from_secs(secs)),
        };
        let snapshot_mode = match file.snapshotter.mode.as_deref() {
            None | Some("auto") => None,
            Some("copy") => Some(crate::snapshots::Mode::Copy),
            Some(other) => {
                return Err(ConfigError::Parse {
                    path: flags.config.clone().unwrap_or_default(),
                    message: format!(
                        "snapshotter.mode must be \"auto\" or \"copy\", got {other:?}"
                    ),
                })
            }
        };
        Ok(Config {
            root,
            state,
            address,
            runtimes,
            gc_interval,
            gc_grace: file.gc.grace.map(Duration::from_secs),
            snapshot_mode,
        })
    }

    /// The `--runtime-root` given to the shim for namespace `ns`.
    pub fn runtime_root(&self, rt: &RuntimeConfig, ns: &str) -> PathBuf {
        match &rt.runtime_root {
            Some(parent) => parent.join(ns),
            None => self.state.join("runtime").join(ns),
        }
    }
}

/// Makes a relative path with a directory part absolute against our cwd.
fn anchored(path: PathBuf) -> PathBuf {
    if path.is_relative() && path.components().count() > 1 {
        if let Ok(cwd) = std::env::current_dir() {
            return cwd.join(path);
        }
    }
    path
}

fn parse_file(path: &Path) -> Result<FileConfig, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.to_path_buf(),
        source,
    })?;
    toml::from_str(&text).map_err(|e| ConfigError::Parse {
        path: path.to_path_buf(),
        message: e.message().to_string(),
    })
}

fn pick(
    flag: Option<PathBuf>,
    file: Option<PathBuf>,
    default: &str,
    what: &'static str,
) -> Result<PathBuf, ConfigError> {
    let path = flag.or(file).unwrap_or_else(|| PathBuf::from(default));
    absolute(what, &path)?;
    Ok(path)
}

fn absolute(what: &'static str, path: &Path) -> Result<(), ConfigError> {
    if path.is_absolute() {
        Ok(())
    } else {
        Err(ConfigError::NotAbsolute {
            what,
            path: path.to_path_buf(),
        })
    }
}

/// Looks for `name` next to `exe`, then in each `$PATH` entry.
pub fn find_binary(
    name: &'static str,
    exe: &Path,
    flag: &'static str,
) -> Result<PathBuf, ConfigError> {
    find_binary_in(name, exe, flag, std::env::var_os("PATH"))
}

fn find_binary_in(
    name: &'static str,
    exe: &Path,
    flag: &'static str,
    path: Option<std::ffi::OsString>,
) -> Result<PathBuf, ConfigError> {
    let beside = exe.parent().map(|dir| dir.join(name));
    let in_path = path
        .map(|p| {
            std::env::split_paths(&p)
                .map(|d| d.join(name))
                .collect::<Vec<_>>()
        })
        .unwrap_or_default();
    beside
        .into_iter()
        .chain(in_path)
        .find(|p| is_executable(p))
        .ok_or_else(|| ConfigError::BinaryNotFound {
            name,
            exe: exe.to_path_buf(),
            flag,
        })
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path)
        .map(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn flags_with_bins() -> Flags {
        Flags {
            shim: Some("/bin/true".into()),
            runtime: Some("/usr/sbin/runc".into()),
            ..Flags::default()
        }
    }

    #[test]
    fn defaults_and_flag_overrides() {
        let cfg = Config::load(flags_with_bins(), Path::new("/nonexistent/berth-highd")).unwrap();
        assert_eq!(cfg.root, PathBuf::from(DEFAULT_ROOT));
        assert_eq!(cfg.address, PathBuf::from(DEFAULT_ADDRESS));
        assert_eq!(cfg.gc_interval, Some(DEFAULT_GC_INTERVAL));
        assert_eq!(cfg.gc_grace, None);
        for name in DEFAULT_RUNTIMES {
            let rt = &cfg.runtimes[name];
            assert_eq!(rt.shim, PathBuf::from("/bin/true"));
            assert_eq!(
                cfg.runtime_root(rt, "ns1"),
                PathBuf::from("/run/berth/highd/runtime/ns1")
            );
        }
    }

    #[test]
    fn file_entries_win_over_flags() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.toml");
        std::fs::write(
            &path,
            "state = \"/tmp/st\"\n[gc]\ninterval = 0\ngrace = 5\n[runtimes.\"io.containerd.runc.v2\"]\nruntime = \"/opt/crun\"\nruntime_root = \"/run/crun\"\n[runtimes.custom]\nshim = \"/opt/shim\"\n",
        )
        .unwrap();
        let flags = Flags {
            config: Some(path),
            ..flags_with_bins()
        };
        let cfg = Config::load(flags, Path::new("/x/berth-highd")).unwrap();
        assert_eq!(cfg.state, PathBuf::from("/tmp/st"));
        assert_eq!(
            (cfg.gc_interval, cfg.gc_grace),
            (None, Some(Duration::from_secs(5)))
        );
        let runc = &cfg.runtimes["io.containerd.runc.v2"];
        assert_eq!(runc.runtime, PathBuf::from("/opt/crun"));
        assert_eq!(cfg.runtime_root(runc, "a"), PathBuf::from("/run/crun/a"));
        assert_eq!(cfg.runtimes["custom"].shim, PathBuf::from("/opt/shim"));
        assert_eq!(
            cfg.runtimes["custom"].runtime,
            PathBuf::from("/usr/sbin/runc")
        );
    }

    #[test]
    fn snapshotter_mode_copy_auto_and_bad() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c.toml");
        let load = |text: &str| {
            std::fs::write(&path, text).unwrap();
            let flags = Flags {
                config: Some(path.clone()),
                ..flags_with_bins()
            };
            Config::load(flags, Path::new("/x/h"))
        };
        let mode = |text: &str| load(text).unwrap().snapshot_mode;
        assert_eq!(
            mode("[snapshotter]\nmode = \"copy\"\n"),
            Some(crate::snapshots::Mode::Copy)
        );
        assert_eq!(mode("[snapshotter]\nmode = \"auto\"\n"), None);
        assert_eq!(mode(""), None);
        let err = load("[snapshotter]\nmode = \"zfs\"\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("snapshotter.mode") && err.contains("zfs"),
            "{err}"
        );
    }

    #[test]
    fn bad_file_and_relative_paths_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bad.toml");
        std::fs::write(&path, "bogus = 1\n").unwrap();
        let flags = Flags {
            config: Some(path.clone()),
            ..flags_with_bins()
        };
        let err = Config::load(flags, Path::new("/x/h"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("bad.toml") && err.contains("bogus"), "{err}");
        let flags = Flags {
            root: Some("rel".into()),
            ..flags_with_bins()
        };
        let err = Config::load(flags, Path::new("/x/h"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("--root") && err.contains("rel"), "{err}");
    }

    #[test]
    fn relative_binaries_are_anchored() {
        let flags = Flags {
            shim: Some("./bin/shim".into()),
            runtime: Some("runc".into()),
            ..Flags::default()
        };
        let cfg = Config::load(flags, Path::new("/x/h")).unwrap();
        let rt = &cfg.runtimes[DEFAULT_RUNTIMES[0]];
        assert!(
            rt.shim.is_absolute() && rt.shim.ends_with("bin/shim"),
            "{rt:?}"
        );
        assert_eq!(
            rt.runtime,
            PathBuf::from("runc"),
            "bare names stay for $PATH"
        );
    }

    #[test]
    fn missing_binary_is_named() {
        let path = Some("/nonexistent-berth".into());
        let err = find_binary_in(SHIM_BIN, Path::new("/nonexistent/h"), "shim", path)
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("berth-shim") && err.contains("--shim"),
            "{err}"
        );
    }
}
