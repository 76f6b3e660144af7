//! Extended attributes by fd (nix has no wrapper): list, get, set. Used by tmpcopyup to
//! carry a file's xattrs into the new tmpfs.

use std::ffi::{CStr, CString};
use std::os::fd::{AsRawFd, BorrowedFd};

use nix::errno::Errno;

/// The names of `fd`'s extended attributes.
pub fn list(fd: BorrowedFd<'_>) -> nix::Result<Vec<CString>> {
    let buf = sized_read(|ptr, len| {
        // SAFETY: `ptr` points to `len` writable bytes (or is NULL with len 0, the size
        // query); the kernel writes at most `len` bytes.
        unsafe { libc::flistxattr(fd.as_raw_fd(), ptr.cast(), len) }
    })?;
    Ok(buf
        .split(|b| *b == 0)
        .filter(|n| !n.is_empty())
        .filter_map(|n| CString::new(n).ok())
        .collect())
}

/// The value of attribute `name` of `fd`.
pub fn get(fd: BorrowedFd<'_>, name: &CStr) -> nix::Result<Vec<u8>> {
    sized_read(|ptr, len| {
        // SAFETY: as in `list`; `name` is NUL-terminated and outlives the call.
        unsafe { libc::fgetxattr(fd.as_raw_fd(), name.as_ptr(), ptr.cast(), len) }
    })
}

/// Sets attribute `name` of `fd` to `value`.
pub fn set(fd: BorrowedFd<'_>, name: &CStr, value: &[u8]) -> nix::Result<()> {
    // SAFETY: `name` is NUL-terminated and `value` is `value.len()` readable bytes, both
    // alive across the call.
    let ret = unsafe {
        libc::fsetxattr(
            fd.as_raw_fd(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    Errno::result(ret).map(drop)
}

/// Runs the size query, then the read; retries when the value grew in between (ERANGE).
fn sized_read(mut call: impl FnMut(*mut u8, usize) -> isize) -> nix::Result<Vec<u8>> {
    loop {
        let size = Errno::result(call(std::ptr::null_mut(), 0))?;
        if size == 0 {
            return Ok(Vec::new());
        }
        let mut buf = vec![0u8; size as usize];
        match Errno::result(call(buf.as_mut_ptr(), buf.len())) {
            Ok(n) => {
                buf.truncate(n as usize);
                return Ok(buf);
            }
            Err(Errno::ERANGE) => continue,
            Err(e) => return Err(e),
        }
    }
}
