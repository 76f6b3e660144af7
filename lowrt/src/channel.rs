//! The one-way report channel from a child (container init or exec process) to the
//! runtime: a SOCK_SEQPACKET socketpair carrying one JSON message per packet. Both ends
//! are close-on-exec, so a successful execve shows up in the parent as end-of-file.

use std::os::fd::{AsFd, AsRawFd, OwnedFd, RawFd};

use nix::sys::socket::{socketpair, AddressFamily, SockFlag, SockType};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum ChannelError {
    #[error("cannot create the sync socketpair: {0}")]
    Create(#[source] nix::errno::Errno),
    #[error("sync channel {op}: {source}")]
    Io {
        op: &'static str,
        source: nix::errno::Errno,
    },
    #[error("sync channel: bad message: {0}")]
    Decode(#[source] serde_json::Error),
}

/// Messages from child to parent.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Message {
    /// Set-up finished; init now waits for `start`.
    Ready,
    /// Set-up failed; the text is what `create` prints.
    Error(String),
    /// Init has made its namespaces and mounts: run prestart/createRuntime hooks now
    /// and answer [`Message::HooksDone`] (the only parent-to-child message).
    Hooks,
    HooksDone,
    /// The runtime has written the id maps: init may start building the container.
    Go,
    /// The seccomp notify fd is attached: forward it to linux.seccomp.listenerPath and
    /// answer [`Message::SeccompDone`].
    SeccompFd,
    SeccompDone,
}

/// Creates (parent end, child end).
pub fn pair() -> Result<(OwnedFd, OwnedFd), ChannelError> {
    socketpair(
        AddressFamily::Unix,
        SockType::SeqPacket,
        None,
        SockFlag::SOCK_CLOEXEC,
    )
    .map_err(ChannelError::Create)
}

pub fn send(fd: &OwnedFd, msg: &Message) -> Result<(), ChannelError> {
    let data = serde_json::to_vec(msg).map_err(ChannelError::Decode)?;
    // MSG_NOSIGNAL: a child whose parent is gone must get EPIPE, not die of SIGPIPE.
    nix::sys::socket::send(
        fd.as_raw_fd(),
        &data,
        nix::sys::socket::MsgFlags::MSG_NOSIGNAL,
    )
    .map_err(|source| ChannelError::Io {
        op: "write",
        source,
    })?;
    Ok(())
}

/// `send` with an fd attached (SCM_RIGHTS).
pub fn send_fd(fd: &OwnedFd, msg: &Message, passed: RawFd) -> Result<(), ChannelError> {
    let data = serde_json::to_vec(msg).map_err(ChannelError::Decode)?;
    crate::sys::send_with_fd(fd.as_fd(), &data, passed).map_err(|source| ChannelError::Io {
        op: "write",
        source,
    })
}

/// Next message, or None at end-of-file (the child exec'd or died).
pub fn recv(fd: &OwnedFd) -> Result<Option<Message>, ChannelError> {
    Ok(recv_fd(fd)?.0)
}

/// Next message and the fd that came with it, if any.
pub fn recv_fd(fd: &OwnedFd) -> Result<(Option<Message>, Option<OwnedFd>), ChannelError> {
    let mut buf = vec![0u8; 64 * 1024];
    let (n, passed) = loop {
        match crate::sys::recv_packet(fd.as_fd(), &mut buf) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|source| ChannelError::Io { op: "read", source })?,
        }
    };
    if n == 0 {
        return Ok((None, passed));
    }
    let msg = serde_json::from_slice(&buf[..n]).map_err(ChannelError::Decode)?;
    Ok((Some(msg), passed))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_cross_and_eof_is_none() {
        let (parent, child) = pair().unwrap();
        send(&child, &Message::Error("boom".into())).unwrap();
        send(&child, &Message::Ready).unwrap();
        drop(child);
        assert_eq!(recv(&parent).unwrap(), Some(Message::Error("boom".into())));
        assert_eq!(recv(&parent).unwrap(), Some(Message::Ready));
        assert_eq!(recv(&parent).unwrap(), None);
    }
}
