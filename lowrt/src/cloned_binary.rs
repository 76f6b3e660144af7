//! CVE-2019-5736 guard. A process running lowrt's binary becomes visible inside the
//! container (init before its execve, every `exec` child, or lowrt run as the container's
//! own `#!/proc/self/exe` interpreter). A container process could open /proc/<pid>/exe and,
//! once lowrt exits, reopen it for writing and replace the host's runtime binary.
//!
//! The commands that enter a container (`create`, `run`, `exec`) re-execute lowrt from a
//! file no process can write, so the host binary is never the exe of a container-visible
//! process. Like runc 1.2, first from a private read-only overlayfs: a detached mount
//! (fsmount, in no mount tree) whose upper layer is the binary's directory; opening its
//! /proc/<pid>/exe for writing fails with EROFS, and there is nothing to copy (the pages
//! are the page cache's). Where that is refused (no overlayfs, no fsopen, no privilege),
//! like runc 1.1 and crun, from a sealed memfd copy: F_SEAL_WRITE, SHRINK, GROW and SEAL
//! make every write fail; the copy of the whole binary costs 1–4 ms.
//!
//! Closing the last fd of that detached mount unmounts it, which waits for an RCU grace
//! period (0.1–5 ms here). So the fd is not closed before the re-exec: it survives execve
//! (its number in `_BERTH_LOWRT_OVERLAY_FD`), the new image adopts it, and the runtime
//! drops it with [`release_overlay`] right after cloning the container's process, while
//! that process builds the container. The clone drops its copy first thing (not the last
//! reference, so nothing waits), so it never reaches the container.

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{AsFd, AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;

use std::path::Path;
use std::sync::Mutex;

use nix::errno::Errno;
use nix::fcntl::{fcntl, AtFlags, FcntlArg, OFlag, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use nix::sys::stat::Mode;

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

const OVERLAYFS_SUPER_MAGIC: i64 = 0x794c_7630;
const OVERLAY_FD_ENV: &str = "_BERTH_LOWRT_OVERLAY_FD";

/// The detached overlay mount we were exec'd from, until [`release_overlay`].
static OVERLAY: Mutex<Option<OwnedFd>> = Mutex::new(None);

/// Drops our reference to the detached overlay mount of the re-exec, if we hold one. In
/// the runtime after clone, this is the unmount (and its grace period); in the clone, it
/// only closes a copy.
pub fn release_overlay() {
    let fd = OVERLAY.lock().map(|mut g| g.take()).unwrap_or_default();
    drop(fd);
}

/// Takes over the overlay mount fd the previous image left open, if the environment
/// names one that is an overlayfs, and removes the variable so no child inherits it.
fn adopt_overlay() {
    let Some(raw) = std::env::var_os(OVERLAY_FD_ENV) else {
        return;
    };
    std::env::remove_var(OVERLAY_FD_ENV);
    let Some(fd) = raw.to_str().and_then(|t| t.parse().ok()) else {
        return;
    };
    let Ok(fd) = crate::sys::adopt_inherited_fd(fd) else {
        return;
    };
    let overlay = nix::sys::statfs::fstatfs(&fd)
        .is_ok_and(|st| st.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC);
    if overlay {
        if let Ok(mut slot) = OVERLAY.lock() {
            *slot = Some(fd);
        }
    }
}

/// Whether we already run from a sealed copy or a read-only overlayfs.
pub fn is_sealed() -> Result<bool, ClonedBinaryError> {
    let exe = File::open("/proc/self/exe").map_err(ClonedBinaryError::OpenSelf)?;
    if let Ok(bits) = fcntl(exe.as_fd(), FcntlArg::F_GET_SEALS) {
        return Ok(SealFlag::from_bits_truncate(bits).contains(seals()));
    }
    let overlay = nix::sys::statfs::fstatfs(&exe)
        .is_ok_and(|st| st.filesystem_type().0 == OVERLAYFS_SUPER_MAGIC);
    let read_only = nix::sys::statvfs::fstatvfs(&exe)
        .is_ok_and(|st| st.flags().contains(nix::sys::statvfs::FsFlags::ST_RDONLY));
    Ok(overlay && read_only)
}

/// The second, lower layer overlayfs needs without an upper one: any directory that is
/// neither above nor below the binary's (overlayfs refuses overlapping layers). Its
/// entries never matter: the binary's name is found in the upper layer.
fn spare_layer(bin_dir: &Path) -> Option<&'static Path> {
    ["/dev", "/run", "/tmp", "/var", "/etc"]
        .into_iter()
        .map(Path::new)
        .find(|d| !bin_dir.starts_with(d) && !d.starts_with(bin_dir) && d.is_dir())
}

/// execveat of our binary inside a fresh read-only overlay. Returns only on error.
fn exec_from_overlay(args: &[CString], env: &[CString]) -> nix::Result<()> {
    let exe = std::fs::read_link("/proc/self/exe").map_err(|_| Errno::ENOENT)?;
    let (Some(dir), Some(name)) = (exe.parent(), exe.file_name()) else {
        return Err(Errno::ENOENT);
    };
    let spare = spare_layer(dir).ok_or(Errno::ENOENT)?;
    // ':' and ',' are overlayfs syntax; such a directory takes the memfd path.
    let dir_bytes = dir.as_os_str().as_bytes();
    if dir_bytes.iter().any(|b| matches!(b, b':' | b',' | b'\\')) {
        return Err(Errno::EINVAL);
    }
    let lower = CString::new([dir_bytes, b":", spare.as_os_str().as_bytes()].concat())
        .map_err(|_| Errno::EINVAL)?;
    let mnt = crate::sys::overlay_ro_mount(&lower)?;
    let bin = nix::fcntl::openat(
        &mnt,
        name,
        OFlag::O_PATH | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
        Mode::empty(),
    )?;
    // Kept open across execve: the new image closes it later, off the critical path.
    fcntl(mnt.as_fd(), FcntlArg::F_SETFD(nix::fcntl::FdFlag::empty()))?;
    let mut env = env.to_vec();
    env.push(
        CString::new(format!("{OVERLAY_FD_ENV}={}", mnt.as_raw_fd())).map_err(|_| Errno::EINVAL)?,
    );
    // O_CLOEXEC on an O_PATH fd with AT_EMPTY_PATH is fine for an ELF binary (see below).
    nix::unistd::execveat(&bin, c"", args, &env, AtFlags::AT_EMPTY_PATH).map(drop)
}

/// Re-executes the current command line from a sealed memfd unless already running from
/// one. Returns only on error (or when already sealed).
pub fn ensure_sealed() -> Result<(), ClonedBinaryError> {
    adopt_overlay();
    if is_sealed()? {
        return Ok(());
    }
    let (args, env) = command_line()?;
    if let Err(e) = exec_from_overlay(&args, &env) {
        tracing::debug!("no read-only overlay for the runtime binary ({e}); copying it");
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
    // MFD_CLOEXEC is fine for an ELF binary: the kernel has it mapped before closing fds.
    let err = nix::unistd::fexecve(copy.as_fd(), &args, &env).unwrap_err();
    Err(ClonedBinaryError::Memfd {
        op: "fexecve",
        source: err,
    })
}

type CommandLine = (Vec<CString>, Vec<CString>);

fn command_line() -> Result<CommandLine, ClonedBinaryError> {
    let args: Vec<CString> = std::env::args_os()
        .map(|a| CString::new(a.as_bytes()))
        .collect::<Result<_, _>>()
        .map_err(|_| ClonedBinaryError::Nul)?;
    let env: Vec<CString> = std::env::vars_os()
        .map(|(k, v)| CString::new([k.as_bytes(), b"=", v.as_bytes()].concat()))
        .collect::<Result<_, _>>()
        .map_err(|_| ClonedBinaryError::Nul)?;
    Ok((args, env))
}
