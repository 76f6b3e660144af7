//! What runs inside the new process after clone, up to execve: an ordered list of small
//! phases. Container init (create/run) and exec processes share the process phases at
//! the end; only init builds the rootfs and waits on exec.fifo for `start`.
//!
//! Every failure becomes an [`InitError`] whose text the parent prints; nothing here
//! logs, since the error is reported exactly once, by the parent.

mod console;
mod process;

use std::convert::Infallible;
use std::os::fd::OwnedFd;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::mount::MsFlags;
use oci_spec::runtime::{LinuxNamespaceType, Process, Spec};

use crate::cgroups::{CgroupError, CgroupManager, Placement};
use crate::channel::{self, Message};
use crate::namespaces::{self, NamespaceError};
use crate::rootfs::{self, RootfsError, RootfsPlan};
use crate::syscall::{Syscall, SyscallError};

pub use process::lookup_executable;

#[derive(Debug, thiserror::Error)]
pub enum InitError {
    #[error(transparent)]
    Sys(#[from] SyscallError),
    #[error(transparent)]
    Rootfs(#[from] RootfsError),
    #[error("cannot join cgroup: {0}")]
    Cgroup(#[from] CgroupError),
    #[error(transparent)]
    Namespace(#[from] NamespaceError),
    /// runc's exact shape (`exec: "x": stat x: no such file or directory`), which docker
    /// maps to exit codes 126/127.
    #[error("exec: {name:?}: {reason}")]
    Exec { name: String, reason: String },
    #[error("{what}: {}", crate::syscall::errno_text(*source))]
    Errno {
        what: String,
        source: nix::errno::Errno,
    },
    #[error("set capabilities ({what}): {source}")]
    Caps {
        what: &'static str,
        source: caps::errors::CapsError,
    },
    #[error("set oom_score_adj to {value}: {reason}")]
    OomScoreAdj { value: i32, reason: String },
    #[error("chdir to cwd {path:?} set in config.json: {}", crate::syscall::errno_text(*source))]
    Cwd {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("write sysctl {key}: {source}")]
    Sysctl { key: String, source: std::io::Error },
    #[error("wait for start on exec.fifo: {}", crate::syscall::errno_text(*source))]
    Fifo { source: nix::errno::Errno },
    #[error("{0}")]
    Channel(#[from] crate::channel::ChannelError),
    #[error(transparent)]
    Seccomp(#[from] crate::seccomp::SeccompError),
    #[error(transparent)]
    Lsm(#[from] crate::lsm::LsmError),
    #[error(transparent)]
    Hook(#[from] crate::hooks::HookError),
    #[error("lost the runtime while waiting for it on the sync channel")]
    HookSync,
}

pub(crate) fn errno(what: impl Into<String>) -> impl FnOnce(nix::errno::Errno) -> InitError {
    let what = what.into();
    move |source| InitError::Errno { what, source }
}

/// Everything the child needs; it is a forked copy of the parent, so plain references
/// work and nothing is serialized.
pub struct InitContext<'a> {
    pub id: &'a str,
    pub sys: &'a dyn Syscall,
    pub spec: &'a Spec,
    pub process: &'a Process,
    pub rootfs: PathBuf,
    pub bundle: PathBuf,
    pub cgroup: &'a dyn CgroupManager,
    pub joins: &'a [namespaces::Join],
    pub unshare_later: nix::sched::CloneFlags,
    pub console: Option<&'a UnixStream>,
    /// O_PATH fd of exec.fifo (init only).
    pub fifo: Option<&'a OwnedFd>,
    pub preserve_fds: u32,
    /// `--no-pivot` (init only).
    pub no_pivot: bool,
    pub sync: &'a OwnedFd,
    /// Per spec mount, the idmapped tree the runtime made (init only; else empty).
    pub idmapped: &'a [Option<OwnedFd>],
    /// What this process writes to enter the container's cgroups.
    pub placement: &'a Placement,
    /// Whether clone3 already put us in the cgroup v2 one (CLONE_INTO_CGROUP).
    pub cloned_into: bool,
}

type Phase = (
    &'static str,
    fn(&mut InitContext<'_>) -> Result<(), InitError>,
);

/// Container init, in order. Names are used only in debug output and docs.
pub const INIT_PHASES: &[Phase] = &[
    // The runtime writes uid_map/gid_map and says Go.
    ("wait for id maps", wait_for_runtime),
    // Through files the runtime opened (cgroups::Placement), so no RCU grace period is
    // waited for. Before everything else: hooks and the process run in the cgroups, and
    // a cgroup namespace is rooted at the creator's cgroup.
    ("join cgroups", join_cgroups),
    ("become root of the user namespace", user_namespace_root),
    ("join namespaces by path", join_namespaces),
    ("unshare cgroup namespace", unshare_later),
    ("bring up loopback", loopback),
    ("rootfs mounts and devices", rootfs_phase),
    // Namespaces and mounts exist, the old root is still reachable: the runtime runs
    // prestart/createRuntime, we run createContainer (runtime-spec "Lifecycle" 5-7).
    ("createRuntime and createContainer hooks", create_hooks),
    ("pivot_root", pivot_root),
    // After pivot_root: the pty must come from the container's own devpts.
    ("console", console::setup),
    ("hostname", hostname),
    ("sysctl", sysctl),
    ("read-only and masked paths", finalize_rootfs),
];

/// Exec processes: join everything of the running container.
pub const EXEC_PHASES: &[Phase] = &[
    ("join cgroups", join_cgroups),
    ("join namespaces", join_namespaces),
    ("console", console::setup),
];

/// Runs `phases`, then the process phases, then (init) waits for start, then execs.
pub fn run(
    ctx: &mut InitContext<'_>,
    phases: &[Phase],
    is_init: bool,
) -> Result<Infallible, InitError> {
    process::reset_signals();
    for (name, phase) in phases {
        tracing::debug!(id = ctx.id, "init phase: {name}");
        phase(ctx)?;
    }
    let target = process::prepare(ctx)?;
    if is_init {
        channel::send(ctx.sync, &Message::Ready)?;
    }
    process::close_fds(ctx.preserve_fds)?;
    if let Some(fifo) = ctx.fifo {
        process::wait_for_start(fifo)?;
        let hooks = crate::hooks::at(ctx.spec, crate::hooks::Point::StartContainer);
        if !hooks.is_empty() {
            let state = crate::hooks::state_json(ctx.spec, ctx.id, "created", 1, &ctx.bundle);
            crate::hooks::run(crate::hooks::Point::StartContainer, hooks, &state)?;
        }
    }
    // With no_new_privs the filter goes in last, so it never sees the runtime's calls.
    if let Some(filter) = &target.seccomp {
        crate::seccomp::load(filter)?;
    }
    Err(process::exec(&target))
}

fn wait_for_runtime(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    match channel::recv(ctx.sync)? {
        Some(Message::Go) => Ok(()),
        _ => Err(InitError::HookSync),
    }
}

fn user_namespace_root(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    // New or joined by path (the runtime entered that one before clone).
    if !namespaces_of(ctx.spec)
        .iter()
        .any(|n| n.typ() == LinuxNamespaceType::User)
    {
        return Ok(());
    }
    // Our ids are unmapped until now; take the namespace's root where 0 is mapped
    // (user_namespaces(7)). Capabilities in the namespace are ours either way.
    let root_uid = nix::unistd::Uid::from_raw(0);
    let root_gid = nix::unistd::Gid::from_raw(0);
    match nix::unistd::setresgid(root_gid, root_gid, root_gid) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(errno("setgid 0 in the user namespace")(e)),
    }
    match nix::unistd::setresuid(root_uid, root_uid, root_uid) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => Ok(()),
        Err(e) => Err(errno("setuid 0 in the user namespace")(e)),
    }
}

fn join_cgroups(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    Ok(ctx.placement.join_self(ctx.cloned_into)?)
}

fn join_namespaces(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    Ok(namespaces::enter_all(ctx.joins)?)
}

fn unshare_later(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    if !ctx.unshare_later.is_empty() {
        ctx.sys.unshare(ctx.unshare_later)?;
    }
    Ok(())
}

fn namespaces_of(spec: &Spec) -> &[oci_spec::runtime::LinuxNamespace] {
    spec.linux()
        .as_ref()
        .and_then(|l| l.namespaces().as_deref())
        .unwrap_or(&[])
}

fn loopback(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    if namespaces::is_new(namespaces_of(ctx.spec), LinuxNamespaceType::Network) {
        crate::sys::loopback_up().map_err(errno("bring up loopback interface lo"))?;
    }
    Ok(())
}

fn rootfs_phase(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    let linux = ctx.spec.linux().as_ref();
    let propagation = linux
        .and_then(|l| l.rootfs_propagation().as_deref())
        .and_then(rootfs::options::propagation)
        .unwrap_or(MsFlags::MS_SLAVE | MsFlags::MS_REC);
    let ns = namespaces_of(ctx.spec);
    let plan = RootfsPlan {
        rootfs: &ctx.rootfs,
        bundle: &ctx.bundle,
        mounts: ctx.spec.mounts().as_deref().unwrap_or(&[]),
        idmapped: ctx.idmapped,
        propagation,
        devices: linux.and_then(|l| l.devices().as_deref()).unwrap_or(&[]),
        cgroup_sources: ctx.cgroup.mount_sources(),
        new_cgroupns: !ctx.unshare_later.is_empty(),
        new_netns: namespaces::is_new(ns, LinuxNamespaceType::Network),
    };
    rootfs::prepare(ctx.sys, &plan)?;
    Ok(())
}

fn create_hooks(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    use crate::hooks::{self, Point};
    let runtime_side = !hooks::at(ctx.spec, Point::Prestart).is_empty()
        || !hooks::at(ctx.spec, Point::CreateRuntime).is_empty();
    if runtime_side {
        channel::send(ctx.sync, &Message::Hooks)?;
        if channel::recv(ctx.sync)? != Some(Message::HooksDone) {
            return Err(InitError::HookSync);
        }
    }
    let own = hooks::at(ctx.spec, Point::CreateContainer);
    if !own.is_empty() {
        let state = hooks::state_json(ctx.spec, ctx.id, "creating", 1, &ctx.bundle);
        hooks::run(Point::CreateContainer, own, &state)?;
    }
    Ok(())
}

fn pivot_root(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    if ctx.no_pivot {
        return Ok(rootfs::move_root(ctx.sys, &ctx.rootfs)?);
    }
    Ok(rootfs::pivot_root(ctx.sys, &ctx.rootfs)?)
}

fn hostname(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    if let Some(name) = ctx.spec.hostname().as_deref().filter(|h| !h.is_empty()) {
        ctx.sys.sethostname(name)?;
    }
    if let Some(name) = ctx.spec.domainname().as_deref().filter(|h| !h.is_empty()) {
        ctx.sys.setdomainname(name)?;
    }
    Ok(())
}

fn sysctl(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    let Some(map) = ctx.spec.linux().as_ref().and_then(|l| l.sysctl().as_ref()) else {
        return Ok(());
    };
    for (key, value) in map {
        let path = Path::new("/proc/sys").join(key.replace('.', "/"));
        std::fs::write(&path, value).map_err(|source| InitError::Sysctl {
            key: key.clone(),
            source,
        })?;
    }
    Ok(())
}

fn finalize_rootfs(ctx: &mut InitContext<'_>) -> Result<(), InitError> {
    let linux = ctx.spec.linux().as_ref();
    let ro_root = ctx
        .spec
        .root()
        .as_ref()
        .and_then(|r| r.readonly())
        .unwrap_or(false);
    let ro = linux
        .and_then(|l| l.readonly_paths().as_deref())
        .unwrap_or(&[]);
    let masked = linux
        .and_then(|l| l.masked_paths().as_deref())
        .unwrap_or(&[]);
    rootfs::finalize(ctx.sys, Path::new("/"), ro_root, ro, masked)?;
    Ok(())
}
