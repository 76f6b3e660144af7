//! containerd's runc runtime options (`containerd.runc.v1.Options`), the Any that ctr
//! (`--runc-binary`, `--runc-root`, `--runc-systemd-cgroup`, `--no-pivot`) and dockerd put
//! in a container's `runtime.options` or a task Create's `options`. Like containerd's
//! runc shim, they choose the runtime binary, its root, its cgroup driver and the shim's
//! own cgroup for this one task, over what the config file says for the runtime name.
//! The rest (`no_pivot_root`, `no_new_keyring`, `io_uid`/`io_gid`) travel to the shim in
//! its Create request, which applies them.

use std::path::{Path, PathBuf};

use berth_proto::containerd::runc::v1::Options;
use prost::Message;
use serde::{Deserialize, Serialize};

use super::TaskError;
use crate::config::{Config, RuntimeConfig};

/// The message's full name; type URLs end with it (ctr sends it bare).
const RUNC_OPTIONS: &str = "containerd.runc.v1.Options";

/// The runtime a task runs with, once the options are applied. Recorded in the task dir
/// (`runtime.json`) so that clean-up after a restart uses the same binary and root.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TaskRuntime {
    pub runtime: PathBuf,
    pub runtime_root: PathBuf,
    #[serde(default)]
    pub systemd_cgroup: bool,
    /// `--cgroup` of `berth-shim start` (containerd's `ShimCgroup`).
    #[serde(default)]
    pub shim_cgroup: Option<String>,
}

impl TaskRuntime {
    /// The runtime name's configuration with `options` applied on top.
    pub fn resolve(
        cfg: &Config,
        rt: &RuntimeConfig,
        ns: &str,
        options: Option<&prost_types::Any>,
    ) -> Result<TaskRuntime, TaskError> {
        let mut out = TaskRuntime {
            runtime: rt.runtime.clone(),
            runtime_root: cfg.runtime_root(rt, ns),
            systemd_cgroup: false,
            shim_cgroup: None,
        };
        let Some(opts) = decode(options)? else {
            return Ok(out);
        };
        let invalid = |reason: String| TaskError::InvalidArgument {
            what: "runc options",
            reason,
        };
        // NoPivotRoot, NoNewKeyring and IoUid/IoGid are the shim's to apply: it gets the
        // options with its Create. Checkpoints are not supported anywhere.
        if !(opts.criu_path.is_empty()
            && opts.criu_image_path.is_empty()
            && opts.criu_work_path.is_empty())
        {
            return Err(TaskError::Unimplemented {
                what: "runc options criu_path/criu_image_path/criu_work_path",
            });
        }
        if !opts.binary_name.is_empty() {
            out.runtime = PathBuf::from(&opts.binary_name);
        }
        if !opts.root.is_empty() {
            let root = Path::new(&opts.root);
            if !root.is_absolute() {
                return Err(invalid(format!(
                    "root {:?} is not an absolute path",
                    opts.root
                )));
            }
            // containerd's runc shim: <root>/<namespace>.
            out.runtime_root = root.join(ns);
        }
        out.systemd_cgroup = opts.systemd_cgroup;
        if !opts.shim_cgroup.is_empty() {
            if !opts.shim_cgroup.starts_with('/') {
                return Err(invalid(format!(
                    "shim_cgroup {:?} is not an absolute cgroup path",
                    opts.shim_cgroup
                )));
            }
            out.shim_cgroup = Some(opts.shim_cgroup);
        }
        Ok(out)
    }
}

/// The runc options in `any`; `None` without options or for another runtime's type
/// (e.g. ctr's `runtimeoptions.v1.Options` of `--runtime-config-path`), which berth-shim
/// has no use for.
fn decode(any: Option<&prost_types::Any>) -> Result<Option<Options>, TaskError> {
    let Some(any) = any else { return Ok(None) };
    if !any.type_url.ends_with(RUNC_OPTIONS) {
        tracing::debug!(type_url = %any.type_url, "runtime options ignored");
        return Ok(None);
    }
    Options::decode(any.value.as_slice())
        .map(Some)
        .map_err(|e| TaskError::InvalidArgument {
            what: "runc options",
            reason: format!("cannot decode {}: {e}", any.type_url),
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cfg() -> (Config, RuntimeConfig) {
        let rt = RuntimeConfig {
            shim: "/bin/berth-shim".into(),
            runtime: "/bin/berth-lowrt".into(),
            runtime_root: None,
        };
        let cfg = Config {
            root: "/r".into(),
            state: "/s".into(),
            address: "/a.sock".into(),
            runtimes: BTreeMap::new(),
            gc_interval: None,
            gc_grace: None,
            snapshot_mode: None,
        };
        (cfg, rt)
    }

    fn any(o: Options) -> prost_types::Any {
        prost_types::Any {
            type_url: RUNC_OPTIONS.into(),
            value: o.encode_to_vec(),
        }
    }

    #[test]
    fn options_override_the_configured_runtime() {
        let (cfg, rt) = cfg();
        let plain = TaskRuntime::resolve(&cfg, &rt, "ns", None).unwrap();
        assert_eq!(plain.runtime, Path::new("/bin/berth-lowrt"));
        assert_eq!(plain.runtime_root, Path::new("/s/runtime/ns"));
        let empty = TaskRuntime::resolve(&cfg, &rt, "ns", Some(&any(Options::default())));
        assert_eq!(
            empty.unwrap(),
            plain,
            "ctr always sends (often empty) options"
        );
        let o = Options {
            binary_name: "runc".into(),
            root: "/run/other".into(),
            systemd_cgroup: true,
            shim_cgroup: "/berth/shims".into(),
            ..Default::default()
        };
        let mut a = any(o);
        a.type_url = format!("type.googleapis.com/{RUNC_OPTIONS}");
        let got = TaskRuntime::resolve(&cfg, &rt, "ns", Some(&a)).unwrap();
        assert_eq!(
            got,
            TaskRuntime {
                runtime: "runc".into(),
                runtime_root: "/run/other/ns".into(),
                systemd_cgroup: true,
                shim_cgroup: Some("/berth/shims".into()),
            }
        );
        let other = prost_types::Any {
            type_url: "runtimeoptions.v1.Options".into(),
            value: vec![1, 2, 3],
        };
        assert_eq!(
            TaskRuntime::resolve(&cfg, &rt, "ns", Some(&other)).unwrap(),
            plain
        );
    }

    #[test]
    fn bad_or_unsupported_options_are_refused_by_name() {
        let (cfg, rt) = cfg();
        let check = |o: Options, words: &[&str]| {
            let err = TaskRuntime::resolve(&cfg, &rt, "ns", Some(&any(o))).unwrap_err();
            for w in words {
                assert!(err.to_string().contains(w), "{err} lacks {w}");
            }
        };
        check(
            Options {
                root: "rel".into(),
                ..Default::default()
            },
            &["root", "absolute"],
        );
        check(
            Options {
                shim_cgroup: "shims".into(),
                ..Default::default()
            },
            &["shim_cgroup", "absolute"],
        );
        check(
            Options {
                criu_work_path: "/tmp/criu".into(),
                ..Default::default()
            },
            &["criu_work_path", "not implemented"],
        );
        let garbage = prost_types::Any {
            type_url: RUNC_OPTIONS.into(),
            value: vec![0xff, 0xff],
        };
        let err = TaskRuntime::resolve(&cfg, &rt, "ns", Some(&garbage)).unwrap_err();
        assert!(err.to_string().contains("cannot decode"), "{err}");
    }
}
