//! gRPC over unix sockets, for every Berth daemon and client.
//!
//! `sun_path` holds at most 107 bytes plus the NUL, and tests live in deep temp dirs.
//! For longer paths we open the socket's directory and bind or connect through
//! `/proc/self/fd/<dirfd>/<name>`: the kernel resolves that magic link to the directory,
//! so only the short name has to fit (see unix(7), "Pathname sockets").

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::{UnixListener, UnixStream};
use tokio_stream::wrappers::UnixListenerStream;
use tonic::transport::server::Router;
use tonic::transport::{Channel, Endpoint};

use crate::ProtoError;

/// Longest path that fits in `sockaddr_un.sun_path` with its terminating NUL.
pub const MAX_SOCKET_PATH: usize = 107;

/// containerd's default gRPC message size limit in both directions (16 MiB); tonic's
/// default decode limit is 4 MiB. Apply it to servers and clients that must accept what
/// containerd peers send: `XxxServer::new(s).max_decoding_message_size(MAX_MESSAGE_SIZE)`.
pub const MAX_MESSAGE_SIZE: usize = 16 << 20;

/// Mode of every socket we create: owner and group only, never world-writable.
pub const SOCKET_MODE: u32 = 0o660;

/// A path usable with bind/connect; holds the directory fd open while the short
/// `/proc/self/fd/...` alias is in use.
struct ShortPath {
    path: PathBuf,
    _dir: Option<File>,
}

fn short_path(path: &Path) -> Result<ShortPath, ProtoError> {
    if path.as_os_str().len() <= MAX_SOCKET_PATH {
        return Ok(ShortPath {
            path: path.to_owned(),
            _dir: None,
        });
    }
    let name = path
        .file_name()
        .ok_or_else(|| ProtoError::SocketPathNoName {
            path: path.to_owned(),
        })?;
    let dir_path = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = File::open(dir_path).map_err(|source| ProtoError::OpenDir {
        dir: dir_path.to_owned(),
        source,
    })?;
    let alias = PathBuf::from(format!("/proc/self/fd/{}", dir.as_raw_fd())).join(name);
    if alias.as_os_str().len() > MAX_SOCKET_PATH {
        return Err(ProtoError::SocketNameTooLong {
            path: path.to_owned(),
            len: name.len(),
        });
    }
    Ok(ShortPath {
        path: alias,
        _dir: Some(dir),
    })
}

/// Binds a unix socket listener at `path` with mode 0660.
///
/// A leftover socket from a dead server is removed; a socket some live server still
/// accepts on, or a non-socket file, is an error (we never steal or clobber). Must be
/// called inside a tokio runtime.
///
/// The socket never appears at `path` with a wider mode: bind(2) creates it with
/// 0777 minus umask, so we bind inside a fresh 0700 directory next to `path` (nobody
/// else can reach it there), chmod it to 0660, and only then link it into place.
/// The link is a hard link, not rename(2): link(2) fails if `path` appeared meanwhile,
/// so a server that bound there since `remove_stale` is never clobbered. A unix
/// socket is found by its inode, so the linked name is bound and connectable.
pub fn bind_unix(path: impl AsRef<Path>) -> Result<UnixListener, ProtoError> {
    let path = path.as_ref();
    let short = short_path(path)?;
    remove_stale(path, &short.path)?;
    let bind_err = |source| ProtoError::Bind {
        path: path.to_owned(),
        source,
    };
    remove_stale_staging(path);
    let private = PrivateDir::create(path).map_err(bind_err)?;
    let staged = private.path.join("s");
    // The staging path is as long as `path` plus a few bytes: same long-path handling.
    let staged_short = short_path(&staged)?;
    let std_listener =
        std::os::unix::net::UnixListener::bind(&staged_short.path).map_err(bind_err)?;
    std::fs::set_permissions(&staged, std::fs::Permissions::from_mode(SOCKET_MODE)).map_err(
        |source| ProtoError::Chmod {
            path: path.to_owned(),
            source,
        },
    )?;
    std::fs::hard_link(&staged, path).map_err(bind_err)?;
    // From here the socket is at `path`; drop the staging directory (and its name).
    drop(private);
    std_listener
        .set_nonblocking(true)
        .and_then(|()| UnixListener::from_std(std_listener))
        .map_err(|source| {
            // Do not leave a socket nobody will serve behind.
            let _ = std::fs::remove_file(&short.path);
            bind_err(source)
        })
}

/// A 0700 directory next to a socket path, removed with its content on drop.
struct PrivateDir {
    path: PathBuf,
}

impl PrivateDir {
    fn create(socket: &Path) -> io::Result<Self> {
        use std::os::unix::fs::DirBuilderExt;
        use std::sync::atomic::{AtomicU64, Ordering};
        static SEQ: AtomicU64 = AtomicU64::new(0);
        let name = socket
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let parent = match socket.parent() {
            Some(p) if !p.as_os_str().is_empty() => p,
            _ => Path::new("."),
        };
        // pid + per-process counter: unique among concurrent binds, and create_dir
        // (not create_dir_all) fails rather than reuse a directory someone else made.
        let path = parent.join(format!(
            ".{name}.bind-{}-{}",
            std::process::id(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::DirBuilder::new().mode(0o700).create(&path)?;
        Ok(Self { path })
    }
}

/// Removes the staging directories `bind_unix` left next to `socket` when its process
/// died between creating and removing one (`.<name>.bind-<pid>-<n>` whose pid no longer
/// exists), so a crash mid-bind leaves nothing behind for good. A directory of a live
/// process, this one included, is somebody's bind in progress and is kept. Best effort;
/// returns how many it removed.
pub fn remove_stale_staging(socket: &Path) -> usize {
    let Some(name) = socket.file_name().map(|n| n.to_string_lossy().into_owned()) else {
        return 0;
    };
    let parent = match socket.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let Ok(entries) = std::fs::read_dir(parent) else {
        return 0;
    };
    let prefix = format!(".{name}.bind-");
    let mut removed = 0;
    for entry in entries.flatten() {
        let file_name = entry.file_name();
        let Some(rest) = file_name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
            continue;
        };
        let Some((pid, seq)) = rest.split_once('-') else {
            continue;
        };
        let (Ok(pid), Ok(_)) = (pid.parse::<u32>(), seq.parse::<u64>()) else {
            continue;
        };
        let alive = pid == std::process::id() || Path::new(&format!("/proc/{pid}")).exists();
        if !alive && std::fs::remove_dir_all(entry.path()).is_ok() {
            removed += 1;
        }
    }
    removed
}

impl Drop for PrivateDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

fn remove_stale(path: &Path, short: &Path) -> Result<(), ProtoError> {
    let meta = match std::fs::symlink_metadata(short) {
        Ok(m) => m,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
        Err(source) => {
            return Err(ProtoError::RemoveStale {
                path: path.to_owned(),
                source,
            })
        }
    };
    if !meta.file_type().is_socket() {
        return Err(ProtoError::NotASocket {
            path: path.to_owned(),
        });
    }
    if std::os::unix::net::UnixStream::connect(short).is_ok() {
        return Err(ProtoError::SocketInUse {
            path: path.to_owned(),
        });
    }
    std::fs::remove_file(short).map_err(|source| ProtoError::RemoveStale {
        path: path.to_owned(),
        source,
    })
}

async fn connect_stream(path: PathBuf) -> io::Result<TokioIo<UnixStream>> {
    let short = short_path(&path).map_err(io::Error::other)?;
    let stream = UnixStream::connect(&short.path).await?;
    Ok(TokioIo::new(stream))
}

/// An endpoint whose connector dials the unix socket at `path`. The URI is a
/// placeholder: tonic needs one, but the connector ignores it.
fn endpoint() -> Endpoint {
    Endpoint::from_static("http://localhost")
}

/// Connects a gRPC channel to the unix socket at `path`, failing now if nobody listens.
/// The channel reconnects by itself after the server restarts.
pub async fn connect_unix(path: impl AsRef<Path>) -> Result<Channel, ProtoError> {
    let path = path.as_ref().to_owned();
    let dial = path.clone();
    endpoint()
        .connect_with_connector(tower::service_fn(move |_| connect_stream(dial.clone())))
        .await
        .map_err(|source| ProtoError::Connect { path, source })
}

/// Like [`connect_unix`] but connects on first use, so it succeeds while the server
/// is still down (shims publishing events to a restarting highd).
pub fn connect_unix_lazy(path: impl AsRef<Path>) -> Channel {
    let dial = path.as_ref().to_owned();
    endpoint().connect_with_connector_lazy(tower::service_fn(move |_| connect_stream(dial.clone())))
}

/// Serves `router` on `listener` until the listener fails.
///
/// ```no_run
/// # async fn f() -> Result<(), berth_proto::ProtoError> {
/// use berth_proto::transport::{bind_unix, serve_unix};
/// let listener = bind_unix("/run/berth/highd.sock")?;
/// let router = tonic::transport::Server::builder()
///     .add_routes(tonic::service::Routes::default());
/// serve_unix(router, listener).await
/// # }
/// ```
pub async fn serve_unix(router: Router, listener: UnixListener) -> Result<(), ProtoError> {
    router
        .serve_with_incoming(UnixListenerStream::new(listener))
        .await
        .map_err(|source| ProtoError::Serve { source })
}

/// Serves `router` on `listener` until `shutdown` completes, then finishes in-flight
/// calls and returns.
pub async fn serve_unix_with_shutdown(
    router: Router,
    listener: UnixListener,
    shutdown: impl Future<Output = ()>,
) -> Result<(), ProtoError> {
    router
        .serve_with_incoming_shutdown(UnixListenerStream::new(listener), shutdown)
        .await
        .map_err(|source| ProtoError::Serve { source })
}
