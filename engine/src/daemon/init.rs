//! `--init`: a tiny init (Debian's static tini by default) bind-mounted read-only at
//! `/sbin/docker-init` and put in front of the container's command, as dockerd does with
//! docker-init. It reaps zombies and forwards signals to the command.

use std::path::{Path, PathBuf};

use serde_json::{json, Value};

use super::{DaemonError, DaemonResult};

/// Where the init binary appears inside the container (dockerd's path).
pub const INIT_TARGET: &str = "/sbin/docker-init";
/// Debian's `tini` package; statically linked, so it runs in any image.
pub const DEFAULT_INIT_PATH: &str = "/usr/bin/tini-static";

/// The engine's `--init` (daemon.json `"init"`) default and `--init-path`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InitConfig {
    pub default: bool,
    pub path: PathBuf,
}

impl Default for InitConfig {
    fn default() -> Self {
        Self {
            default: false,
            path: PathBuf::from(DEFAULT_INIT_PATH),
        }
    }
}

/// Adds the init to a container spec: the read-only bind mount and `docker-init --` in
/// front of the arguments. A missing binary is refused here, before anything is created.
pub fn apply(spec: &mut Value, init_path: &Path) -> DaemonResult<()> {
    let meta = std::fs::metadata(init_path).map_err(|source| DaemonError::InitBinary {
        path: init_path.to_path_buf(),
        source,
    })?;
    if !meta.is_file() {
        return Err(DaemonError::InitBinary {
            path: init_path.to_path_buf(),
            source: std::io::Error::new(std::io::ErrorKind::InvalidInput, "not a regular file"),
        });
    }
    if let Some(mounts) = spec["mounts"].as_array_mut() {
        mounts.push(json!({
            "destination": INIT_TARGET, "type": "bind",
            "source": init_path.to_string_lossy(), "options": ["bind", "ro"],
        }));
    }
    let args = spec["process"]["args"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let mut with_init = vec![json!(INIT_TARGET), json!("--")];
    with_init.extend(args);
    spec["process"]["args"] = Value::Array(with_init);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_goes_first_and_is_mounted_read_only() {
        let dir = tempfile::tempdir().unwrap();
        let bin = dir.path().join("tini");
        std::fs::write(&bin, b"").unwrap();
        let mut spec = json!({"process": {"args": ["sleep", "5"]}, "mounts": []});
        apply(&mut spec, &bin).unwrap();
        assert_eq!(
            spec["process"]["args"],
            json!(["/sbin/docker-init", "--", "sleep", "5"])
        );
        assert_eq!(spec["mounts"][0]["destination"], INIT_TARGET);
        assert_eq!(spec["mounts"][0]["options"], json!(["bind", "ro"]));
    }

    #[test]
    fn a_missing_binary_is_named() {
        let mut spec = json!({"process": {"args": ["true"]}, "mounts": []});
        let e = apply(&mut spec, Path::new("/nonexistent/tini")).unwrap_err();
        assert!(e.to_string().contains("/nonexistent/tini"), "{e}");
    }
}
