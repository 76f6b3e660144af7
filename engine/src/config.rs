//! The engine's validated configuration and its top-level `run`.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::backend::grpc::GrpcBackend;
use crate::daemon::{Daemon, DaemonConfig, DaemonError};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("unsupported host {host:?}: only unix:///path sockets are supported")]
    Host { host: String },
    #[error("invalid cgroup parent {parent:?}: it must be an absolute path")]
    CgroupParent { parent: String },
    #[error("prepare {path}: {source}")]
    Prepare {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("listen on {path}: {source}")]
    Listen {
        path: PathBuf,
        source: berth_proto::ProtoError,
    },
    #[error(transparent)]
    Daemon(#[from] DaemonError),
    #[error("networking: {0}")]
    Network(#[from] crate::network::NetworkError),
    #[error("serve: {source}")]
    Serve { source: std::io::Error },
    #[error("install signal handler: {source}")]
    Signal { source: std::io::Error },
    #[error("unable to configure the engine with file {path}: {message}")]
    ConfigFile { path: PathBuf, message: String },
    #[error(transparent)]
    Registry(#[from] crate::registry::RegistryError),
}

/// The daemon.json keys Berth supports (dockerd's names).
const CONFIG_FILE_KEYS: &[&str] = &[
    "init",
    "init-path",
    "insecure-registries",
    "cpu-rt-period",
    "cpu-rt-runtime",
    "max-concurrent-uploads",
    "max-concurrent-downloads",
    "registry-mirrors",
];

/// daemon.json's keys, checked against the supported ones as dockerd checks them (an
/// unknown key is an error). A missing file is an empty one unless it was named
/// explicitly (`required`).
pub fn read_config_file(
    file: &Path,
    required: bool,
) -> Result<serde_json::Map<String, serde_json::Value>, EngineError> {
    let bad = |message: String| EngineError::ConfigFile {
        path: file.to_path_buf(),
        message,
    };
    let raw = match std::fs::read(file) {
        Ok(raw) => raw,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound && !required => {
            return Ok(Default::default())
        }
        Err(e) => return Err(bad(e.to_string())),
    };
    let v: serde_json::Map<String, serde_json::Value> =
        serde_json::from_slice(&raw).map_err(|e| bad(e.to_string()))?;
    let unknown: Vec<&str> = v
        .keys()
        .map(String::as_str)
        .filter(|k| !CONFIG_FILE_KEYS.contains(k))
        .collect();
    if !unknown.is_empty() {
        return Err(bad(format!(
            "the following directives don't match any configuration option: {}",
            unknown.join(", ")
        )));
    }
    Ok(v)
}

/// `--insecure-registry` merged with daemon.json's `"insecure-registries"` (a list of
/// strings); like every dockerd directive, giving it both ways is an error.
pub fn insecure_registries(
    file: &Path,
    v: &serde_json::Map<String, serde_json::Value>,
    flag: Vec<String>,
) -> Result<Vec<String>, EngineError> {
    string_list(file, v, "insecure-registries", flag)
}

/// A daemon.json list of strings under `key`, or the repeatable flag's values when the
/// file has none; both at once is dockerd's error.
fn string_list(
    file: &Path,
    v: &serde_json::Map<String, serde_json::Value>,
    key: &str,
    flag: Vec<String>,
) -> Result<Vec<String>, EngineError> {
    let bad = |message: String| EngineError::ConfigFile {
        path: file.to_path_buf(),
        message,
    };
    let Some(list) = v.get(key) else {
        return Ok(flag);
    };
    let from_file = list
        .as_array()
        .and_then(|a| {
            a.iter()
                .map(|e| e.as_str().map(str::to_string))
                .collect::<Option<Vec<_>>>()
        })
        .ok_or_else(|| bad(format!("\"{key}\" must be a list of strings")))?;
    if !flag.is_empty() {
        return Err(bad(format!("the following directives are specified both as a flag and in the configuration file: {key}: (from flag: [{}], from file: [{}])", flag.join(" "), from_file.join(" "))));
    }
    Ok(from_file)
}

/// `--max-concurrent-downloads` and `--registry-mirror` merged with daemon.json's
/// `"max-concurrent-downloads"` and `"registry-mirrors"`: a key given both ways is an
/// error, a negative count is dockerd's "invalid max concurrent downloads", 0 is the
/// default, and each mirror is checked as dockerd checks it.
pub fn pull_settings(
    file: &Path,
    v: &serde_json::Map<String, serde_json::Value>,
    flag_max: Option<i64>,
    flag_mirrors: Vec<String>,
) -> Result<crate::registry::settings::PullSettings, EngineError> {
    use crate::registry::settings::{parse_mirror, PullSettings, DEFAULT_MAX_CONCURRENT_DOWNLOADS};
    let bad = |message: String| EngineError::ConfigFile {
        path: file.to_path_buf(),
        message,
    };
    let both = |key: &str, flag: String, from_file: String| {
        bad(format!("the following directives are specified both as a flag and in the configuration file: {key}: (from flag: {flag}, from file: {from_file})"))
    };
    let max = match v.get("max-concurrent-downloads") {
        None => flag_max,
        Some(raw) => {
            let n = raw
                .as_i64()
                .ok_or_else(|| bad("\"max-concurrent-downloads\" must be an integer".into()))?;
            if let Some(f) = flag_max {
                return Err(both(
                    "max-concurrent-downloads",
                    f.to_string(),
                    n.to_string(),
                ));
            }
            Some(n)
        }
    };
    let max = match max {
        Some(n) if n < 0 => {
            return Err(bad(format!("invalid max concurrent downloads: {n}")));
        }
        Some(n) if n > 0 => usize::try_from(n).unwrap_or(usize::MAX),
        _ => DEFAULT_MAX_CONCURRENT_DOWNLOADS,
    };
    let mirrors = string_list(file, v, "registry-mirrors", flag_mirrors)?;
    let mirrors = mirrors
        .iter()
        .map(|m| parse_mirror(m))
        .collect::<Result<Vec<_>, _>>()?;
    Ok(PullSettings {
        max_concurrent_downloads: max,
        mirrors,
    })
}

/// `--cpu-rt-period`/`--cpu-rt-runtime` merged with daemon.json's keys of the same names
/// (integers); a key given both ways is an error, as for every dockerd directive.
pub fn rt_budget(
    file: &Path,
    v: &serde_json::Map<String, serde_json::Value>,
    flag_period: Option<i64>,
    flag_runtime: Option<i64>,
) -> Result<crate::daemon::RtBudget, EngineError> {
    let pick = |key: &str, flag: Option<i64>| -> Result<Option<i64>, EngineError> {
        let bad = |message: String| EngineError::ConfigFile {
            path: file.to_path_buf(),
            message,
        };
        let Some(raw) = v.get(key) else {
            return Ok(flag);
        };
        let n = raw
            .as_i64()
            .ok_or_else(|| bad(format!("\"{key}\" must be an integer")))?;
        if let Some(f) = flag {
            return Err(bad(format!("the following directives are specified both as a flag and in the configuration file: {key}: (from flag: {f}, from file: {n})")));
        }
        Ok(Some(n))
    };
    Ok(crate::daemon::RtBudget {
        period: pick("cpu-rt-period", flag_period)?,
        runtime: pick("cpu-rt-runtime", flag_runtime)?,
    })
}

/// `--max-concurrent-uploads` merged with daemon.json's key of the same name (dockerd's
/// default 5 when neither is given; 0 means the default, a negative count is an error).
pub fn max_concurrent_uploads(
    file: &Path,
    v: &serde_json::Map<String, serde_json::Value>,
    flag: Option<i64>,
) -> Result<usize, EngineError> {
    let key = "max-concurrent-uploads";
    let bad = |message: String| EngineError::ConfigFile {
        path: file.to_path_buf(),
        message,
    };
    let n = match (v.get(key), flag) {
        (None, f) => f,
        (Some(raw), None) => Some(
            raw.as_i64()
                .ok_or_else(|| bad(format!("\"{key}\" must be an integer")))?,
        ),
        (Some(raw), Some(f)) => return Err(bad(format!("the following directives are specified both as a flag and in the configuration file: {key}: (from flag: {f}, from file: {raw})"))),
    };
    match n {
        Some(n) if n < 0 => Err(bad(format!("invalid max concurrent uploads: {n}"))),
        Some(n) if n > 0 => Ok(usize::try_from(n).unwrap_or(usize::MAX)),
        _ => Ok(crate::registry::DEFAULT_MAX_CONCURRENT_UPLOADS),
    }
}

/// `--init`/`--init-path` merged with daemon.json (`"init"`, `"init-path"`) as dockerd
/// merges flags and file: a key given both ways is an error.
pub fn init_config(
    file: &Path,
    v: &serde_json::Map<String, serde_json::Value>,
    flag_init: bool,
    flag_path: Option<PathBuf>,
) -> Result<crate::daemon::InitConfig, EngineError> {
    let bad = |message: String| EngineError::ConfigFile {
        path: file.to_path_buf(),
        message,
    };
    let mut out = crate::daemon::InitConfig {
        default: flag_init,
        path: flag_path
            .clone()
            .unwrap_or_else(|| PathBuf::from(crate::daemon::DEFAULT_INIT_PATH)),
    };
    if let Some(init) = v.get("init") {
        let init = init
            .as_bool()
            .ok_or_else(|| bad("\"init\" must be a boolean".into()))?;
        if flag_init {
            return Err(bad(format!("the following directives are specified both as a flag and in the configuration file: init: (from flag: true, from file: {init})")));
        }
        out.default = init;
    }
    if let Some(p) = v.get("init-path") {
        let p = p
            .as_str()
            .ok_or_else(|| bad("\"init-path\" must be a string".into()))?;
        if let Some(f) = &flag_path {
            return Err(bad(format!("the following directives are specified both as a flag and in the configuration file: init-path: (from flag: {}, from file: {p})", f.display())));
        }
        out.path = PathBuf::from(p);
    }
    Ok(out)
}

#[derive(Debug, Clone)]
pub struct Config {
    pub data_root: PathBuf,
    pub exec_root: PathBuf,
    /// Path of the API socket (from `-H unix://PATH`).
    pub socket: PathBuf,
    pub containerd: PathBuf,
    pub namespace: String,
    pub cgroup_parent: String,
    /// Bridge networking; `None` leaves containers an empty network namespace.
    pub network: Option<crate::network::NetworkConfig>,
    /// `--init` default and `--init-path`.
    pub init: crate::daemon::InitConfig,
    pub rt_budget: crate::daemon::RtBudget,
}

impl Config {
    pub fn new(
        data_root: PathBuf,
        exec_root: PathBuf,
        host: &str,
        containerd: PathBuf,
        namespace: String,
        cgroup_parent: String,
    ) -> Result<Self, EngineError> {
        let socket = host
            .strip_prefix("unix://")
            .filter(|p| p.starts_with('/'))
            .ok_or_else(|| EngineError::Host { host: host.into() })?;
        if !cgroup_parent.starts_with('/') {
            return Err(EngineError::CgroupParent {
                parent: cgroup_parent,
            });
        }
        Ok(Self {
            data_root,
            exec_root,
            socket: PathBuf::from(socket),
            containerd,
            namespace,
            cgroup_parent,
            network: None,
            init: Default::default(),
            rt_budget: Default::default(),
        })
    }
}

/// Binds the API socket with mode 0660; a stale socket from an earlier run is replaced,
/// a live one (another engine) is an error.
fn bind(path: &Path) -> Result<tokio::net::UnixListener, EngineError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|source| EngineError::Prepare {
            path: dir.to_path_buf(),
            source,
        })?;
    }
    berth_proto::transport::bind_unix(path).map_err(|source| EngineError::Listen {
        path: path.to_path_buf(),
        source,
    })
}

/// Creates `dir` if missing and sets its mode, also when it already existed with a wider one.
fn prepare_dir(dir: &Path, mode: u32) -> Result<(), EngineError> {
    use std::os::unix::fs::PermissionsExt;
    let prepare = |source| EngineError::Prepare {
        path: dir.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(prepare)?;
    std::fs::set_permissions(dir, std::fs::Permissions::from_mode(mode)).map_err(prepare)
}

/// Runs the engine until the listener fails.
pub async fn run(config: Config) -> Result<(), EngineError> {
    // Container records, logs (which can hold secrets) and exec FIFOs are root's alone, as
    // with dockerd's 0710 data root and 0700 exec root; the group bit lets an admin group
    // traverse to what it is given explicitly.
    prepare_dir(&config.data_root, 0o710)?;
    prepare_dir(&config.exec_root, 0o700)?;
    let backend = Arc::new(
        GrpcBackend::new(&config.containerd, &config.namespace).map_err(DaemonError::from)?,
    );
    let daemon = Arc::new(Daemon::new(
        backend,
        DaemonConfig {
            data_root: config.data_root.clone(),
            exec_root: config.exec_root.clone(),
            cgroup_parent: config.cgroup_parent.clone(),
            init: config.init.clone(),
            rt_budget: config.rt_budget,
        },
    )?);
    if let Some(net) = config.network.clone() {
        let live = daemon.store.list().into_iter().map(|r| r.id).collect();
        let upstreams = net.dns_upstreams.clone();
        let mgr = crate::network::Manager::open(net, &config.data_root, &config.exec_root, &live)?;
        let _ = daemon.network.set(Arc::new(mgr));
        crate::network::dns_server::install(&daemon, upstreams);
    }
    let listener = bind(&config.socket)?;
    tracing::info!(socket = %config.socket.display(), highd = %config.containerd.display(), "berth-engine listening");
    let events = Arc::clone(&daemon);
    tokio::spawn(events.run_event_loop());
    let result = tokio::select! {
        r = crate::api::serve(listener, Arc::clone(&daemon)) => r.map_err(|source| EngineError::Serve { source }),
        r = shutdown_signal() => r,
    };
    // Containers live on under their shims; only the socket goes away (and the bridge
    // when no container uses it).
    let _ = std::fs::remove_file(&config.socket);
    if let Some(net) = daemon.network.get() {
        if let Err(e) = net.shutdown() {
            tracing::warn!(error = %e, "network cleanup at shutdown failed");
        }
    }
    result
}

/// Resolves on SIGTERM or SIGINT: the engine stops serving and exits 0.
async fn shutdown_signal() -> Result<(), EngineError> {
    use tokio::signal::unix::{signal, SignalKind};
    let err = |source| EngineError::Signal { source };
    let mut term = signal(SignalKind::terminate()).map_err(err)?;
    let mut int = signal(SignalKind::interrupt()).map_err(err)?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM: shutting down"),
        _ = int.recv() => tracing::info!("SIGINT: shutting down"),
    }
    Ok(())
}

#[cfg(test)]
mod prepare_dir_tests {
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn roots_are_created_or_narrowed_to_their_mode() {
        let tmp = tempfile::tempdir().unwrap();
        let fresh = tmp.path().join("a/b");
        super::prepare_dir(&fresh, 0o710).unwrap();
        let mode =
            |p: &std::path::Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode(&fresh), 0o710);

        let wide = tmp.path().join("wide");
        std::fs::create_dir(&wide).unwrap();
        std::fs::set_permissions(&wide, std::fs::Permissions::from_mode(0o755)).unwrap();
        super::prepare_dir(&wide, 0o700).unwrap();
        assert_eq!(mode(&wide), 0o700);
    }
}

#[cfg(test)]
mod config_file_tests {
    use super::{insecure_registries, pull_settings, read_config_file, rt_budget};

    #[test]
    fn rt_budget_from_the_flags_or_the_file_not_both() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("daemon.json");
        std::fs::write(&file, r#"{"cpu-rt-runtime": 950000}"#).unwrap();
        let v = read_config_file(&file, true).unwrap();
        let b = rt_budget(&file, &v, Some(1_000_000), None).unwrap();
        assert_eq!((b.period, b.runtime), (Some(1_000_000), Some(950_000)));
        let both = rt_budget(&file, &v, None, Some(5)).unwrap_err().to_string();
        assert!(
            both.contains("specified both as a flag and in the configuration file: cpu-rt-runtime: (from flag: 5, from file: 950000)"),
            "{both}"
        );
        std::fs::write(&file, r#"{"cpu-rt-period": "x"}"#).unwrap();
        let v = read_config_file(&file, true).unwrap();
        let bad = rt_budget(&file, &v, None, None).unwrap_err().to_string();
        assert!(
            bad.contains("\"cpu-rt-period\" must be an integer"),
            "{bad}"
        );
    }

    #[test]
    fn max_concurrent_uploads_from_flag_or_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("daemon.json");
        let none = serde_json::Map::new();
        assert_eq!(
            super::max_concurrent_uploads(&file, &none, None).unwrap(),
            5
        );
        assert_eq!(
            super::max_concurrent_uploads(&file, &none, Some(2)).unwrap(),
            2
        );
        let v = serde_json::json!({"max-concurrent-uploads": 3});
        let v = v.as_object().unwrap();
        assert_eq!(super::max_concurrent_uploads(&file, v, None).unwrap(), 3);
        assert!(super::max_concurrent_uploads(&file, v, Some(1)).is_err());
        let e = super::max_concurrent_uploads(&file, &none, Some(-1)).unwrap_err();
        assert!(
            e.to_string().contains("invalid max concurrent uploads: -1"),
            "{e}"
        );
    }

    #[test]
    fn insecure_registries_come_from_the_flag_or_the_file_not_both() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("daemon.json");
        std::fs::write(&file, r#"{"insecure-registries": ["10.0.0.1:5000"]}"#).unwrap();
        let v = read_config_file(&file, true).unwrap();
        assert_eq!(
            insecure_registries(&file, &v, vec![]).unwrap(),
            ["10.0.0.1:5000"]
        );
        let both = insecure_registries(&file, &v, vec!["a:1".into()])
            .unwrap_err()
            .to_string();
        assert!(
            both.contains("specified both as a flag and in the configuration file: insecure-registries: (from flag: [a:1], from file: [10.0.0.1:5000])"),
            "{both}"
        );

        std::fs::write(&file, r#"{"insecure-registries": "10.0.0.1"}"#).unwrap();
        let v = read_config_file(&file, true).unwrap();
        let bad = insecure_registries(&file, &v, vec![])
            .unwrap_err()
            .to_string();
        assert!(bad.contains("must be a list of strings"), "{bad}");

        std::fs::write(&file, r#"{"registry-mirror": []}"#).unwrap();
        let unknown = read_config_file(&file, true).unwrap_err().to_string();
        assert!(
            unknown.contains("don't match any configuration option: registry-mirror"),
            "{unknown}"
        );
        let missing = tmp.path().join("none.json");
        assert!(read_config_file(&missing, false).unwrap().is_empty());
        assert!(read_config_file(&missing, true).is_err());
    }

    #[test]
    fn pull_settings_from_the_flags_or_the_file_not_both() {
        let tmp = tempfile::tempdir().unwrap();
        let file = tmp.path().join("daemon.json");
        let none = serde_json::Map::new();
        let d = pull_settings(&file, &none, None, vec![]).unwrap();
        assert_eq!((d.max_concurrent_downloads, d.mirrors.len()), (3, 0));
        assert_eq!(
            pull_settings(&file, &none, Some(0), vec![])
                .unwrap()
                .max_concurrent_downloads,
            3
        );
        let neg = pull_settings(&file, &none, Some(-1), vec![]).unwrap_err();
        assert!(neg
            .to_string()
            .contains("invalid max concurrent downloads: -1"));
        let bad_mirror = pull_settings(&file, &none, None, vec!["ftp://m".into()]).unwrap_err();
        assert!(
            bad_mirror.to_string().contains("invalid mirror"),
            "{bad_mirror}"
        );

        std::fs::write(
            &file,
            r#"{"max-concurrent-downloads": 1, "registry-mirrors": ["http://127.0.0.1:5000"]}"#,
        )
        .unwrap();
        let v = read_config_file(&file, true).unwrap();
        let s = pull_settings(&file, &v, None, vec![]).unwrap();
        assert_eq!(s.max_concurrent_downloads, 1);
        assert_eq!(s.mirrors[0].host, "127.0.0.1:5000");
        assert!(s.mirrors[0].plain_http);
        let both = pull_settings(&file, &v, Some(2), vec![])
            .unwrap_err()
            .to_string();
        assert!(
            both.contains("max-concurrent-downloads: (from flag: 2, from file: 1)"),
            "{both}"
        );
        let both = pull_settings(&file, &v, None, vec!["https://m".into()])
            .unwrap_err()
            .to_string();
        assert!(
            both.contains("registry-mirrors: (from flag: [https://m]"),
            "{both}"
        );
    }
}
