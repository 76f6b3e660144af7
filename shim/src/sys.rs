//! The shim's only unsafe code: the pre-exec hook for daemonizing, adopting inherited or
//! received file descriptors, registering descriptors with the reactor, and the terminal
//! window-size ioctl.

use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::os::unix::process::CommandExt;
use std::process::Command;

/// Makes the spawned child a session leader and lets it inherit `keep_fd` across exec.
///
/// setsid(2) detaches the daemon from the caller's session and controlling terminal, so a
/// terminal hangup or a signal sent to the caller's process group never reaches it.
pub fn detach_on_exec(cmd: &mut Command, keep_fd: RawFd) {
    // SAFETY: the hook runs in the forked child before exec and only calls the
    // async-signal-safe syscalls setsid(2) and fcntl(2); it allocates nothing and
    // touches no locks held by other threads of the parent.
    unsafe {
        cmd.pre_exec(move || {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            let flags = libc::fcntl(keep_fd, libc::F_GETFD);
            if flags < 0 || libc::fcntl(keep_fd, libc::F_SETFD, flags & !libc::FD_CLOEXEC) < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// Takes ownership of a descriptor this process inherited or received, by number.
///
/// Returns `None` when `fd` is not an open descriptor.
pub fn adopt_fd(fd: RawFd) -> Option<OwnedFd> {
    if fd < 0 {
        return None;
    }
    // SAFETY: F_GETFD only queries the descriptor table; it has no side effects.
    if unsafe { libc::fcntl(fd, libc::F_GETFD) } < 0 {
        return None;
    }
    // SAFETY: `fd` is open (checked above) and the caller guarantees nothing else in this
    // process owns it: it was inherited across exec (the readiness pipe) or just received
    // over SCM_RIGHTS, so this is its only owner and it is closed exactly once.
    Some(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets a pty's window size (TIOCSWINSZ, tty_ioctl(4)).
pub fn set_winsize(fd: RawFd, rows: u16, cols: u16) -> std::io::Result<()> {
    let ws = libc::winsize {
        ws_row: rows,
        ws_col: cols,
        ws_xpixel: 0,
        ws_ypixel: 0,
    };
    // SAFETY: TIOCSWINSZ reads exactly one `struct winsize` from the pointer, which
    // points to a live, initialized local for the duration of the call.
    let rc = unsafe { libc::ioctl(fd, libc::TIOCSWINSZ, &ws as *const libc::winsize) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Registers an owned descriptor with the tokio reactor.
pub fn register_async(fd: OwnedFd) -> std::io::Result<tokio::io::unix::AsyncFd<OwnedFd>> {
    // SAFETY: `OwnedFd` is an open descriptor that it alone closes, on drop, so it stays
    // open and refers to the same file description for the whole life of the AsyncFd,
    // and its `as_raw_fd` always returns that one number.
    unsafe { tokio::io::unix::AsyncFd::register(fd) }.map_err(std::io::Error::from)
}

/// Closes every descriptor above stderr except `keep`.
///
/// The daemon must not hold what its caller leaked to it (descriptors without
/// O_CLOEXEC, e.g. a jobserver or a caller's pipe): it
/// would keep the caller's pipes open for the life of the container and pass them on to
/// the runtime and the container.
pub fn close_inherited_fds(keep: RawFd) {
    let fds: Vec<RawFd> = match std::fs::read_dir("/proc/self/fd") {
        Ok(dir) => dir
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse().ok())
            .collect(),
        Err(_) => return,
    };
    // The directory's own descriptor is in the list but already closed here;
    // adopt_fd skips descriptors that are not open.
    for fd in fds.into_iter().filter(|fd| *fd > 2 && *fd != keep) {
        drop(adopt_fd(fd));
    }
}
