//! `create`: the runtime side of starting a container. The runtime clones init with its
//! new namespaces, init builds the container and reports Ready over the sync channel, then
//! blocks on exec.fifo; the runtime records state.json and the pid file and exits, so
//! init is reparented to the caller's subreaper (the shim).

use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::PermissionsExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sys::stat::Mode;
use nix::sys::wait::waitpid;
use nix::unistd::Pid;

use super::Globals;
use crate::cgroups::{detect_layout, CgroupConfig, CgroupManager, Placement};
use crate::channel::{self, Message};
use crate::container::{errno, io_err, ContainerError};
use crate::hooks::{self, Point};
use crate::init::{self, InitContext};
use crate::intelrdt::RdtGroup;
use crate::state::{proc_stat, write_atomic, State, FIFO_FILE};
use crate::sys::{clone_into_cgroup, clone_process, Forked};
use crate::syscall::LinuxSyscall;
use crate::{namespaces, spec};

#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    pub id: String,
    pub bundle: PathBuf,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub preserve_fds: u32,
    /// `--no-pivot`: MS_MOVE + chroot instead of pivot_root.
    pub no_pivot: bool,
}

/// A created container, still blocked on exec.fifo.
pub struct Launched {
    pub pid: Pid,
    pub pidfd: OwnedFd,
    pub state: State,
    /// Our end of the sync channel: end-of-file once init has exec'd, or its error.
    pub sync: OwnedFd,
}

/// Undoes a half-made container on every error path (DESIGN: bad input leaves nothing).
struct Rollback {
    dir: Option<PathBuf>,
    cgroup: Option<Box<dyn CgroupManager>>,
    rdt: Option<RdtGroup>,
    child: Option<Pid>,
}

impl Rollback {
    fn disarm(&mut self) {
        self.dir = None;
        self.cgroup = None;
        self.rdt = None;
        self.child = None;
    }
}

impl Drop for Rollback {
    fn drop(&mut self) {
        if let Some(pid) = self.child.take() {
            let _ = crate::sys::kill(pid, libc::SIGKILL);
            let _ = waitpid(pid, None);
        }
        if let Some(cg) = self.cgroup.take() {
            if let Err(e) = cg.destroy() {
                tracing::warn!("cleanup after failed create: {e}");
            }
        }
        if let Some(rdt) = self.rdt.take() {
            if let Err(e) = rdt.destroy() {
                tracing::warn!("cleanup after failed create: {e}");
            }
        }
        if let Some(dir) = self.dir.take() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

pub(crate) fn connect_console(
    terminal: bool,
    socket: Option<&Path>,
) -> Result<Option<UnixStream>, ContainerError> {
    match (terminal, socket) {
        (true, None) => Err(ContainerError::TerminalWithoutSocket),
        (false, Some(_)) => Err(ContainerError::SocketWithoutTerminal),
        (true, Some(path)) => {
            UnixStream::connect(path)
                .map(Some)
                .map_err(|source| ContainerError::ConsoleSocket {
                    path: path.to_path_buf(),
                    source,
                })
        }
        (false, None) => Ok(None),
    }
}

/// The child's seccomp notify fd → linux.seccomp.listenerPath (runc's protocol).
pub(crate) fn forward_seccomp_fd(
    config: &oci_spec::runtime::Spec,
    state: &[u8],
    pid: Pid,
    fd: Option<OwnedFd>,
) -> Result<(), ContainerError> {
    let cfg = config.linux().as_ref().and_then(|l| l.seccomp().as_ref());
    let (Some(cfg), Some(fd)) = (cfg, fd) else {
        return Err(ContainerError::Init(
            "seccomp notify fd announced but not received".into(),
        ));
    };
    crate::seccomp::send_to_listener(cfg, state, pid.as_raw(), fd.as_fd())
        .map_err(|e| ContainerError::Init(e.to_string()))
}

pub(crate) fn write_pid_file(path: Option<&Path>, pid: Pid) -> Result<(), ContainerError> {
    if let Some(path) = path {
        write_atomic(path, pid.as_raw().to_string().as_bytes())?;
    }
    Ok(())
}

/// uid_map/gid_map of a new user namespace, written by the runtime (root in the parent
/// namespace), so any mapping is allowed and setgroups stays usable (user_namespaces(7)).
fn write_id_maps(pid: Pid, linux: &oci_spec::runtime::Linux) -> Result<(), ContainerError> {
    let render = |maps: &Option<Vec<oci_spec::runtime::LinuxIdMapping>>| {
        crate::rootfs::idmap::render(maps.as_deref().unwrap_or(&[]))
    };
    for (file, maps) in [
        ("uid_map", linux.uid_mappings()),
        ("gid_map", linux.gid_mappings()),
    ] {
        let path = PathBuf::from(format!("/proc/{pid}/{file}"));
        std::fs::write(&path, render(maps)).map_err(io_err("write", &path))?;
    }
    Ok(())
}

/// The error for an init that closed the sync channel without a report: reaps it (the
/// rollback then has nothing to kill) so the message can say how it ended.
fn died(rollback: &mut Rollback, pid: Pid, pidfd: &OwnedFd) -> ContainerError {
    use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
    use nix::sys::wait::{WaitPidFlag, WaitStatus};
    // End-of-file normally means it is gone already; give a dying process a moment.
    let mut fds = [PollFd::new(pidfd.as_fd(), PollFlags::POLLIN)];
    let _ = poll(&mut fds, PollTimeout::from(1000u16));
    let how = match waitpid(pid, Some(WaitPidFlag::WNOHANG)) {
        Ok(WaitStatus::Exited(_, code)) => format!(": exit status {code}"),
        Ok(WaitStatus::Signaled(_, sig, _)) => format!(": killed by {sig}"),
        Ok(_) => {
            return ContainerError::InitDied {
                how: ": it closed the sync channel but is still running".into(),
            }
        }
        Err(_) => String::new(),
    };
    rollback.child = None;
    ContainerError::InitDied { how }
}

/// Clones with the child born in the cgroup v2 directory where the kernel allows it;
/// also says whether it did (else the child joins that cgroup itself too).
pub(crate) fn clone_placed(
    flags: libc::c_ulong,
    placement: &Placement,
    what: &'static str,
) -> Result<(Forked, bool), ContainerError> {
    if let Some(dir) = &placement.clone_into {
        match clone_into_cgroup(flags, dir.as_fd()) {
            Ok(forked) => return Ok((forked, true)),
            Err(e) => tracing::debug!("clone3 CLONE_INTO_CGROUP refused ({e}); joining by write"),
        }
    }
    Ok((clone_process(flags).map_err(errno(what))?, false))
}

/// `create` as a command: the container stays created, the runtime exits 0.
pub fn create(g: &Globals, opts: &CreateOptions) -> Result<i32, ContainerError> {
    launch(g, opts)?;
    Ok(0)
}

/// Creates the container and returns with init blocked on exec.fifo.
pub(crate) fn launch(g: &Globals, opts: &CreateOptions) -> Result<Launched, ContainerError> {
    launch_with(g, opts, None)
}

/// `launch`, optionally with an already-connected console socket (foreground `run` with a
/// terminal keeps the other end and proxies the pty itself).
pub(crate) fn launch_with(
    g: &Globals,
    opts: &CreateOptions,
    console_stream: Option<UnixStream>,
) -> Result<Launched, ContainerError> {
    spec::validate_id(&opts.id)?;
    let bundle =
        std::path::absolute(&opts.bundle).map_err(io_err("resolve bundle", &opts.bundle))?;
    let config = spec::load(&bundle)?;
    spec::validate(&config)?;
    let rdt_config = config.linux().as_ref().and_then(|l| l.intel_rdt().clone());
    let mut rdt = rdt_config
        .as_ref()
        .map(|c| RdtGroup::plan(c, &opts.id, crate::intelrdt::host_root()))
        .transpose()?;
    let process = config
        .process()
        .clone()
        .ok_or(spec::SpecError::Missing("process"))?;
    let linux = config
        .linux()
        .clone()
        .ok_or(spec::SpecError::Missing("linux"))?;
    let console = match console_stream {
        Some(stream) => Some(stream),
        None => connect_console(
            process.terminal().unwrap_or(false),
            opts.console_socket.as_deref(),
        )?,
    };

    // Made here, in the host's user namespace (see rootfs::idmap), before anything that
    // would need undoing.
    let idmapped = crate::rootfs::idmap::prepare(&config, &bundle)?;
    g.ensure_root()?;
    let dir = State::dir(&g.root, &opts.id);
    let mut rollback = Rollback {
        dir: None,
        cgroup: None,
        rdt: None,
        child: None,
    };
    match std::fs::create_dir(&dir) {
        Ok(()) => rollback.dir = Some(dir.clone()),
        Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {
            return Err(ContainerError::Exists(opts.id.clone()))
        }
        Err(e) => return Err(io_err("create state dir", &dir)(e)),
    }
    let fifo_path = dir.join(FIFO_FILE);
    nix::unistd::mkfifo(&fifo_path, Mode::from_bits_truncate(0o622))
        .map_err(errno("mkfifo exec.fifo"))?;
    // The umask may have removed the others-write bit that a non-root init needs.
    std::fs::set_permissions(&fifo_path, std::fs::Permissions::from_mode(0o622))
        .map_err(io_err("chmod", &fifo_path))?;
    let fifo = open(&fifo_path, OFlag::O_PATH | OFlag::O_CLOEXEC, Mode::empty())
        .map_err(errno("open exec.fifo"))?;

    let cg_config = CgroupConfig::resolve(
        linux.cgroups_path().as_deref(),
        &opts.id,
        g.systemd_cgroup,
        detect_layout()?,
    )?;
    let cgroup = cg_config.manager();
    cgroup.create()?;
    rollback.cgroup = Some(cg_config.manager());
    if let Some(res) = linux.resources() {
        cgroup.apply(res)?;
    }
    if let (Some(group), Some(cfg)) = (&mut rdt, &rdt_config) {
        group.create(cfg)?;
        rollback.rdt = Some(group.clone());
    }

    // A provisional record before init exists (pid 0, so it reads as stopped): if the
    // runtime dies mid-create, `delete --force` still finds the cgroups to clean.
    let mut provisional = State::new(
        &opts.id,
        0,
        0,
        bundle.clone(),
        cg_config.clone(),
        config.clone(),
    );
    provisional.intel_rdt = rdt.clone();
    provisional.save(&dir)?;
    let mut ns_plan = namespaces::plan(linux.namespaces().as_deref().unwrap_or(&[]))?;
    if let Some(pid_ns) = &ns_plan.pid_join {
        pid_ns.enter()?;
    }
    // Last of the runtime's own set-up in the host's user namespace: after this setns our
    // capabilities hold only in the joined namespace. Everything that needs the host's
    // (cgroups, the pid namespace above, the state dir) is done; cgroup.procs stays
    // writable since our kuid is still root, its owner.
    ns_plan.enter_user_join()?;
    if ns_plan.new_time {
        namespaces::new_time_namespace(linux.time_offsets().as_ref())?;
    }
    let root_path = config
        .root()
        .as_ref()
        .map(|r| r.path().clone())
        .unwrap_or_default();
    let rootfs = if root_path.is_absolute() {
        root_path
    } else {
        bundle.join(root_path)
    };
    let placement = cgroup.placement()?;
    let (parent_end, child_end) = channel::pair()?;
    // Last before clone: with a new user namespace, the runtime is in the joined ones.
    let mut borrowed = ns_plan.enter_joins_for_clone()?;
    let placed = clone_placed(
        ns_plan.clone_flags.bits() as libc::c_ulong,
        &placement,
        "clone container init",
    );
    if placed.is_err() {
        if let Some(b) = borrowed.take() {
            b.restore()?;
        }
    }
    let (forked, cloned_into) = placed?;
    match forked {
        Forked::Child => {
            crate::cloned_binary::release_overlay();
            drop(parent_end);
            let mut ctx = InitContext {
                id: &opts.id,
                sys: &LinuxSyscall,
                spec: &config,
                process: &process,
                rootfs,
                bundle: bundle.clone(),
                cgroup: cgroup.as_ref(),
                joins: &ns_plan.joins,
                unshare_later: ns_plan.unshare_later,
                console: console.as_ref(),
                fifo: Some(&fifo),
                preserve_fds: opts.preserve_fds,
                no_pivot: opts.no_pivot,
                sync: &child_end,
                placement: &placement,
                cloned_into,
                idmapped: &idmapped,
            };
            let err = match init::run(&mut ctx, init::INIT_PHASES, true) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let _ = channel::send(&child_end, &Message::Error(err.to_string()));
            crate::sys::exit_now(1)
        }
        Forked::Parent { pid, pidfd } => {
            drop(child_end);
            drop(console);
            rollback.child = Some(pid);
            if let Some(b) = borrowed.take() {
                b.restore()?;
            }
            tracing::debug!(id = opts.id, pid = pid.as_raw(), "cloned container init");
            if ns_plan
                .clone_flags
                .contains(nix::sched::CloneFlags::CLONE_NEWUSER)
            {
                write_id_maps(pid, &linux)?;
            }
            // Before Go: init runs nothing of the container's outside the group.
            if let Some(group) = &rdt {
                group.add_task(pid.as_raw())?;
            }
            // Init joins its cgroups itself (cgroups::Placement), then builds the rootfs.
            // A dead init makes this fail; the loop below then reports why it died.
            let _ = channel::send(&parent_end, &Message::Go);
            // Its unmount waits for a grace period: now, while init works.
            crate::cloned_binary::release_overlay();
            loop {
                let (msg, passed) = channel::recv_fd(&parent_end)?;
                match msg {
                    Some(Message::Ready) => break,
                    Some(Message::SeccompFd) => {
                        let state =
                            hooks::state_json(&config, &opts.id, "creating", pid.as_raw(), &bundle);
                        forward_seccomp_fd(&config, &state, pid, passed)?;
                        channel::send(&parent_end, &Message::SeccompDone)?;
                    }
                    Some(Message::Hooks) => {
                        let state =
                            hooks::state_json(&config, &opts.id, "creating", pid.as_raw(), &bundle);
                        for point in [Point::Prestart, Point::CreateRuntime] {
                            hooks::run(point, hooks::at(&config, point), &state)?;
                        }
                        channel::send(&parent_end, &Message::HooksDone)?;
                    }
                    Some(Message::Error(text)) => return Err(ContainerError::Init(text)),
                    Some(Message::HooksDone | Message::Go | Message::SeccompDone) | None => {
                        return Err(died(&mut rollback, pid, &pidfd))
                    }
                }
            }
            let Some((_, start)) = proc_stat(pid) else {
                return Err(died(&mut rollback, pid, &pidfd));
            };
            let mut state = State::new(
                &opts.id,
                pid.as_raw(),
                start,
                bundle,
                cg_config,
                config.clone(),
            );
            state.intel_rdt = rdt;
            state.save(&dir)?;
            write_pid_file(opts.pid_file.as_deref(), pid)?;
            rollback.disarm();
            Ok(Launched {
                pid,
                pidfd,
                state,
                sync: parent_end,
            })
        }
    }
}
