//! seccomp(2) SECCOMP_SET_MODE_FILTER by hand, so every kernel flag works whatever the
//! libseccomp version (2.5 has no WAIT_KILLABLE_RECV), and the flag probe `features` uses.

use std::os::fd::{FromRawFd, OwnedFd};

use nix::errno::Errno;

const SECCOMP_SET_MODE_FILTER: libc::c_ulong = 1;

/// Loads `prog` with `flags`; with SECCOMP_FILTER_FLAG_NEW_LISTENER the kernel returns the
/// notification fd (close-on-exec).
pub fn set_mode_filter(
    prog: &[libc::sock_filter],
    flags: libc::c_ulong,
) -> nix::Result<Option<OwnedFd>> {
    let len = u16::try_from(prog.len()).map_err(|_| Errno::E2BIG)?;
    let fprog = libc::sock_fprog {
        len,
        // The kernel only reads through this pointer.
        filter: prog.as_ptr().cast_mut(),
    };
    // SAFETY: `fprog` points to `len` valid sock_filter entries that outlive the call.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::addr_of!(fprog),
        )
    };
    let ret = Errno::result(ret)?;
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        // SAFETY: with NEW_LISTENER a non-negative return is a new fd that we now own.
        return Ok(Some(unsafe { OwnedFd::from_raw_fd(ret as i32) }));
    }
    Ok(None)
}

/// Whether the kernel accepts `flags`: with a NULL program a known flag set fails with
/// EFAULT (the program is read after the flags are checked), an unknown one with EINVAL
/// (the probe libseccomp and runc use). Nothing is loaded either way.
pub fn flags_supported(flags: libc::c_ulong) -> bool {
    // SAFETY: a NULL program pointer is never dereferenced by the kernel's flag check and
    // otherwise makes the call fail with EFAULT.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_seccomp,
            SECCOMP_SET_MODE_FILTER,
            flags,
            std::ptr::null::<libc::sock_fprog>(),
        )
    };
    ret == -1 && Errno::last() == Errno::EFAULT
}
