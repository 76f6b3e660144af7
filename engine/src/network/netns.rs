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

/// Creates an empty file at `path` and binds a new network namespace onto it (the
/// engine makes them with the first endpoint, `with_host_and_netns`).
#[cfg(test)]
pub fn create(path: &Path) -> Result<(), NetworkError> {
    // unshare(CLONE_NEWNET) only moves the calling thread, so a throwaway thread does it
    // and the process's other threads stay in the host namespace (unshare(2)).
    std::thread::scope(|s| s.spawn(|| create_here(path)).join()).unwrap_or(Err(
        NetworkError::ThreadPanicked {
            what: "netns create",
        },
    ))
}

/// `create` on the calling thread, which is left in the new namespace: only for
/// threads of this module that end right after their work.
fn create_here(path: &Path) -> Result<(), NetworkError> {
    let io = |op, source| NetworkError::Netns {
        op,
        path: path.to_path_buf(),
        source,
    };
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| io("create dir for", e))?;
    }
    File::create(path).map_err(|e| io("create", e))?;
    let made = nix::sched::unshare(CloneFlags::CLONE_NEWNET).and_then(|()| {
        let own = format!("/proc/self/task/{}/ns/net", nix::unistd::gettid());
        nix::mount::mount(
            Some(own.as_str()),
            path,
            None::<&str>,
            MsFlags::MS_BIND,
            None::<&str>,
        )
    });
    made.map_err(|e| {
        let _ = std::fs::remove_file(path);
        io("bind-mount a new netns on", e.into())
    })
}

fn join_here(path: &Path) -> Result<(), NetworkError> {
    let file = File::open(path).map_err(|source| NetworkError::Netns {
        op: "open",
        path: path.to_path_buf(),
        source,
    })?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| NetworkError::Netns {
        op: "join",
        path: path.to_path_buf(),
        source: e.into(),
    })
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
            join_here(path)?;
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

/// How `with_host_and_netns` gets into the container's namespace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Enter {
    /// Make it (as `create`) and enter it.
    Create,
    /// It exists: join it.
    Join,
}

/// Work on both sides of a veth in one thread and one runtime: a netlink connection
/// opened in the calling thread's (the host's) namespace, then the thread enters the
/// container's namespace at `path` (making it first with `Enter::Create`) and opens a
/// second one there; a socket keeps acting on the namespace it was opened in. One
/// thread instead of one per namespace (and one for the namespace's creation): each
/// costs a spawn, a runtime and its teardown, which add up on a busy machine.
pub fn with_host_and_netns<T, F>(path: &Path, enter: Enter, work: F) -> Result<T, NetworkError>
where
    T: Send,
    F: FnOnce(rtnetlink::Handle, rtnetlink::Handle) -> NlFuture<T> + Send,
{
    let run = move || -> Result<T, NetworkError> {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|source| NetworkError::Runtime { source })?;
        rt.block_on(async move {
            let runtime = |source| NetworkError::Runtime { source };
            let (conn, host, _) = rtnetlink::new_connection().map_err(runtime)?;
            let host_conn = tokio::spawn(conn);
            let entered = match enter {
                Enter::Create => create_here(path),
                Enter::Join => join_here(path),
            };
            let out = match entered.and_then(|()| rtnetlink::new_connection().map_err(runtime)) {
                Ok((conn, ns, _)) => {
                    let ns_conn = tokio::spawn(conn);
                    let out = work(host, ns).await;
                    ns_conn.abort();
                    out
                }
                Err(e) => Err(e),
            };
            host_conn.abort();
            out
        })
    };
    std::thread::scope(|s| s.spawn(run).join())
        .unwrap_or(Err(NetworkError::ThreadPanicked { what: "netlink" }))
}
