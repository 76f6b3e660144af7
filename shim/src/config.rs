//! The shim's command-line flags, shared by `start` and the `serve` daemon it re-executes.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("invalid namespace {namespace:?}")]
    Namespace {
        namespace: String,
        #[source]
        source: berth_proto::ProtoError,
    },
    #[error("invalid task id {id:?}")]
    Id {
        id: String,
        #[source]
        source: berth_proto::ProtoError,
    },
    #[error("bundle {path} is not an absolute path to a directory")]
    Bundle { path: PathBuf },
    #[error("highd address {path} is not an absolute path")]
    Address { path: PathBuf },
    #[error("runtime {name} not found (searched $PATH and next to berth-shim)")]
    RuntimeNotFound { name: PathBuf },
    #[error(transparent)]
    Cgroup(#[from] crate::cgroup::CgroupError),
}

/// Flags of `berth-shim start` (docs/ARCHITECTURE.md, "Command lines").
#[derive(Debug, Clone, clap::Args)]
pub struct ShimConfig {
    /// containerd namespace of the task (sent with every event).
    #[arg(long)]
    pub namespace: String,
    /// Task (container) id.
    #[arg(long)]
    pub id: String,
    /// Task directory: the OCI bundle, and where the shim keeps its files.
    #[arg(long)]
    pub bundle: PathBuf,
    /// highd's socket, for publishing events.
    #[arg(long)]
    pub address: PathBuf,
    /// OCI runtime binary with runc's command line.
    #[arg(long, default_value = "berth-lowrt")]
    pub runtime: PathBuf,
    /// The runtime's `--root`.
    #[arg(long)]
    pub runtime_root: Option<PathBuf>,
    /// Pass the runtime its global `--systemd-cgroup` (containerd's `SystemdCgroup`).
    #[arg(long)]
    pub systemd_cgroup: bool,
    /// Log at debug level.
    #[arg(long)]
    pub debug: bool,
    /// cgroup (absolute path within each hierarchy) the daemon moves itself into,
    /// created if missing, so it is not accounted to its caller.
    #[arg(long)]
    pub cgroup: Option<String>,
}

impl ShimConfig {
    /// Checks every flag and resolves the runtime to an absolute path, so the daemon
    /// never fails later on something `start` could have reported.
    pub fn validate(&mut self) -> Result<(), ConfigError> {
        berth_proto::namespace::validate_identifier(&self.namespace).map_err(|source| {
            ConfigError::Namespace {
                namespace: self.namespace.clone(),
                source,
            }
        })?;
        berth_proto::namespace::validate_identifier(&self.id).map_err(|source| {
            ConfigError::Id {
                id: self.id.clone(),
                source,
            }
        })?;
        if !self.bundle.is_absolute() || !self.bundle.is_dir() {
            return Err(ConfigError::Bundle {
                path: self.bundle.clone(),
            });
        }
        if !self.address.is_absolute() {
            return Err(ConfigError::Address {
                path: self.address.clone(),
            });
        }
        if let Some(cgroup) = &self.cgroup {
            crate::cgroup::place::validate_path(cgroup)?;
        }
        self.runtime =
            resolve_binary(&self.runtime).ok_or_else(|| ConfigError::RuntimeNotFound {
                name: self.runtime.clone(),
            })?;
        Ok(())
    }

    pub fn socket_path(&self) -> PathBuf {
        self.bundle.join("shim.sock")
    }

    pub fn log_path(&self) -> PathBuf {
        self.bundle.join("shim.log")
    }

    /// The flags again, for re-executing as the daemon.
    pub fn to_args(&self) -> Vec<OsString> {
        let mut args: Vec<OsString> = vec![
            "--namespace".into(),
            self.namespace.clone().into(),
            "--id".into(),
            self.id.clone().into(),
            "--bundle".into(),
            self.bundle.clone().into(),
            "--address".into(),
            self.address.clone().into(),
            "--runtime".into(),
            self.runtime.clone().into(),
        ];
        if let Some(root) = &self.runtime_root {
            args.extend(["--runtime-root".into(), root.clone().into()]);
        }
        if self.systemd_cgroup {
            args.push("--systemd-cgroup".into());
        }
        if self.debug {
            args.push("--debug".into());
        }
        if let Some(cgroup) = &self.cgroup {
            args.extend(["--cgroup".into(), cgroup.into()]);
        }
        args
    }
}

fn resolve_binary(name: &Path) -> Option<PathBuf> {
    let executable = |p: &Path| {
        use std::os::unix::fs::PermissionsExt;
        std::fs::metadata(p).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
    };
    if name.components().count() > 1 {
        let abs = std::path::absolute(name).ok()?;
        return executable(&abs).then_some(abs);
    }
    let path_dirs = std::env::var_os("PATH").unwrap_or_default();
    let own_dir = std::env::current_exe()
        .ok()
        .and_then(|e| e.parent().map(Path::to_owned));
    std::env::split_paths(&path_dirs)
        .chain(own_dir)
        .map(|dir| dir.join(name))
        .find(|p| executable(p))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config(dir: &Path) -> ShimConfig {
        ShimConfig {
            namespace: "default".into(),
            id: "c1".into(),
            bundle: dir.to_owned(),
            address: "/run/x.sock".into(),
            runtime: "sh".into(),
            runtime_root: None,
            systemd_cgroup: false,
            debug: false,
            cgroup: None,
        }
    }

    #[test]
    fn resolves_runtime_and_rejects_bad_flags() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mut ok = config(dir.path());
        ok.validate().expect("valid");
        assert!(ok.runtime.is_absolute());
        let mut bad = config(dir.path());
        bad.id = "../x".into();
        assert!(matches!(bad.validate(), Err(ConfigError::Id { .. })));
        let mut bad = config(dir.path());
        bad.runtime = "no-such-runtime-xyz".into();
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("no-such-runtime-xyz"), "{err}");
        let mut bad = config(&dir.path().join("missing"));
        assert!(matches!(bad.validate(), Err(ConfigError::Bundle { .. })));
        let mut bad = config(dir.path());
        bad.cgroup = Some("shims".into());
        let err = bad.validate().unwrap_err();
        assert!(err.to_string().contains("invalid shim cgroup"), "{err}");
    }
}
