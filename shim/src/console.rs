//! The `--console-socket` the runtime sends a terminal process's pty master over
//! (runc's docs/terminals.md: one SCM_RIGHTS message on a unix stream socket).

use std::io::IoSliceMut;
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::path::{Path, PathBuf};

use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use tokio::io::Interest;
use tokio::net::UnixListener;

#[derive(Debug, thiserror::Error)]
pub enum ConsoleError {
    #[error("cannot create console socket {path}")]
    Bind {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot receive the pty master")]
    Receive(#[source] std::io::Error),
    #[error("the runtime closed the console socket without sending a pty master")]
    NoMaster,
}

/// A listening console socket, removed when dropped.
#[derive(Debug)]
pub struct ConsoleSocket {
    listener: UnixListener,
    path: PathBuf,
    /// Set when the bundle path was too long and a private temp dir is used instead.
    temp_dir: Option<PathBuf>,
}

impl ConsoleSocket {
    /// Binds `<dir>/<name>`, or a fresh temp dir when that path would not fit in
    /// sun_path (the runtime connects by path, so a /proc/self/fd alias cannot help).
    pub fn bind(dir: &Path, name: &str) -> Result<Self, ConsoleError> {
        let mut path = dir.join(name);
        let mut temp_dir = None;
        if path.as_os_str().len() > 100 {
            let err = |source| ConsoleError::Bind {
                path: path.clone(),
                source,
            };
            let tmp = nix::unistd::mkdtemp(&std::env::temp_dir().join("berth-console-XXXXXX"))
                .map_err(|e| err(e.into()))?;
            path = tmp.join("c.sock");
            temp_dir = Some(tmp);
        }
        let _ = std::fs::remove_file(&path);
        let listener = std::os::unix::net::UnixListener::bind(&path)
            .and_then(|l| {
                l.set_nonblocking(true)?;
                UnixListener::from_std(l)
            })
            .map_err(|source| ConsoleError::Bind {
                path: path.clone(),
                source,
            })?;
        Ok(ConsoleSocket {
            listener,
            path,
            temp_dir,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Accepts the runtime's connection and takes the pty master it sends.
    pub async fn receive(&self) -> Result<OwnedFd, ConsoleError> {
        let (stream, _) = self
            .listener
            .accept()
            .await
            .map_err(ConsoleError::Receive)?;
        loop {
            stream.readable().await.map_err(ConsoleError::Receive)?;
            match stream.try_io(Interest::READABLE, || recv_fd(stream.as_raw_fd())) {
                Ok(Some(fd)) => return Ok(fd),
                Ok(None) => return Err(ConsoleError::NoMaster),
                Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(ConsoleError::Receive(e)),
            }
        }
    }
}

fn recv_fd(sock: RawFd) -> std::io::Result<Option<OwnedFd>> {
    // The payload is the pty's name; only the descriptor matters.
    let mut buf = [0u8; 1024];
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(sock, &mut iov, Some(&mut space), MsgFlags::MSG_CMSG_CLOEXEC)?;
    let mut master = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for fd in fds {
                // Extra descriptors (there should be none) are adopted and closed.
                let owned = crate::sys::adopt_fd(fd);
                if master.is_none() {
                    master = owned;
                }
            }
        }
    }
    Ok(master)
}

impl Drop for ConsoleSocket {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        if let Some(dir) = &self.temp_dir {
            let _ = std::fs::remove_dir(dir);
        }
    }
}
