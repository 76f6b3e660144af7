//! Persistent network namespaces: a namespace made by a short-lived thread and kept alive
//! by a bind mount of its nsfs file, as `ip netns add` does, so it outlives the engine and
//! exists before the container's task (the OCI spec joins it by `path`).

use std::fs::File;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;

use nix::mount::{umount2, MntFlags, MsFlags};
use nix::sched::CloneFlags;

use super::NetworkError;

/// Creates an empty file at `path` and binds a new network namespace onto it.
pub fn create(path: &Path) -> Result<(), NetworkError> {
    let io = |op, source| NetworkError::Netns {
        op,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create dir for", e))?;
    }
    File::create(path).map_err(|e| io("create", e))?;
    let target = path.to_path_buf();
    // unshare(CLONE_NEWNET) only moves the calling thread, so a throwaway thread does it
    // and the process's other threads stay in the host namespace (unshare(2)).
    let made = std::thread::scope(|s| {
        s.spawn(|| -> Result<(), nix::Error> {
            nix::sched::unshare(CloneFlags::CLONE_NEWNET)?;
            let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
            nix::mount::mount(
                Some(own.as_str()),
                &target,
                None::<&str>,
                MsFlags::MS_BIND,
                None::<&str>,
            )
        })
        .join()
    });
    match made {
        Ok(Ok(())) => Ok(()),
        Ok(Err(e)) => {
            let _ = std::fs::remove_file(path);
            Err(io("bind-mount a new netns on", e.into()))
        }
        Err(_) => {
            let _ = std::fs::remove_file(path);
            Err(NetworkError::ThreadPanicked {
                what: "netns create",
            })
        }
    }
}

/// Unmounts and removes a persistent namespace file; a missing one is fine.
pub fn remove(path: &Path) -> Result<(), NetworkError> {
    match umount2(path, MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::Error::EINVAL) | Err(nix::Error::ENOENT) => {}
        Err(e) => {
            return Err(NetworkError::Netns {
                op: "unmount",
                path: path.to_path_buf(),
                source: e.into(),
            })
        }
    }
    match std::fs::remove_file(path) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(NetworkError::Netns {
            op: "remove",
            path: path.to_path_buf(),
            source: e,
        }),
        _ => Ok(()),
    }
}

pub type NlFuture<T> = Pin<Box<dyn Future<Output = Result<T, NetworkError>>>>;

/// Runs netlink work on a fresh connection made inside the namespace at `ns` (the host's
/// when `None`). A netlink socket talks to the namespace it was created in, so a thread
/// joins the namespace, opens the socket and runs its own small runtime.
pub fn with_netlink<T, F>(ns: Option<PathBuf>, work: F) -> Result<T, NetworkError>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle) -> NlFuture<T> + Send,
{
    let run = move || -> Result<T, NetworkError> {
        if let Some(path) = &ns {
            let file = File::open(path).map_err(|source| NetworkError::Netns {
                op: "open",
                path: path.clone(),
                source,
            })?;
            nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| {
                NetworkError::Netns {
                    op: "join",
                    path: path.clone(),
                    source: e.into(),
                }
            })?;
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| NetworkError::Runtime { source })?;
        rt.block_on(async move {
            let (conn, handle, _) =
                rtnetlink::new_connection().map_err(|source| NetworkError::Runtime { source })?;
            let conn = tokio::spawn(conn);
            let out = work(handle).await;
            conn.abort();
            out
        })
    };
    std::thread::scope(|s| s.spawn(run).join())
        .unwrap_or(Err(NetworkError::ThreadPanicked { what: "netlink" }))
}
