//! The only module of lowrt with `unsafe`: thin wrappers over the syscalls that nix does
//! not wrap (clone3, close_range, pidfd, TIOCSCTTY, SIOCSIFFLAGS, `_exit`). Each wrapper
//! returns `nix::Result` and keeps pointers local to the call. bpf(2) is in [`bpf`],
//! seccomp(2) in [`seccomp`], fd xattrs in [`xattr`].

pub mod bpf;
pub mod seccomp;
pub mod xattr;

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;
use nix::unistd::Pid;

/// The result of [`clone_process`], seen from each side.
pub enum Forked {
    /// We are the new process.
    Child,
    /// We are the caller; the child's pid and a pidfd that refers to it.
    Parent { pid: Pid, pidfd: OwnedFd },
}

/// `struct clone_args` of clone3(2), version 2 (88 bytes; version 0 is the first 64).
#[repr(C)]
#[derive(Default)]
struct CloneArgs {
    flags: u64,
    pidfd: u64,
    child_tid: u64,
    parent_tid: u64,
    exit_signal: u64,
    stack: u64,
    stack_size: u64,
    tls: u64,
    set_tid: u64,
    set_tid_size: u64,
    cgroup: u64,
}

const CLONE_ARGS_SIZE_VER0: usize = 64;
const CLONE_INTO_CGROUP: u64 = 0x2_0000_0000;

/// [`clone_process`] that starts the child in the cgroup v2 directory `cgroup`
/// (CLONE_INTO_CGROUP, kernel 5.7+), so nobody has to move it there. Fails (ENOSYS,
/// E2BIG, EINVAL, ...) where the kernel cannot; the caller then clones without it.
pub fn clone_into_cgroup(flags: libc::c_ulong, cgroup: BorrowedFd<'_>) -> nix::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64 | CLONE_INTO_CGROUP,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        cgroup: cgroup.as_raw_fd() as u64,
        ..CloneArgs::default()
    };
    // SAFETY: as in clone_process; `args` is a valid version-2 clone_args of the size we
    // pass, and `cgroup` is an open fd for the duration of the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            std::mem::size_of::<CloneArgs>(),
        )
    };
    forked(ret, pidfd)
}

/// Fork-like clone with namespace `flags`, always asking for a pidfd (CLONE_PIDFD) so the
/// caller can wait for this exact process without a pid-reuse race. Uses clone3(2) and
/// falls back to clone(2) on kernels without it. With a NULL stack both behave like
/// fork(2): the child continues on a copy of the caller's stack, which is sound here
/// because lowrt is single-threaded and the child never returns into the caller's frames
/// that another thread could be using.
pub fn clone_process(flags: libc::c_ulong) -> nix::Result<Forked> {
    let mut pidfd: libc::c_int = -1;
    let mut args = CloneArgs {
        flags: flags | libc::CLONE_PIDFD as u64,
        pidfd: std::ptr::addr_of_mut!(pidfd) as u64,
        exit_signal: libc::SIGCHLD as u64,
        ..CloneArgs::default()
    };
    // SAFETY: `args` is a valid clone_args of the size we pass and lives across the call;
    // `pidfd` outlives the call. stack = 0 gives fork semantics (see the doc comment).
    let mut ret = unsafe {
        libc::syscall(
            libc::SYS_clone3,
            std::ptr::addr_of_mut!(args),
            CLONE_ARGS_SIZE_VER0,
        )
    };
    if ret == -1 && Errno::last() == Errno::ENOSYS {
        // SAFETY: legacy clone with a NULL stack is fork-like; with CLONE_PIDFD the kernel
        // stores the pidfd through the parent_tid argument, which points to `pidfd`.
        ret = unsafe {
            libc::syscall(
                libc::SYS_clone,
                flags | libc::CLONE_PIDFD as libc::c_ulong | libc::SIGCHLD as libc::c_ulong,
                std::ptr::null_mut::<libc::c_void>(),
                std::ptr::addr_of_mut!(pidfd),
                std::ptr::null_mut::<libc::c_int>(),
                0 as libc::c_ulong,
            )
        };
    }
    forked(ret, pidfd)
}

fn forked(ret: libc::c_long, pidfd: libc::c_int) -> nix::Result<Forked> {
    match ret {
        -1 => Err(Errno::last()),
        0 => Ok(Forked::Child),
        pid => {
            // SAFETY: the kernel just stored a fresh pidfd that nothing else owns.
            let pidfd = unsafe { OwnedFd::from_raw_fd(pidfd) };
            Ok(Forked::Parent {
                pid: Pid::from_raw(pid as i32),
                pidfd,
            })
        }
    }
}

/// pidfd_open(2): a pidfd for a process that is not our child (delete, start).
pub fn pidfd_open(pid: Pid) -> nix::Result<OwnedFd> {
    // SAFETY: plain syscall with integer arguments.
    let ret = unsafe { libc::syscall(libc::SYS_pidfd_open, pid.as_raw(), 0) };
    if ret < 0 {
        return Err(Errno::last());
    }
    // SAFETY: the kernel returned a new fd that we now own.
    Ok(unsafe { OwnedFd::from_raw_fd(ret as RawFd) })
}

/// ioctl(NS_GET_NSTYPE) on an nsfs fd: the CLONE_NEW* flag of its namespace (Linux 4.11).
pub fn ns_type(fd: BorrowedFd<'_>) -> nix::Result<libc::c_int> {
    const NS_GET_NSTYPE: libc::c_ulong = 0xb703; // _IO(0xb7, 0x3), linux/nsfs.h
                                                 // SAFETY: an argument-less ioctl on a valid fd; the result is the return value.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), NS_GET_NSTYPE) })
}

/// kill(2) with a raw signal number, so real-time signals work too.
pub fn kill(pid: Pid, signal: i32) -> nix::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    Errno::result(unsafe { libc::kill(pid.as_raw(), signal) }).map(drop)
}

/// Marks every fd from `first` up close-on-exec (close_range(2), CLOSE_RANGE_CLOEXEC), so
/// nothing of the runtime leaks into the container while we still use them until exec.
pub fn cloexec_from(first: u32) -> nix::Result<()> {
    // SAFETY: plain syscall with integer arguments.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_close_range,
            first,
            u32::MAX,
            libc::CLOSE_RANGE_CLOEXEC,
        )
    };
    Errno::result(ret).map(drop)
}

/// Makes the terminal `fd` the controlling terminal of the calling session leader.
pub fn set_controlling_tty(fd: BorrowedFd<'_>) -> nix::Result<()> {
    // SAFETY: TIOCSCTTY takes an integer argument (0: do not steal).
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSCTTY, 0) }).map(drop)
}

/// setdomainname(2).
pub fn set_domainname(name: &str) -> nix::Result<()> {
    // SAFETY: the pointer and length describe `name`, which outlives the call.
    let ret = unsafe { libc::setdomainname(name.as_ptr().cast(), name.len()) };
    Errno::result(ret).map(drop)
}

/// Brings the loopback interface of the current network namespace up, as runc does for a
/// new network namespace (SIOCGIFFLAGS / SIOCSIFFLAGS on a datagram socket).
pub fn loopback_up() -> nix::Result<()> {
    use nix::sys::socket::{socket, AddressFamily, SockFlag, SockType};
    let sock = socket(
        AddressFamily::Inet,
        SockType::Datagram,
        SockFlag::SOCK_CLOEXEC,
        None,
    )?;
    // SAFETY: ifreq is plain old data; all-zero is a valid value.
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(b"lo\0") {
        *dst = *src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq naming "lo"; the kernel fills ifru_flags.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS, &mut req) })?;
    // SAFETY: reading the union member SIOCGIFFLAGS just wrote.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    req.ifr_ifru.ifru_flags = flags | libc::IFF_UP as libc::c_short;
    // SAFETY: as above, with the flags set.
    Errno::result(unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS, &req) }).map(drop)
}

/// Leaves the process at once, without running exit handlers or flushing stdio buffers
/// that were copied from the parent at clone time (they would print twice).
pub fn exit_now(code: i32) -> ! {
    // SAFETY: _exit never returns and touches no Rust state.
    unsafe { libc::_exit(code) }
}

/// Restores SIGPIPE to its default action. Rust's runtime ignores SIGPIPE at start-up and
/// an ignored disposition survives execve(2), so without this `yes | head` in a container
/// would never end.
pub fn default_sigpipe() -> nix::Result<()> {
    use nix::sys::signal::{signal, SigHandler, Signal};
    // SAFETY: installing SIG_DFL runs no handler code; we are single-threaded.
    unsafe { signal(Signal::SIGPIPE, SigHandler::SigDfl) }.map(drop)
}

/// Takes ownership of an fd our previous image left open for us across execve (its number
/// comes in the environment, see cloned_binary.rs), marking it close-on-exec. Fails with
/// EBADF when no such fd is open.
pub fn adopt_inherited_fd(fd: RawFd) -> nix::Result<OwnedFd> {
    if fd < 3 {
        return Err(Errno::EBADF);
    }
    set_cloexec(fd)?;
    // SAFETY: the fd is open (F_SETFD succeeded) and was handed to this image alone by
    // the previous one, which allocated it; nothing else in this process refers to it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Sets FD_CLOEXEC on a raw fd number we do not own (fds inherited from our caller).
pub fn set_cloexec(fd: RawFd) -> nix::Result<()> {
    // SAFETY: F_SETFD with an integer flag; an invalid fd only yields EBADF.
    Errno::result(unsafe { libc::fcntl(fd, libc::F_SETFD, libc::FD_CLOEXEC) }).map(drop)
}

/// Receives one fd sent with SCM_RIGHTS (the console-socket protocol, receiving side;
/// used by `run` with a terminal in the future and by tests today).
pub fn recv_fd(socket: BorrowedFd<'_>) -> nix::Result<Option<OwnedFd>> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut buf = [0u8; 4096];
    let mut iov = [std::io::IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            if let Some(fd) = fds.first() {
                // SAFETY: the kernel just installed this fd for us; nothing else owns it.
                return Ok(Some(unsafe { OwnedFd::from_raw_fd(*fd) }));
            }
        }
    }
    Ok(None)
}

/// The window size of terminal `fd` (TIOCGWINSZ).
pub fn window_size(fd: BorrowedFd<'_>) -> nix::Result<libc::winsize> {
    // SAFETY: winsize is plain old data; all-zero is valid.
    let mut ws: libc::winsize = unsafe { std::mem::zeroed() };
    // SAFETY: TIOCGWINSZ writes one winsize into the pointer we pass.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCGWINSZ, &mut ws) })?;
    Ok(ws)
}

/// Sets the window size of terminal `fd` (TIOCSWINSZ).
pub fn set_window_size(fd: BorrowedFd<'_>, ws: &libc::winsize) -> nix::Result<()> {
    // SAFETY: TIOCSWINSZ reads one winsize from the pointer we pass.
    Errno::result(unsafe { libc::ioctl(fd.as_raw_fd(), libc::TIOCSWINSZ, ws) }).map(drop)
}

/// personality(2): the execution domain (PER_LINUX32 makes `uname -m` say i686).
pub fn set_personality(persona: libc::c_ulong) -> nix::Result<()> {
    // SAFETY: personality takes a plain integer and returns the old value or -1.
    Errno::result(unsafe { libc::personality(persona) }).map(drop)
}

/// One packet and the first fd that came with it (SCM_RIGHTS), for the sync channel.
pub fn recv_packet(
    socket: BorrowedFd<'_>,
    buf: &mut [u8],
) -> nix::Result<(usize, Option<OwnedFd>)> {
    use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
    let mut iov = [std::io::IoSliceMut::new(buf)];
    let mut space = nix::cmsg_space!([RawFd; 1]);
    let msg = recvmsg::<()>(
        socket.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::MSG_CMSG_CLOEXEC,
    )?;
    let mut fd = None;
    for cmsg in msg.cmsgs()? {
        if let ControlMessageOwned::ScmRights(fds) = cmsg {
            for raw in fds {
                // SAFETY: the kernel just installed this fd for us; nothing else owns it.
                let owned = unsafe { OwnedFd::from_raw_fd(raw) };
                fd.get_or_insert(owned);
            }
        }
    }
    Ok((msg.bytes, fd))
}

/// Sends `data` with `fd` attached (SCM_RIGHTS); a raw fd because libseccomp owns the
/// notify fd and hands out only its number.
pub fn send_with_fd(socket: BorrowedFd<'_>, data: &[u8], fd: RawFd) -> nix::Result<()> {
    use nix::sys::socket::{sendmsg, ControlMessage, MsgFlags};
    let fds = [fd];
    let cmsg = [ControlMessage::ScmRights(&fds)];
    let iov = [std::io::IoSlice::new(data)];
    sendmsg::<()>(
        socket.as_raw_fd(),
        &iov,
        &cmsg,
        MsgFlags::MSG_NOSIGNAL,
        None,
    )
    .map(drop)
}

/// A detached, read-only overlayfs mount (fsopen/fsconfig/fsmount, Linux 5.2): an fd of
/// its root that is in no mount namespace's tree, so making it costs no mount event and
/// nothing needs unmounting (closing the last reference frees it). `lowerdir` is passed
/// as given (`a:b`; overlayfs needs two layers when there is no upper one).
pub fn overlay_ro_mount(lowerdir: &std::ffi::CStr) -> nix::Result<OwnedFd> {
    // SAFETY: both strings are NUL-terminated and outlive the call.
    let ctx = Errno::result(unsafe {
        libc::syscall(libc::SYS_fsopen, c"overlay".as_ptr(), libc::FSOPEN_CLOEXEC)
    })?;
    // SAFETY: fsopen returned a new fd that nothing else owns.
    let ctx = unsafe { OwnedFd::from_raw_fd(ctx as RawFd) };
    // SAFETY: key and value are NUL-terminated and outlive the call; aux is unused.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_SET_STRING,
            c"lowerdir".as_ptr(),
            lowerdir.as_ptr(),
            0,
        )
    })?;
    // SAFETY: FSCONFIG_CMD_CREATE takes no key or value (NULL pointers).
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsconfig,
            ctx.as_raw_fd(),
            libc::FSCONFIG_CMD_CREATE,
            std::ptr::null::<libc::c_char>(),
            std::ptr::null::<libc::c_char>(),
            0,
        )
    })?;
    let attrs = libc::MOUNT_ATTR_RDONLY | libc::MOUNT_ATTR_NODEV | libc::MOUNT_ATTR_NOSUID;
    // SAFETY: integer arguments only.
    let mnt = Errno::result(unsafe {
        libc::syscall(
            libc::SYS_fsmount,
            ctx.as_raw_fd(),
            libc::FSMOUNT_CLOEXEC,
            attrs,
        )
    })?;
    // SAFETY: fsmount returned a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(mnt as RawFd) })
}

/// open_tree(OPEN_TREE_CLONE) of `source` (with its submounts when `recursive`), then
/// mount_setattr(MOUNT_ATTR_IDMAP) with the user namespace `userns` (Linux 5.12): a
/// detached idmapped copy of the tree, to be attached with [`move_mount_to`].
/// `recursive_attr` applies the idmap to the submounts too (runtime-spec `ridmap`).
pub fn idmapped_tree(
    source: &std::ffi::CStr,
    recursive: bool,
    recursive_attr: bool,
    userns: BorrowedFd<'_>,
) -> nix::Result<OwnedFd> {
    let mut flags = libc::OPEN_TREE_CLONE | libc::OPEN_TREE_CLOEXEC as libc::c_uint;
    if recursive {
        flags |= libc::AT_RECURSIVE as libc::c_uint;
    }
    // SAFETY: `source` is NUL-terminated and outlives the call.
    let tree = Errno::result(unsafe {
        libc::syscall(libc::SYS_open_tree, libc::AT_FDCWD, source.as_ptr(), flags)
    })?;
    // SAFETY: open_tree returned a new fd that nothing else owns.
    let tree = unsafe { OwnedFd::from_raw_fd(tree as RawFd) };
    let attr = libc::mount_attr {
        attr_set: libc::MOUNT_ATTR_IDMAP,
        attr_clr: 0,
        propagation: 0,
        userns_fd: userns.as_raw_fd() as u64,
    };
    let mut at = libc::AT_EMPTY_PATH;
    if recursive_attr {
        at |= libc::AT_RECURSIVE;
    }
    // SAFETY: `attr` is a valid mount_attr of the size passed and outlives the call; the
    // path is an empty NUL-terminated string.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_mount_setattr,
            tree.as_raw_fd(),
            c"".as_ptr(),
            at,
            std::ptr::addr_of!(attr),
            std::mem::size_of::<libc::mount_attr>(),
        )
    })?;
    Ok(tree)
}

/// move_mount(2) of the detached tree `tree` onto the file `target` is open on (both by
/// fd, so no path is resolved).
pub fn move_mount_to(tree: BorrowedFd<'_>, target: BorrowedFd<'_>) -> nix::Result<()> {
    let flags = libc::MOVE_MOUNT_F_EMPTY_PATH | libc::MOVE_MOUNT_T_EMPTY_PATH;
    // SAFETY: both paths are empty NUL-terminated strings; the fds are borrowed.
    Errno::result(unsafe {
        libc::syscall(
            libc::SYS_move_mount,
            tree.as_raw_fd(),
            c"".as_ptr(),
            target.as_raw_fd(),
            c"".as_ptr(),
            flags,
        )
    })
    .map(drop)
}
