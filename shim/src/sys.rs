//! The shim's only unsafe code: the pre-exec hook for daemonizing, adopting inherited or
//! received file descriptors, registering descriptors with the reactor, the terminal
//! window-size ioctl, and malloc tuning.

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

/// Leaves the caller's session, unless this process already leads one (`berth-shim
/// start` made it a session leader before exec). A shim that highd spawns directly does
/// this itself, so a signal to highd's process group or terminal never reaches it.
pub fn leave_session() -> std::io::Result<()> {
    match nix::unistd::setsid() {
        Ok(_) => Ok(()),
        // EPERM: already a process group (and session) leader.
        Err(nix::errno::Errno::EPERM) => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Points stdout and stderr at /dev/null. After readiness the caller stops reading the
/// pipes it gave us (highd waits for their EOF); nothing may write to them afterwards,
/// and the numbers must stay taken so no later descriptor becomes "stdout".
pub fn detach_stdio() -> std::io::Result<()> {
    let null = std::fs::OpenOptions::new().write(true).open("/dev/null")?;
    for fd in [libc::STDOUT_FILENO, libc::STDERR_FILENO] {
        // SAFETY: dup2 atomically replaces descriptor `fd` with a copy of an open
        // descriptor we own; nothing in this process holds `fd` as an owned File (the
        // readiness pipe, if it was `fd`, was released with into_raw_fd first).
        if unsafe { libc::dup2(std::os::fd::AsRawFd::as_raw_fd(&null), fd) } < 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    Ok(())
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

/// Tunes glibc malloc for a small, long-lived, single-threaded daemon (mallopt(3)): one
/// arena; buffers of 64 KiB and more (h2 send buffers, runtime output) from mmap, so they
/// go back to the kernel when freed; and the heap top given back beyond 64 KiB instead of
/// glibc's default 128 KiB plus 128 KiB padding. Must run before the first thread exists.
pub fn tune_malloc() {
    const KIB_64: libc::c_int = 64 * 1024;
    for (param, value) in [
        (libc::M_ARENA_MAX, 1),
        (libc::M_MMAP_THRESHOLD, KIB_64),
        (libc::M_TRIM_THRESHOLD, KIB_64),
        (libc::M_TOP_PAD, 16 * 1024),
    ] {
        // SAFETY: mallopt only changes malloc's tunables; every parameter here is valid
        // (it returns 0 and changes nothing otherwise), and no other thread is allocating.
        unsafe { libc::mallopt(param, value) };
    }
}

/// Drops the resident pages of `len` bytes at `start` (madvise(2) MADV_DONTNEED).
/// Only for clean, read-only, file-backed private mappings (idle.rs checks): their pages
/// come back from the file on the next access.
pub fn drop_pages(start: usize, len: usize) -> std::io::Result<()> {
    // SAFETY: the range is a whole mapping of this process taken from /proc/self/smaps;
    // for a private file mapping without private (copied) pages MADV_DONTNEED only
    // unmaps page-cache pages, and every later access refaults the same bytes from the
    // file, so no memory any code relies on changes or goes away.
    let rc = unsafe { libc::madvise(start as *mut libc::c_void, len, libc::MADV_DONTNEED) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(())
}

/// Returns the heap's free pages to the kernel (malloc_trim(3)): after a burst of calls
/// an idle shim otherwise keeps the high-water mark of its heap resident. Returns the bytes
/// still allocated (from the heap, from mmap) and free in the heap afterwards.
pub fn trim_heap() -> (usize, usize, usize) {
    // SAFETY: malloc_trim takes malloc's own lock and only releases free memory; it
    // touches no allocation that is in use.
    unsafe { libc::malloc_trim(0) };
    // SAFETY: mallinfo2 only reads malloc's counters under its lock and returns a plain
    // struct by value.
    let info = unsafe { libc::mallinfo2() };
    (info.uordblks, info.hblkhd, info.fordblks)
}
