//! `POST /containers/create`: image config + user options → record, snapshot, highd
//! container.

use std::collections::HashMap;
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

use chrono::Utc;

use super::volumes::PreparedMounts;
use super::{
    etc, images::ImageView, random_id, Daemon, DaemonError, DaemonResult, InvalidParameter,
};
use crate::backend::{Backend, NewContainer};
use crate::names;
use crate::record::{ContainerRecord, State, RECORD_VERSION};
use crate::spec::{self, SpecInput};
use crate::types::{ContainerConfig, CreateRequest, HostConfig};

/// Label highd sees on every container the engine creates.
pub(super) const ENGINE_LABEL: &str = "io.berth.engine";

/// The user's config completed from the image, as dockerd's `merge` does: env merged,
/// entrypoint/cmd inherited unless overridden (a new entrypoint drops the image's cmd).
pub fn merge_image_config(user: &ContainerConfig, image: &ImageView) -> ContainerConfig {
    let img = image.runtime_config();
    let mut c = user.clone();
    c.env = spec::merge_env(&img.env, &user.env);
    if user.entrypoint.0.is_none() {
        c.entrypoint = img.entrypoint.clone();
        if user.cmd.0.is_none() {
            c.cmd = img.cmd.clone();
        }
    }
    if c.working_dir.is_empty() {
        c.working_dir = img.working_dir.clone();
    }
    if c.user.is_empty() {
        c.user = img.user.clone();
    }
    for (k, v) in &img.labels {
        c.labels.entry(k.clone()).or_insert_with(|| v.clone());
    }
    if c.stop_signal.is_none() {
        c.stop_signal = img.stop_signal.clone();
    }
    super::health::merge_into(&mut c.extra, &img.extra);
    c
}

/// Files written per container and bind-mounted over the image's.
pub struct EtcPaths {
    pub hostname: String,
    pub hosts: String,
    pub resolv: String,
}

/// Written into the new container's fresh directory with their content fsynced but not the
/// directory: the record, written next to them before create answers, fsyncs it (three
/// fewer fsyncs per create, milliseconds each on a disk).
fn write_etc_files(dir: &Path, hostname: &str, host: &HostConfig) -> DaemonResult<EtcPaths> {
    let io = |path: &Path, source| DaemonError::Io {
        op: "write",
        path: path.to_path_buf(),
        source,
    };
    std::fs::create_dir_all(dir).map_err(|e| io(dir, e))?;
    let files = [
        ("hostname", etc::hostname_file(hostname)),
        ("hosts", etc::hosts_file(hostname, &host.extra_hosts)),
        ("resolv.conf", etc::resolv_conf(&etc::host_resolv_conf())),
    ];
    for (name, content) in &files {
        let p = dir.join(name);
        berth_fsutil::write_new_synced(&p, content.as_bytes(), 0o644).map_err(|e| io(&p, e))?;
    }
    let s = |n: &str| dir.join(n).to_string_lossy().into_owned();
    Ok(EtcPaths {
        hostname: s("hostname"),
        hosts: s("hosts"),
        resolv: s("resolv.conf"),
    })
}

impl<B: Backend> Daemon<B> {
    /// Creates a container; returns its ID.
    pub async fn create_container(
        &self,
        name: Option<&str>,
        req: CreateRequest,
    ) -> DaemonResult<String> {
        if let Some(n) = name {
            if !names::is_valid(n) {
                return Err(DaemonError::InvalidName { name: n.into() });
            }
        }
        let mut req = req;
        super::restart::check_create(&mut req.host_config)?;
        crate::resources::check_create(&mut req.host_config)?;
        super::health::check(&req.config.extra)?;
        let image = self.image(&req.config.image).await?;
        let config = merge_image_config(&req.config, &image);
        let mut argv: Vec<String> = config.entrypoint.as_slice().to_vec();
        argv.extend_from_slice(config.cmd.as_slice());
        if argv.is_empty() {
            return Err(InvalidParameter::NoCommand.into());
        }
        let id = random_id();
        let name = self.reserve_name(name, &id)?;
        let result = self
            .create_reserved(&id, &name, CreateRequest { config, ..req }, &image, argv)
            .await;
        if result.is_err() {
            self.store.release_name(&name, &id);
            let _ = self.detach_network(&id).await;
            let _ = std::fs::remove_dir_all(self.store.container_dir(&id));
        }
        result.map(|()| id)
    }

    fn reserve_name(&self, name: Option<&str>, id: &str) -> DaemonResult<String> {
        if let Some(n) = name {
            let n = n.trim_start_matches('/');
            return self
                .store
                .reserve_name(n, id)
                .map(|()| n.to_string())
                .map_err(|holder| DaemonError::NameConflict {
                    name: n.into(),
                    id: holder,
                });
        }
        let mut attempt = 0;
        loop {
            let n = names::generate(attempt);
            if self.store.reserve_name(&n, id).is_ok() {
                return Ok(n);
            }
            attempt += 1;
        }
    }

    async fn create_reserved(
        &self,
        id: &str,
        name: &str,
        req: CreateRequest,
        image: &ImageView,
        argv: Vec<String>,
    ) -> DaemonResult<()> {
        let CreateRequest {
            config,
            host_config,
            networking_config: networking,
        } = req;
        let dir = self.store.container_dir(id);
        let hostname = if !config.hostname.is_empty() {
            config.hostname.clone()
        } else if host_config.network_mode == "host" {
            // dockerd gives host-network containers the host's name.
            nix::unistd::gethostname()
                .map(|h| h.to_string_lossy().into_owned())
                .unwrap_or_else(|_| id[..12].to_string())
        } else {
            id[..12].to_string()
        };
        // dockerd stores the name it picked, so inspect and commit show it.
        let mut config = config;
        if config.hostname.is_empty() {
            config.hostname = hostname.clone();
        }
        let etc = write_etc_files(&dir, &hostname, &host_config)?;
        let mounts = self.prepare_mounts(id, &config, &host_config, image)?;
        let result = self
            .create_with_mounts(
                id,
                name,
                &dir,
                config,
                host_config,
                image,
                argv,
                hostname,
                etc,
                networking,
                &mounts,
            )
            .await;
        if result.is_err() {
            self.undo_mounts(id, &mounts);
        }
        result
    }

    #[allow(clippy::too_many_arguments)]
    async fn create_with_mounts(
        &self,
        id: &str,
        name: &str,
        dir: &Path,
        config: ContainerConfig,
        mut host_config: HostConfig,
        image: &ImageView,
        argv: Vec<String>,
        hostname: String,
        etc: EtcPaths,
        networking: Option<serde_json::Value>,
        mounts: &PreparedMounts,
    ) -> DaemonResult<()> {
        let exec_user =
            crate::users::for_image(&*self.backend, &image.layers, &config.user).await?;
        let input = SpecInput {
            id,
            args: argv.clone(),
            env: config.env.clone(),
            cwd: config.working_dir.clone(),
            user: format!("{}:{}", exec_user.uid, exec_user.gid),
            tty: config.tty,
            hostname,
            cgroup_parent: &self.config.cgroup_parent,
            host_config: &host_config,
            etc_files: vec![
                ("/etc/resolv.conf", etc.resolv.clone()),
                ("/etc/hostname", etc.hostname.clone()),
                ("/etc/hosts", etc.hosts.clone()),
            ],
        };
        let mut spec = spec::generate(&input)?;
        if host_config.init.unwrap_or(self.config.init.default) {
            super::init::apply(&mut spec, &self.config.init.path)?;
        }
        spec::add_mounts(&mut spec, &mounts.points);
        if config.tty {
            if let Some(size) = super::console_size(host_config.extra.get("ConsoleSize")) {
                spec["process"]["consoleSize"] = size;
            }
        }
        exec_user.apply(&mut spec);
        crate::seccomp::apply(&mut spec, &host_config)?;
        let labels = HashMap::from([(ENGINE_LABEL.to_string(), "1".to_string())]);
        // Network setup and highd's snapshot overlap (the caller detaches the network of
        // a failed create).
        let chain_id = image.chain_id();
        let (network, snapshot) = tokio::join!(
            self.attach_network(id, name, &mut host_config, &config, networking, &mut spec),
            self.backend.snapshot_prepare(id, &chain_id, labels.clone())
        );
        let snapshot = match (network, snapshot) {
            (Ok(()), Ok(s)) => s,
            (Err(e), made) => {
                if made.is_ok() {
                    let _ = self.backend.snapshot_remove(id).await;
                }
                return Err(e.into());
            }
            (Ok(()), Err(e)) => return Err(e.into()),
        };
        if let Err(e) = self.copy_up(mounts, &snapshot) {
            let _ = self.backend.snapshot_remove(id).await;
            return Err(e);
        }
        let created = self
            .backend
            .container_create(NewContainer {
                id: id.into(),
                image: image.names.first().cloned().unwrap_or_default(),
                spec: serde_json::to_vec(&spec).unwrap_or_default(),
                snapshot_key: id.into(),
                labels,
            })
            .await;
        if let Err(e) = created {
            let _ = self.backend.snapshot_remove(id).await;
            return Err(e.into());
        }
        // From here on highd holds a container and a snapshot for this id: every failure
        // below must remove both, or they leak until the next restart's orphan collection.
        if let Err(e) = self
            .record_created(id, name, dir, argv, config, host_config, image, etc, mounts)
            .await
        {
            self.rollback_created(id).await;
            return Err(e);
        }
        tracing::info!(%id, %name, "container created");
        self.event_log.container("create", id, &[]);
        Ok(())
    }
    /// The steps of a create after highd's container exists: the log file and the record.
    /// The caller rolls highd back if any of them fails.
    #[allow(clippy::too_many_arguments)]
    async fn record_created(
        &self,
        id: &str,
        name: &str,
        dir: &Path,
        argv: Vec<String>,
        config: ContainerConfig,
        host_config: HostConfig,
        image: &ImageView,
        etc: EtcPaths,
        mounts: &PreparedMounts,
    ) -> DaemonResult<()> {
        // The log exists from now on, so an attach made before start holds it open and
        // reads everything even if `--rm` unlinks it right after a fast exit.
        let log_path = dir.join(format!("{id}-json.log"));
        std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .mode(0o640)
            .open(&log_path)
            .map_err(|source| DaemonError::Io {
                op: "create",
                path: log_path.clone(),
                source,
            })?;
        self.event_log
            .register_container(id, name, &config.image, &config.labels);
        let record = ContainerRecord {
            record_version: RECORD_VERSION,
            id: id.into(),
            name: format!("/{name}"),
            created: Utc::now(),
            path: argv[0].clone(),
            args: argv[1..].to_vec(),
            config,
            host_config,
            image: image.id.clone(),
            state: State::default(),
            log_path: dir
                .join(format!("{id}-json.log"))
                .to_string_lossy()
                .into_owned(),
            hostname_path: etc.hostname,
            hosts_path: etc.hosts,
            resolv_conf_path: etc.resolv,
            snapshot_key: id.into(),
            restart_count: 0,
            mount_points: mounts.points.clone(),
        };
        self.store.insert(record)?;
        Ok(())
    }

    /// Undoes `containers.Create` and `snapshots.Prepare` of a create that failed later.
    /// Failures are only logged: the orphan collection at the next reconcile removes
    /// whatever is left (the container carries ENGINE_LABEL and has no record).
    async fn rollback_created(&self, id: &str) {
        for (what, r) in [
            ("container", self.backend.container_delete(id).await),
            ("snapshot", self.backend.snapshot_remove(id).await),
        ] {
            match r {
                Ok(()) => {}
                Err(e) if e.is_not_found() => {}
                Err(e) => {
                    tracing::warn!(%id, error = %e, "rolling back the {what} of a failed create failed")
                }
            }
        }
    }
}
