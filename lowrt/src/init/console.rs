//! The container's terminal: a pty from the container's own devpts, made the controlling
//! terminal of the process, with the master sent to `--console-socket` using runc's
//! protocol (one SCM_RIGHTS message carrying the master fd).

use std::io::IoSlice;
use std::os::fd::{AsFd, AsRawFd};

use nix::fcntl::{open, OFlag};
use nix::pty::{grantpt, posix_openpt, ptsname_r, unlockpt};
use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
use nix::sys::stat::Mode;

use super::{errno, InitContext, InitError};

pub(super) fn setup(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    let Some(socket) = ctx.console else {
        return Ok(());
    };
    let master = posix_openpt(OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC)
        .map_err(errno("open /dev/ptmx"))?;
    grantpt(&master).map_err(errno("grantpt"))?;
    unlockpt(&master).map_err(errno("unlockpt"))?;
    let name = ptsname_r(&master).map_err(errno("ptsname"))?;
    let slave = open(
        name.as_str(),
        OFlag::O_RDWR | OFlag::O_NOCTTY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(errno(format!("open {name}")))?;
    // Sized before anyone can read it, as runc does: the caller's first resize would
    // race a process that asks at once.
    if let Some(size) = ctx.process.console_size() {
        let ws = libc::winsize {
            ws_row: u16::try_from(size.height()).unwrap_or(u16::MAX),
            ws_col: u16::try_from(size.width()).unwrap_or(u16::MAX),
            ws_xpixel: 0,
            ws_ypixel: 0,
        };
        crate::sys::set_window_size(master.as_fd(), &ws).map_err(errno("set console size"))?;
    }
    let fds = [master.as_raw_fd()];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &[IoSlice::new(b"/dev/ptmx")],
        &[ControlMessage::ScmRights(&fds)],
        MsgFlags::empty(),
        None,
    )
    .map_err(errno("send pty master over console socket"))?;
    drop(master);
    // A new session, so this pty can become its controlling terminal (credentials(7)).
    nix::unistd::setsid().map_err(errno("setsid"))?;
    crate::sys::set_controlling_tty(slave.as_fd()).map_err(errno("set controlling terminal"))?;
    nix::unistd::dup2_stdin(&slave).map_err(errno("dup pty onto stdin"))?;
    nix::unistd::dup2_stdout(&slave).map_err(errno("dup pty onto stdout"))?;
    nix::unistd::dup2_stderr(&slave).map_err(errno("dup pty onto stderr"))?;
    Ok(())
}
