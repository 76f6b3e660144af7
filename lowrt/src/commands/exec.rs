//! `exec`: a new process in a running container. The runtime enters the container's pid
//! namespace itself (it only affects children), clones, and the child joins the
//! container's cgroups and remaining namespaces, applies the process and execs.

use std::path::PathBuf;

use nix::unistd::Pid;
use oci_spec::runtime::{LinuxNamespaceType, Process};

use super::create::{clone_placed, connect_console, write_pid_file};
use super::Globals;
use crate::channel::{self, Message};
use crate::container::{block_wait_signals, io_err, wait_foreground, ContainerError};
use crate::init::{self, InitContext};
use crate::namespaces::{proc_name, Join};
use crate::state::State;
use crate::sys::Forked;
use crate::syscall::LinuxSyscall;

#[derive(Debug, Clone, Default)]
pub struct ExecOptions {
    pub id: String,
    pub process: Option<PathBuf>,
    pub args: Vec<String>,
    pub detach: bool,
    pub pid_file: Option<PathBuf>,
    pub console_socket: Option<PathBuf>,
    pub tty: bool,
    pub env: Vec<String>,
    pub cwd: Option<PathBuf>,
    pub user: Option<String>,
    pub preserve_fds: u32,
}

fn build_process(st: &State, opts: &ExecOptions) -> Result<Process, ContainerError> {
    if let Some(path) = &opts.process {
        let text = std::fs::read(path).map_err(io_err("read", path))?;
        return serde_json::from_slice(&text).map_err(|source| ContainerError::ProcessFile {
            path: path.clone(),
            source,
        });
    }
    if opts.args.is_empty() {
        return Err(ContainerError::NoExecArgs);
    }
    let mut p = st.config.process().clone().unwrap_or_default();
    p.set_args(Some(opts.args.clone()));
    p.set_terminal(Some(opts.tty));
    let mut env = p.env().clone().unwrap_or_default();
    env.extend(opts.env.iter().cloned());
    p.set_env(Some(env));
    if let Some(cwd) = &opts.cwd {
        p.set_cwd(cwd.clone());
    }
    if let Some(user) = &opts.user {
        let bad = || ContainerError::BadUser(user.clone());
        let (uid, gid) = match user.split_once(':') {
            Some((u, g)) => (u.parse().map_err(|_| bad())?, g.parse().map_err(|_| bad())?),
            None => (user.parse().map_err(|_| bad())?, 0),
        };
        p.user_mut().set_uid(uid);
        p.user_mut().set_gid(gid);
    }
    Ok(p)
}

pub fn exec(g: &Globals, opts: &ExecOptions) -> Result<i32, ContainerError> {
    let st = State::load(&g.root, &opts.id)?;
    let status = st.status(&g.root);
    if !status.can_exec() {
        return Err(ContainerError::ExecNotRunning(status));
    }
    let process = build_process(&st, opts)?;
    if process.args().as_ref().is_none_or(|a| a.is_empty()) {
        return Err(ContainerError::NoExecArgs);
    }
    let console = connect_console(
        process.terminal().unwrap_or(false),
        opts.console_socket.as_deref(),
    )?;

    // Open every namespace of init before entering any of them.
    let namespaces = st
        .config
        .linux()
        .as_ref()
        .and_then(|l| l.namespaces().clone())
        .unwrap_or_default();
    let mut joins = Vec::new();
    let mut pid_join = None;
    for ns in &namespaces {
        let kind = ns.typ();
        let join = Join::open(
            kind,
            &PathBuf::from(format!("/proc/{}/ns/{}", st.pid, proc_name(kind))),
        )?;
        if kind == LinuxNamespaceType::Pid {
            pid_join = Some(join);
        } else {
            joins.push(join);
        }
    }
    // The time namespace before the user namespace (the runtime created it, so it is
    // owned by ours and joining needs our capabilities), then the user namespace (it
    // grants the capabilities to join the others), the mount namespace last (it changes
    // what paths mean).
    joins.sort_by_key(|j| {
        (
            j.kind != LinuxNamespaceType::Time,
            j.kind != LinuxNamespaceType::User,
            j.kind == LinuxNamespaceType::Mount,
        )
    });
    if let Some(pid_ns) = &pid_join {
        pid_ns.enter()?;
    }
    let cgroup = st.cgroup.manager();
    let signals = if opts.detach {
        None
    } else {
        Some(block_wait_signals()?)
    };
    let placement = cgroup.placement()?;
    let (parent_end, child_end) = channel::pair()?;

    let (forked, cloned_into) = clone_placed(0, &placement, "clone exec process")?;
    match forked {
        Forked::Child => {
            crate::cloned_binary::release_overlay();
            drop(parent_end);
            // runc puts exec'd processes in the container's resctrl group too; this child
            // moves itself (its pid as seen in the pid namespace it was cloned into).
            if let Some(rdt) = &st.intel_rdt {
                if let Err(e) = rdt.add_task(nix::unistd::getpid().as_raw()) {
                    let _ = channel::send(&child_end, &Message::Error(e.to_string()));
                    crate::sys::exit_now(1)
                }
            }
            let mut ctx = InitContext {
                id: &opts.id,
                sys: &LinuxSyscall,
                spec: &st.config,
                process: &process,
                rootfs: st.rootfs.clone(),
                bundle: st.bundle.clone(),
                cgroup: cgroup.as_ref(),
                joins: &joins,
                unshare_later: nix::sched::CloneFlags::empty(),
                console: console.as_ref(),
                fifo: None,
                preserve_fds: opts.preserve_fds,
                no_pivot: false,
                sync: &child_end,
                placement: &placement,
                cloned_into,
                idmapped: &[],
            };
            let err = match init::run(&mut ctx, init::EXEC_PHASES, false) {
                Err(e) => e,
                Ok(never) => match never {},
            };
            let _ = channel::send(&child_end, &Message::Error(err.to_string()));
            crate::sys::exit_now(1)
        }
        Forked::Parent { pid, pidfd } => {
            drop(child_end);
            drop(console);
            // Its unmount waits for a grace period: now, while the child joins.
            crate::cloned_binary::release_overlay();
            // End-of-file means execve succeeded (the channel is close-on-exec).
            loop {
                match channel::recv_fd(&parent_end)? {
                    (Some(Message::Error(text)), _) => {
                        let _ = nix::sys::wait::waitpid(pid, None);
                        return Err(ContainerError::Init(text));
                    }
                    (Some(Message::SeccompFd), fd) => {
                        let state = crate::hooks::state_json(
                            &st.config, &opts.id, "running", st.pid, &st.bundle,
                        );
                        super::create::forward_seccomp_fd(&st.config, &state, pid, fd)?;
                        channel::send(&parent_end, &Message::SeccompDone)?;
                    }
                    _ => break,
                }
            }
            write_pid_file(opts.pid_file.as_deref(), pid)?;
            drop(pidfd);
            match signals {
                None => Ok(0),
                Some(set) => wait_foreground(Pid::from_raw(pid.as_raw()), &set),
            }
        }
    }
}
