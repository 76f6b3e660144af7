//! A container's filesystem as `cp`, `export` and `diff` reach it: a running container
//! through `/proc/<pid>/root` (its own mount namespace, so volumes, binds, tmpfs and
//! /etc/hosts are seen exactly as the container sees them), a stopped or created one
//! through a [`RootfsView`] of its snapshot with its volumes, binds and network files
//! bound on top, unmounted when the value is dropped.

use std::io::Read;
use std::path::{Path, PathBuf};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::rootfs::RootfsView;
use super::stat::PathStat;
use super::tar_out::{ChannelWriter, TarWriter};
use super::untar::{untar, UntarOptions};
use super::{changes, scope, ArchiveError};
use crate::backend::Backend;
use crate::daemon::Daemon;
use crate::record::ContainerRecord;
use crate::volumes::{MountKind, MountPoint};

/// Paths dockerd's `docker diff` never reports: the runtime's mountpoints, which
/// dockerd keeps in the container's init layer.
const DIFF_EXCLUDED: &[&str] = &[
    "/etc/hosts",
    "/etc/hostname",
    "/etc/resolv.conf",
    "/dev",
    "/proc",
    "/sys",
    "/.dockerenv",
];

pub struct ContainerFs {
    root: PathBuf,
    /// Whether `root` is a live container's `/proc/<pid>/root`.
    live: bool,
    _view: Option<RootfsView>,
    /// The container's state lock while a view of a stopped container is mounted: it
    /// cannot start (mounting the same overlay dirs) or go away meanwhile, as dockerd
    /// holds the container's lock.
    _lock: Option<tokio::sync::OwnedMutexGuard<()>>,
}

impl ContainerFs {
    /// The container's filesystem with its mounts; `writable` for extraction.
    pub async fn open<B: Backend>(
        d: &Daemon<B>,
        rec: &ContainerRecord,
        writable: bool,
    ) -> Result<Self, ArchiveError> {
        if let Some(fs) = Self::live(rec) {
            return Ok(fs);
        }
        let (lock, rec) = Self::lock(d, rec).await?;
        if let Some(fs) = Self::live(&rec) {
            return Ok(fs);
        }
        let mut extra = rec.mount_points.clone();
        extra.extend(network_files(&rec));
        Self::view(d, &rec, &extra, writable, Some(lock)).await
    }

    /// The container's own filesystem, without any volume or bind (`docker export`).
    pub async fn open_rootfs<B: Backend>(
        d: &Daemon<B>,
        rec: &ContainerRecord,
    ) -> Result<Self, ArchiveError> {
        let (lock, rec) = if rec.state.status.is_running() {
            (None, rec.clone())
        } else {
            let (l, r) = Self::lock(d, rec).await?;
            (Some(l), r)
        };
        Self::view(d, &rec, &[], false, lock).await
    }

    fn live(rec: &ContainerRecord) -> Option<Self> {
        if !rec.state.status.is_running() || rec.state.pid == 0 {
            return None;
        }
        let root = PathBuf::from(format!("/proc/{}/root", rec.state.pid));
        std::fs::symlink_metadata(&root).ok()?;
        Some(Self {
            root,
            live: true,
            _view: None,
            _lock: None,
        })
    }

    /// Takes the container's lock and reads its record again under it.
    async fn lock<B: Backend>(
        d: &Daemon<B>,
        rec: &ContainerRecord,
    ) -> Result<(tokio::sync::OwnedMutexGuard<()>, ContainerRecord), ArchiveError> {
        let guard = d.lock_for(&rec.id).lock_owned().await;
        let rec = d
            .store
            .get(&rec.id)
            .ok_or_else(|| ArchiveError::NoFilesystem {
                id: rec.id.clone(),
                message: "the container was removed".into(),
            })?;
        Ok((guard, rec))
    }

    async fn view<B: Backend>(
        d: &Daemon<B>,
        rec: &ContainerRecord,
        extra: &[MountPoint],
        writable: bool,
        lock: Option<tokio::sync::OwnedMutexGuard<()>>,
    ) -> Result<Self, ArchiveError> {
        let mounts = snapshot_mounts(d, rec).await?;
        let view = RootfsView::mount(&d.archive_dir(), &mounts, extra, writable)?;
        Ok(Self {
            root: view.path().to_path_buf(),
            live: false,
            _view: Some(view),
            _lock: lock,
        })
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// `path` (absolute in the container, as dockerd normalizes it) on the host; the
    /// last element is followed only when `follow_last`.
    fn resolve(&self, path: &str, follow_last: bool) -> Result<PathBuf, ArchiveError> {
        scope::resolve(&self.root, path, follow_last)
            .map_err(|e| ArchiveError::io("resolve", path, e))
    }

    /// The container path of a host path under the root.
    fn container_path(&self, host: &Path) -> String {
        let rel = host.strip_prefix(&self.root).unwrap_or(Path::new(""));
        format!("/{}", rel.to_string_lossy())
    }

    /// dockerd's `Stat` of `abs` (from [`abs_path`]): lstat, except that a trailing `/`
    /// or `/.` follows a final symlink, as the kernel does. Returns the host path too.
    pub fn stat(&self, abs: &str) -> Result<(PathStat, PathBuf), std::io::Error> {
        let trailing = abs.ends_with('/') && abs.len() > 1 || abs.ends_with("/.");
        let host = scope::resolve(&self.root, abs, trailing)?;
        let meta = std::fs::symlink_metadata(&host)?;
        if trailing && !meta.is_dir() {
            return Err(std::io::Error::from_raw_os_error(libc::ENOTDIR));
        }
        let link_target = if meta.file_type().is_symlink() {
            let full = scope::resolve(&self.root, abs, true)?;
            std::fs::symlink_metadata(&full)?;
            self.container_path(&full)
        } else {
            String::new()
        };
        Ok((PathStat::new(go_base(abs), &meta, link_target), host))
    }
}

/// highd's mounts of the container's snapshot.
async fn snapshot_mounts<B: Backend>(
    d: &Daemon<B>,
    rec: &ContainerRecord,
) -> Result<Vec<crate::backend::Mount>, ArchiveError> {
    d.backend
        .snapshot_mounts(&rec.snapshot_key)
        .await
        .map_err(|e| ArchiveError::NoFilesystem {
            id: rec.id.clone(),
            message: e.to_string(),
        })
}

/// /etc/hosts, /etc/hostname and /etc/resolv.conf of the container, as dockerd binds
/// them into its view of a stopped container.
fn network_files(rec: &ContainerRecord) -> Vec<MountPoint> {
    [
        (&rec.hosts_path, "/etc/hosts"),
        (&rec.hostname_path, "/etc/hostname"),
        (&rec.resolv_conf_path, "/etc/resolv.conf"),
    ]
    .into_iter()
    .filter(|(src, _)| !src.is_empty() && Path::new(src).is_file())
    .filter_map(|(src, dst)| {
        serde_json::from_value(serde_json::json!({
            "Type": "bind", "Source": src, "Destination": dst, "RW": true
        }))
        .ok()
    })
    .collect()
}

/// moby's `PreserveTrailingDotOrSeparator(filepath.Join("/", path), path)`.
pub fn abs_path(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for c in path.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            c => parts.push(c),
        }
    }
    let mut abs = format!("/{}", parts.join("/"));
    let dot = path == "." || path.ends_with("/.");
    if dot {
        abs.push_str(if abs == "/" { "." } else { "/." });
    } else if path.ends_with('/') && abs != "/" {
        abs.push('/');
    }
    abs
}

/// Go's `filepath.Base`.
fn go_base(path: &str) -> String {
    let t = path.trim_end_matches('/');
    if t.is_empty() {
        return "/".into();
    }
    t.rsplit('/').next().unwrap_or(t).to_string()
}

/// Maps "no such file" to dockerd's 404, naming the path and container as given.
fn not_found(path: &str, container: &str) -> impl Fn(std::io::Error) -> ArchiveError {
    let path = path.to_string();
    let container = container.to_string();
    move |e| {
        if e.kind() == std::io::ErrorKind::NotFound {
            ArchiveError::FileNotFound {
                path: path.clone(),
                container: container.clone(),
            }
        } else {
            ArchiveError::io("stat", path.clone(), e)
        }
    }
}

/// `HEAD /containers/{id}/archive`.
pub async fn stat_path<B: Backend>(
    d: &Daemon<B>,
    rec: &ContainerRecord,
    reference: &str,
    path: &str,
) -> Result<PathStat, ArchiveError> {
    let fs = ContainerFs::open(d, rec, false).await?;
    let (stat, _) = fs
        .stat(&abs_path(path))
        .map_err(not_found(path, reference))?;
    Ok(stat)
}

/// `GET /containers/{id}/archive`: the stat, and the tar streamed from a blocking
/// thread that owns the view until the last byte (or the client leaving).
pub async fn archive_path<B: Backend>(
    d: &Daemon<B>,
    rec: &ContainerRecord,
    reference: &str,
    path: &str,
) -> Result<(PathStat, mpsc::Receiver<Bytes>), ArchiveError> {
    let fs = ContainerFs::open(d, rec, false).await?;
    let abs = abs_path(path);
    let (stat, host) = fs.stat(&abs).map_err(not_found(path, reference))?;
    let name = stat.name.clone();
    let skip_pseudo = fs.live;
    let rx = stream(move |w| {
        let mut t = TarWriter::new(w, skip_pseudo);
        t.add_named(&host, &name)?;
        t.finish()?;
        drop(fs);
        Ok(())
    });
    Ok((stat, rx))
}

/// `GET /containers/{id}/export`.
pub async fn export<B: Backend>(
    d: &Daemon<B>,
    rec: &ContainerRecord,
) -> Result<mpsc::Receiver<Bytes>, ArchiveError> {
    let fs = ContainerFs::open_rootfs(d, rec).await?;
    Ok(stream(move |w| {
        let mut t = TarWriter::new(w, false);
        t.add_contents(fs.root())?;
        t.finish()?;
        drop(fs);
        Ok(())
    }))
}

fn stream(
    f: impl FnOnce(ChannelWriter) -> Result<(), ArchiveError> + Send + 'static,
) -> mpsc::Receiver<Bytes> {
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        if let Err(e) = f(ChannelWriter::new(tx)) {
            tracing::warn!(error = %e, "streaming a container archive stopped");
        }
    });
    rx
}

/// `PUT /containers/{id}/archive`: `input` (a blocking reader of the request body)
/// extracted into the directory `path`.
pub async fn extract<B: Backend>(
    d: &Daemon<B>,
    rec: &ContainerRecord,
    reference: &str,
    path: &str,
    copy_uid_gid: bool,
    no_overwrite_dir_non_dir: bool,
    input: impl Read + Send + 'static,
) -> Result<(), ArchiveError> {
    let fs = ContainerFs::open(d, rec, true).await?;
    let host = fs
        .resolve(&abs_path(path), true)
        .and_then(|h| {
            std::fs::metadata(&h)
                .map(|m| (h, m))
                .map_err(|e| ArchiveError::io("stat", path, e))
        })
        .map_err(|e| match e {
            ArchiveError::Io { source, .. } => not_found(path, reference)(source),
            e => e,
        })?;
    let (host, meta) = host;
    if !meta.is_dir() {
        return Err(ArchiveError::NotADirectory);
    }
    let dest = fs.container_path(&host);
    let to_volume = in_volume(&rec.mount_points, &dest)?;
    if !to_volume && rec.host_config.readonly_rootfs {
        return Err(ArchiveError::ReadOnlyRootfs);
    }
    let chown = if copy_uid_gid && !rec.config.user.is_empty() {
        Some(container_user(&fs, &rec.config.user)?)
    } else {
        None
    };
    let opts = UntarOptions {
        no_overwrite_dir_non_dir,
        chown,
    };
    tokio::task::spawn_blocking(move || {
        let r = untar(fs.root(), &dest, input, &opts);
        drop(fs);
        r
    })
    .await
    .map_err(|e| ArchiveError::BadTar {
        message: format!("extraction aborted: {e}"),
    })?
}

/// moby's `checkIfPathIsInAVolume`: whether `dest` is on a volume or bind (tmpfs mounts
/// do not count), refused when that one is read-only.
fn in_volume(mounts: &[MountPoint], dest: &str) -> Result<bool, ArchiveError> {
    for m in mounts.iter().filter(|m| m.kind != MountKind::Tmpfs) {
        let d = m.destination.trim_end_matches('/');
        let hit = dest == d || dest.strip_prefix(d).is_some_and(|r| r.starts_with('/'));
        if hit {
            return if m.rw {
                Ok(true)
            } else {
                Err(ArchiveError::ReadOnlyVolume)
            };
        }
    }
    Ok(false)
}

/// The container user's uid and gid, from the container's own passwd and group files.
fn container_user(fs: &ContainerFs, user: &str) -> Result<(u32, u32), ArchiveError> {
    let read = |p: &str| {
        fs.resolve(p, true)
            .ok()
            .and_then(|h| std::fs::read_to_string(h).ok())
    };
    let passwd = read("/etc/passwd");
    let group = read("/etc/group");
    let u = crate::users::resolve(user, passwd.as_deref(), group.as_deref()).map_err(|e| {
        ArchiveError::BadTar {
            message: e.to_string(),
        }
    })?;
    Ok((u.uid, u.gid))
}

/// `GET /containers/{id}/changes`: the upper dir of the container's overlay against the
/// image's layers.
pub async fn container_changes<B: Backend>(
    d: &Daemon<B>,
    rec: &ContainerRecord,
) -> Result<Vec<changes::Change>, ArchiveError> {
    let mounts = snapshot_mounts(d, rec).await?;
    if mounts.first().is_some_and(|m| m.kind != "overlay") {
        return copied_changes(d, rec, &mounts).await;
    }
    let (upper, lowers) =
        super::rootfs::layers(&mounts).ok_or_else(|| ArchiveError::NoFilesystem {
            id: rec.id.clone(),
            message: "the snapshot has no mounts".into(),
        })?;
    tokio::task::spawn_blocking(move || {
        changes::changes(&upper, &lowers, &|p| DIFF_EXCLUDED.contains(&p))
    })
    .await
    .map_err(|e| ArchiveError::Unsupported {
        what: format!("diff aborted: {e}"),
    })?
}

/// The copying snapshotter keeps no upper dir: the container's tree is compared with a
/// fresh copy of its image's (a temporary snapshot over the same parent, removed after),
/// as dockerd's naive differ compares two trees.
async fn copied_changes<B: Backend>(
    d: &Daemon<B>,
    rec: &ContainerRecord,
    mounts: &[crate::backend::Mount],
) -> Result<Vec<changes::Change>, ArchiveError> {
    let no_fs = |message: String| ArchiveError::NoFilesystem {
        id: rec.id.clone(),
        message,
    };
    let upper = PathBuf::from(&mounts[0].source);
    let chain_id = d
        .image(&rec.image)
        .await
        .map_err(|e| no_fs(format!("its image: {e}")))?
        .chain_id();
    let copy = d
        .image_copy(&rec.id, &chain_id)
        .await
        .map_err(|e| no_fs(format!("a copy of its image: {e}")))?;
    let image_root = match copy.as_ref().map(|(_, m)| m.first()) {
        None => None,
        Some(Some(m)) if m.kind != "overlay" => Some(PathBuf::from(&m.source)),
        Some(_) => None,
    };
    let walked = match (&copy, &image_root) {
        (Some(_), None) => Ok(Err(no_fs(
            "the image's snapshot is no plain directory".into(),
        ))),
        _ => {
            tokio::task::spawn_blocking(move || {
                super::tree_changes::tree_changes(&upper, image_root.as_deref(), &|p| {
                    DIFF_EXCLUDED.contains(&p)
                })
            })
            .await
        }
    };
    if let Some((key, _)) = &copy {
        d.drop_image_copy(key).await;
    }
    walked.map_err(|e| ArchiveError::Unsupported {
        what: format!("diff aborted: {e}"),
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_as_dockerd_normalizes_them() {
        assert_eq!(abs_path("etc/passwd"), "/etc/passwd");
        assert_eq!(abs_path("/a/../b/"), "/b/");
        assert_eq!(abs_path("/a/b/."), "/a/b/.");
        assert_eq!(abs_path("/"), "/");
        assert_eq!(abs_path("."), "/.");
        assert_eq!(go_base("/a/b/."), ".");
        assert_eq!(go_base("/a/b/"), "b");
        assert_eq!(go_base("/"), "/");
    }
}
