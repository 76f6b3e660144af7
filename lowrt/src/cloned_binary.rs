//! CVE-2019-5736 guard. A process running lowrt's binary becomes visible inside the
//! container (init before its execve, every `exec` child, or lowrt run as the container's
//! own `#!/proc/self/exe` interpreter). A container process could open /proc/<pid>/exe and,
//! once lowrt exits, reopen it for writing and replace the host's runtime binary.
//!
//! Like runc (libcontainer/nsenter/cloned_binary.c) and crun, the commands that enter a
//! container re-execute lowrt from a sealed memfd copy of itself: /proc/<pid>/exe then
//! names an anonymous in-memory file whose seals (F_SEAL_WRITE, SHRINK, GROW, SEAL) make
//! every write fail, and the host binary is never the exe of a container-visible process.
//! The copy costs one copy_file_range of the binary into tmpfs (~1 ms for a release build)
//! and is done only for `create`, `run` and `exec`.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};

#[derive(Debug, thiserror::Error)]
pub enum ClonedBinaryError {
    #[error("cannot open /proc/self/exe: {0}")]
    OpenSelf(#[source] std::io::Error),
    #[error("cannot create the sealed copy of the runtime binary: {op}: {source}")]
    Memfd {
        op: &'static str,
        source: nix::errno::Errno,
    },
    #[error("cannot copy the runtime binary into a memfd: {0}")]
    Copy(#[source] std::io::Error),
    #[error("argument or environment contains a NUL byte")]
    Nul,
}

fn seals() -> SealFlag {
    SealFlag::F_SEAL_SEAL | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_WRITE
}

/// Whether we already run from a sealed copy.
pub fn is_sealed() -> Result<bool, ClonedBinaryError> {
    let exe = File::open("/proc/self/exe").map_err(ClonedBinaryError::OpenSelf)?;
    Ok(match fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS) {
        Ok(bits) => SealFlag::from_bits_truncate(bits).contains(seals()),
        Err(_) => false,
    })
}

/// Re-executes the current command line from a sealed memfd unless already running from
/// one. Returns only on error (or when already sealed).
pub fn ensure_sealed() -> Result<(), ClonedBinaryError> {
    if is_sealed()? {
        return Ok(());
    }
    let mut exe = File::open("/proc/self/exe").map_err(ClonedBinaryError::OpenSelf)?;
    let flags = MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING;
    let fd: OwnedFd =
        memfd_create(c"berth-lowrt", flags).map_err(|source| ClonedBinaryError::Memfd {
            op: "memfd_create",
            source,
        })?;
    let mut copy = File::from(fd);
    // std::io::copy uses copy_file_range/sendfile between two files.
    std::io::copy(&mut exe, &mut copy).map_err(ClonedBinaryError::Copy)?;
    fcntl(copy.as_fd(), FcntlArg::F_ADD_SEALS(seals()))
        .map_err(|source| ClonedBinaryError::Memfd { op: "seal", source })?;
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| ClonedBinaryError::Nul)?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()
        .map_err(|_| ClonedBinaryError::Nul)?;
    // MFD_CLOEXEC is fine for an ELF binary: the kernel has it mapped before closing fds.
    let err = nix::unistd::fexecve(copy.as_fd(), &args, &env).unwrap_err();
    Err(ClonedBinaryError::Memfd {
        op: "fexecve",
        source: err,
    })
}
