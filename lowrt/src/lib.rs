//! berth-lowrt: Berth's OCI runtime, driven with runc's command line.
//!
//! Layout: [`cli`] parses flags, [`dispatch`] calls one function of [`commands`] per
//! command. Container creation clones init ([`sys::clone_process`]); init runs the ordered
//! phases of [`init`] (cgroups, namespaces, [`rootfs`], console, process) through the
//! [`syscall::Syscall`] seam; cgroups go through [`cgroups::CgroupManager`] (v1 and v2);
//! state lives in [`state`]. `unsafe` is confined to [`sys`]. See docs/lowrt.md.

pub mod cgroups;
pub mod channel;
pub mod cli;
pub mod cloned_binary;
pub mod commands;
pub mod container;
pub mod hooks;
pub mod init;
pub mod intelrdt;
pub mod logging;
pub mod lsm;
pub mod namespaces;
pub mod rootfs;
pub mod seccomp;
pub mod spec;
pub mod state;
pub mod sys;
pub mod syscall;

pub use container::ContainerError;

use cli::{Cli, Command};
use commands::{CreateOptions, ExecOptions, Globals};

/// Runs one parsed command line; returns the exit code.
pub fn dispatch(cli: Cli) -> Result<i32, ContainerError> {
    let g = Globals {
        root: cli.root,
        systemd_cgroup: cli.systemd_cgroup,
    };
    match cli.command {
        Command::Create {
            bundle,
            pid_file,
            console_socket,
            preserve_fds,
            no_new_keyring: _,
            no_pivot,
            id,
        } => commands::create(
            &g,
            &CreateOptions {
                id,
                bundle,
                pid_file,
                console_socket,
                preserve_fds,
                no_pivot,
            },
        ),
        Command::Run {
            bundle,
            pid_file,
            detach,
            console_socket,
            preserve_fds,
            no_new_keyring: _,
            no_pivot,
            id,
        } => commands::run(
            &g,
            &CreateOptions {
                id,
                bundle,
                pid_file,
                console_socket,
                preserve_fds,
                no_pivot,
            },
            detach,
        ),
        Command::Start { id } => commands::start(&g, &id),
        Command::State { id } => commands::state(&g, &id),
        Command::Kill { all, id, signal } => commands::kill(&g, &id, &signal, all),
        Command::Delete { force, id } => commands::delete(&g, &id, force),
        Command::List { quiet, format } => commands::list(&g, quiet, format),
        Command::Exec {
            process,
            detach,
            pid_file,
            console_socket,
            tty,
            env,
            cwd,
            user,
            preserve_fds,
            id,
            args,
        } => {
            let opts = ExecOptions {
                id,
                process,
                args,
                detach,
                pid_file,
                console_socket,
                tty,
                env,
                cwd,
                user,
                preserve_fds,
            };
            commands::exec(&g, &opts)
        }
        Command::Spec { bundle } => commands::spec(&bundle),
        Command::Features => commands::features(),
        Command::Update {
            resources,
            flags,
            id,
        } => commands::update(&g, &id, resources.as_deref(), &flags),
        Command::Events {
            stats,
            interval,
            id,
        } => commands::events(&g, &id, stats, &interval),
        Command::Pause { id } => commands::pause(&g, &id),
        Command::Resume { id } => commands::resume(&g, &id),
        Command::Ps { format: _, id } => commands::ps(&g, &id),
    }
}
