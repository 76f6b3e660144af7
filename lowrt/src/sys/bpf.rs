//! bpf(2) for cgroup device programs: load, attach, query, detach. The attr structs are
//! prefixes of `union bpf_attr` for each command; the kernel accepts a shorter attr than its
//! own as long as we pass our size.

use std::os::fd::{AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};

use nix::errno::Errno;

use crate::cgroups::devices_bpf::BpfInsn;

const BPF_PROG_LOAD: libc::c_long = 5;
const BPF_PROG_ATTACH: libc::c_long = 8;
const BPF_PROG_DETACH: libc::c_long = 9;
const BPF_PROG_GET_FD_BY_ID: libc::c_long = 13;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_PROG_TYPE_CGROUP_DEVICE: u32 = 15;
const BPF_CGROUP_DEVICE: u32 = 6;
const BPF_F_ALLOW_MULTI: u32 = 2;

#[repr(C)]
#[derive(Default)]
struct ProgLoadAttr {
    prog_type: u32,
    insn_cnt: u32,
    insns: u64,
    license: u64,
    log_level: u32,
    log_size: u32,
    log_buf: u64,
    kern_version: u32,
    prog_flags: u32,
    prog_name: [u8; 16],
    prog_ifindex: u32,
    expected_attach_type: u32,
}

#[repr(C)]
#[derive(Default)]
struct AttachAttr {
    target_fd: u32,
    attach_bpf_fd: u32,
    attach_type: u32,
    attach_flags: u32,
    replace_bpf_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct QueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
    _pad: u32,
    prog_attach_flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct GetIdAttr {
    prog_id: u32,
    next_id: u32,
    open_flags: u32,
}

/// bpf(cmd, attr, sizeof attr).
///
/// # Safety
/// `attr` must be the attr struct `cmd` expects, and every pointer stored in it must be valid
/// for the kernel to read (or write, for output buffers) for the duration of the call.
unsafe fn bpf<T>(cmd: libc::c_long, attr: &mut T) -> nix::Result<libc::c_long> {
    // SAFETY: the caller guarantees the attr and its pointers; the size is the struct's own.
    let ret = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            std::ptr::from_mut(attr),
            std::mem::size_of::<T>(),
        )
    };
    Errno::result(ret)
}

/// Loads a BPF_PROG_TYPE_CGROUP_DEVICE program. On failure the verifier's log comes back
/// with the errno (a second load with a log buffer, as cilium/ebpf does for runc).
pub fn load_device_program(insns: &[BpfInsn]) -> Result<OwnedFd, (Errno, String)> {
    let license = c"Apache";
    let mut attr = ProgLoadAttr {
        prog_type: BPF_PROG_TYPE_CGROUP_DEVICE,
        insn_cnt: insns.len() as u32,
        insns: insns.as_ptr() as u64,
        license: license.as_ptr() as u64,
        ..ProgLoadAttr::default()
    };
    // SAFETY: `insns` (8-byte bpf_insn records, repr(C)) and `license` outlive the call; no
    // output buffer is given.
    if let Ok(fd) = unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        // SAFETY: BPF_PROG_LOAD returns a new fd that nothing else owns.
        return Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) });
    }
    let mut log = vec![0u8; 64 * 1024];
    attr.log_level = 1;
    attr.log_size = log.len() as u32;
    attr.log_buf = log.as_mut_ptr() as u64;
    // SAFETY: as above, plus `log` is writable for log_size bytes and outlives the call.
    match unsafe { bpf(BPF_PROG_LOAD, &mut attr) } {
        // SAFETY: BPF_PROG_LOAD returns a new fd that nothing else owns.
        Ok(fd) => Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) }),
        Err(e) => {
            let end = log.iter().position(|b| *b == 0).unwrap_or(log.len());
            Err((e, String::from_utf8_lossy(&log[..end]).trim().to_owned()))
        }
    }
}

/// BPF_PROG_ATTACH of a device program to a cgroup, with BPF_F_ALLOW_MULTI so the programs
/// of the parents keep running too.
pub fn attach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> nix::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        attach_flags: BPF_F_ALLOW_MULTI,
        ..AttachAttr::default()
    };
    // SAFETY: a plain attr without pointers; both fds are borrowed for the call.
    unsafe { bpf(BPF_PROG_ATTACH, &mut attr) }.map(drop)
}

/// BPF_PROG_DETACH of one device program from a cgroup.
pub fn detach_device_program(cgroup: BorrowedFd<'_>, prog: BorrowedFd<'_>) -> nix::Result<()> {
    let mut attr = AttachAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_bpf_fd: prog.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        ..AttachAttr::default()
    };
    // SAFETY: a plain attr without pointers; both fds are borrowed for the call.
    unsafe { bpf(BPF_PROG_DETACH, &mut attr) }.map(drop)
}

/// The ids of the device programs attached directly to a cgroup (not inherited ones).
pub fn query_device_programs(cgroup: BorrowedFd<'_>) -> nix::Result<Vec<u32>> {
    let mut ids = vec![0u32; 64];
    let mut attr = QueryAttr {
        target_fd: cgroup.as_raw_fd() as u32,
        attach_type: BPF_CGROUP_DEVICE,
        prog_ids: ids.as_mut_ptr() as u64,
        prog_cnt: ids.len() as u32,
        ..QueryAttr::default()
    };
    // SAFETY: `ids` is writable for prog_cnt u32s and outlives the call.
    unsafe { bpf(BPF_PROG_QUERY, &mut attr) }?;
    ids.truncate(attr.prog_cnt.min(64) as usize);
    Ok(ids)
}

/// An fd for the program with this id.
pub fn program_by_id(id: u32) -> nix::Result<OwnedFd> {
    let mut attr = GetIdAttr {
        prog_id: id,
        ..GetIdAttr::default()
    };
    // SAFETY: a plain attr without pointers.
    let fd = unsafe { bpf(BPF_PROG_GET_FD_BY_ID, &mut attr) }?;
    // SAFETY: BPF_PROG_GET_FD_BY_ID returns a new fd that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}
