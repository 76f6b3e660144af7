//! linux.seccomp → a libseccomp filter. Built before the container reports Ready (so a bad
//! profile fails `create`), loaded at the last possible moment: right before execve when
//! no_new_privs is set, else before capabilities are dropped, because loading a filter
//! without no_new_privs needs CAP_SYS_ADMIN (seccomp(2)) — runc's order.
//!
//! libseccomp only compiles: the program is exported as classic BPF (seccomp_export_bpf)
//! and loaded with seccomp(2) by us, so every filter flag the kernel has works whatever
//! the library's version (Debian 12's 2.5.4 has no WAIT_KILLABLE_RECV).

use std::collections::HashSet;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use oci_spec::runtime::{LinuxSeccomp, LinuxSeccompAction, LinuxSeccompOperator};

#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    #[error("seccomp: {what}: {source}")]
    Lib {
        what: String,
        source: libseccomp::error::SeccompError,
    },
    #[error("seccomp: unknown architecture {0}")]
    Arch(String),
    #[error("seccomp: unknown flag {0:?} in linux.seccomp.flags")]
    UnknownFlag(String),
    #[error("seccomp: export the filter program: {0}")]
    Export(std::io::Error),
    #[error("seccomp: load filter with flags {flags}: {}", crate::syscall::errno_text(*source))]
    Load {
        flags: String,
        source: nix::errno::Errno,
    },
    #[error("seccomp: SCMP_ACT_NOTIFY needs an absolute linux.seccomp.listenerPath")]
    NoListener,
    #[error("seccomp: cannot send the notify fd to listener {}: {source}", path.display())]
    Listener {
        path: std::path::PathBuf,
        source: std::io::Error,
    },
}

fn lib(what: impl Into<String>) -> impl FnOnce(libseccomp::error::SeccompError) -> SeccompError {
    let what = what.into();
    move |source| SeccompError::Lib { what, source }
}

const EPERM: i32 = libc::EPERM;

fn action(a: LinuxSeccompAction, errno: Option<u32>) -> Result<ScmpAction, SeccompError> {
    let ret = errno.map_or(EPERM, |e| e as i32);
    Ok(match a {
        LinuxSeccompAction::ScmpActKill | LinuxSeccompAction::ScmpActKillThread => {
            ScmpAction::KillThread
        }
        LinuxSeccompAction::ScmpActKillProcess => ScmpAction::KillProcess,
        LinuxSeccompAction::ScmpActTrap => ScmpAction::Trap,
        LinuxSeccompAction::ScmpActErrno => ScmpAction::Errno(ret),
        LinuxSeccompAction::ScmpActTrace => ScmpAction::Trace(ret as u16),
        LinuxSeccompAction::ScmpActLog => ScmpAction::Log,
        LinuxSeccompAction::ScmpActAllow => ScmpAction::Allow,
        LinuxSeccompAction::ScmpActNotify => ScmpAction::Notify,
    })
}

fn compare(op: LinuxSeccompOperator, value_two: Option<u64>) -> ScmpCompareOp {
    match op {
        LinuxSeccompOperator::ScmpCmpNe => ScmpCompareOp::NotEqual,
        LinuxSeccompOperator::ScmpCmpLt => ScmpCompareOp::Less,
        LinuxSeccompOperator::ScmpCmpLe => ScmpCompareOp::LessOrEqual,
        LinuxSeccompOperator::ScmpCmpEq => ScmpCompareOp::Equal,
        LinuxSeccompOperator::ScmpCmpGe => ScmpCompareOp::GreaterEqual,
        LinuxSeccompOperator::ScmpCmpGt => ScmpCompareOp::Greater,
        LinuxSeccompOperator::ScmpCmpMaskedEq => ScmpCompareOp::MaskedEqual(value_two.unwrap_or(0)),
    }
}

/// Whether any action of the profile is SCMP_ACT_NOTIFY.
pub fn uses_notify(cfg: &LinuxSeccomp) -> bool {
    cfg.default_action() == LinuxSeccompAction::ScmpActNotify
        || cfg
            .syscalls()
            .as_deref()
            .unwrap_or(&[])
            .iter()
            .any(|r| r.action() == LinuxSeccompAction::ScmpActNotify)
}

/// linux.seccomp.flags and their seccomp(2) bits.
pub const SPEC_FLAGS: &[(&str, libc::c_ulong)] = &[
    ("SECCOMP_FILTER_FLAG_TSYNC", libc::SECCOMP_FILTER_FLAG_TSYNC),
    (
        "SECCOMP_FILTER_FLAG_SPEC_ALLOW",
        libc::SECCOMP_FILTER_FLAG_SPEC_ALLOW,
    ),
    ("SECCOMP_FILTER_FLAG_LOG", libc::SECCOMP_FILTER_FLAG_LOG),
    (
        "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV",
        libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV,
    ),
];

/// The spec flags this kernel accepts (probed, nothing loaded). WAIT_KILLABLE_RECV is
/// only valid together with NEW_LISTENER, so it is probed that way.
pub fn supported_flags() -> Vec<&'static str> {
    SPEC_FLAGS
        .iter()
        .filter(|(_, bit)| {
            let probe = if *bit == libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV {
                bit | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
            } else {
                *bit
            };
            crate::sys::seccomp::flags_supported(probe)
        })
        .map(|(name, _)| *name)
        .collect()
}

/// A compiled filter: the classic BPF program and the seccomp(2) flags to load it with.
pub struct Filter {
    prog: Vec<libc::sock_filter>,
    flags: libc::c_ulong,
}

/// Builds (does not load) the filter.
pub fn build(cfg: &LinuxSeccomp) -> Result<Filter, SeccompError> {
    if uses_notify(cfg)
        && !cfg
            .listener_path()
            .as_ref()
            .is_some_and(|p| p.is_absolute())
    {
        return Err(SeccompError::NoListener);
    }
    let default = action(cfg.default_action(), cfg.default_errno_ret())?;
    let mut ctx = ScmpFilterContext::new(default).map_err(lib("create filter"))?;
    for arch in cfg.architectures().as_deref().unwrap_or(&[]) {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let arch: ScmpArch = name.parse().map_err(|_| SeccompError::Arch(name.clone()))?;
        ctx.add_arch(arch)
            .map_err(lib(format!("add architecture {name}")))?;
    }
    let mut flags: libc::c_ulong = 0;
    for flag in cfg.flags().as_deref().unwrap_or(&[]) {
        let name = serde_json::to_value(flag)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match SPEC_FLAGS.iter().find(|(n, _)| *n == name) {
            Some((_, bit)) => flags |= bit,
            None => return Err(SeccompError::UnknownFlag(name)),
        }
    }
    // As libseccomp's own load: a notifying filter asks for a listener; WAIT_KILLABLE_RECV
    // only means something (and is only accepted) with one; TSYNC together with a
    // listener needs TSYNC_ESRCH (seccomp(2)).
    if uses_notify(cfg) {
        flags |= libc::SECCOMP_FILTER_FLAG_NEW_LISTENER;
        if flags & libc::SECCOMP_FILTER_FLAG_TSYNC != 0 {
            flags |= libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH;
        }
    } else {
        flags &= !libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV;
    }
    for rule in cfg.syscalls().as_deref().unwrap_or(&[]) {
        let act = action(rule.action(), rule.errno_ret())?;
        // libseccomp refuses rules equal to the default; they are no-ops anyway.
        if act == default {
            continue;
        }
        let args = rule.args().as_deref().unwrap_or(&[]);
        let cmps: Vec<ScmpArgCompare> = args
            .iter()
            .map(|a| {
                ScmpArgCompare::new(a.index() as u32, compare(a.op(), a.value_two()), a.value())
            })
            .collect();
        let indexes: HashSet<usize> = args.iter().map(|a| a.index()).collect();
        for name in rule.names() {
            // Names this libseccomp does not know (newer syscalls) are skipped, like runc.
            let Ok(sc) = ScmpSyscall::from_name(name) else {
                continue;
            };
            if cmps.is_empty() {
                ctx.add_rule(act, sc)
                    .map_err(lib(format!("rule for {name}")))?;
            } else if indexes.len() == cmps.len() {
                ctx.add_rule_conditional(act, sc, &cmps)
                    .map_err(lib(format!("rule for {name}")))?;
            } else {
                // Several conditions on one argument: libseccomp ANDs conditions within a
                // rule and rejects repeats, so each becomes its own rule (an OR, as runc does).
                for c in &cmps {
                    ctx.add_rule_conditional(act, sc, std::slice::from_ref(c))
                        .map_err(lib(format!("rule for {name}")))?;
                }
            }
        }
    }
    Ok(Filter {
        prog: export(&ctx)?,
        flags,
    })
}

/// The compiled program as sock_filter entries (8 bytes each, native endian), through a
/// memfd: seccomp_export_bpf writes to an fd, and a pipe could fill up.
fn export(ctx: &ScmpFilterContext) -> Result<Vec<libc::sock_filter>, SeccompError> {
    use std::io::{Read, Seek};
    let fd =
        nix::sys::memfd::memfd_create(c"berth-seccomp", nix::sys::memfd::MFdFlags::MFD_CLOEXEC)
            .map_err(|e| SeccompError::Export(e.into()))?;
    ctx.export_bpf(&fd).map_err(lib("export filter"))?;
    let mut file = std::fs::File::from(fd);
    let mut bytes = Vec::new();
    file.rewind()
        .and_then(|_| file.read_to_end(&mut bytes))
        .map_err(SeccompError::Export)?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| libc::sock_filter {
            code: u16::from_ne_bytes([c[0], c[1]]),
            jt: c[2],
            jf: c[3],
            k: u32::from_ne_bytes([c[4], c[5], c[6], c[7]]),
        })
        .collect())
}

/// Loads the filter into the calling process; returns the notification fd when the
/// filter has SCMP_ACT_NOTIFY rules.
pub fn load(filter: &Filter) -> Result<Option<std::os::fd::OwnedFd>, SeccompError> {
    crate::sys::seccomp::set_mode_filter(&filter.prog, filter.flags).map_err(|source| {
        SeccompError::Load {
            flags: flag_names(filter.flags),
            source,
        }
    })
}

fn flag_names(flags: libc::c_ulong) -> String {
    let mut names: Vec<&str> = SPEC_FLAGS
        .iter()
        .filter(|(_, bit)| flags & bit != 0)
        .map(|(n, _)| *n)
        .collect();
    if flags & libc::SECCOMP_FILTER_FLAG_NEW_LISTENER != 0 {
        names.push("SECCOMP_FILTER_FLAG_NEW_LISTENER");
    }
    if names.is_empty() {
        return "(none)".into();
    }
    names.join("|")
}

/// runc's protocol: connect to `listenerPath` and send the container process state JSON
/// (`{"ociVersion","fds":["seccompFd"],"pid","metadata","state":{…}}`) with the notify fd
/// attached (SCM_RIGHTS) in the same message, then close.
pub fn send_to_listener(
    cfg: &LinuxSeccomp,
    state: &[u8],
    pid: i32,
    notify: std::os::fd::BorrowedFd<'_>,
) -> Result<(), SeccompError> {
    use std::os::fd::AsFd;
    use std::os::fd::AsRawFd;
    let path = cfg.listener_path().clone().unwrap_or_default();
    let err = |source| SeccompError::Listener {
        path: path.clone(),
        source,
    };
    let state: serde_json::Value = serde_json::from_slice(state).unwrap_or_default();
    let mut doc = serde_json::json!({
        "ociVersion": state["ociVersion"].clone(),
        "fds": ["seccompFd"],
        "pid": pid,
        "state": state,
    });
    if let Some(meta) = cfg.listener_metadata().as_ref().filter(|m| !m.is_empty()) {
        doc["metadata"] = serde_json::json!(meta);
    }
    let stream = std::os::unix::net::UnixStream::connect(&path).map_err(err)?;
    crate::sys::send_with_fd(
        stream.as_fd(),
        doc.to_string().as_bytes(),
        notify.as_raw_fd(),
    )
    .map_err(|e| err(e.into()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn docker_like_profile_builds() {
        let cfg: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ERRNO","defaultErrnoRet":1,"architectures":["SCMP_ARCH_X86_64","SCMP_ARCH_X86"],
                "syscalls":[{"names":["read","write","exit_group","not_a_syscall_xyz"],"action":"SCMP_ACT_ALLOW"},
                            {"names":["personality"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":0,"op":"SCMP_CMP_EQ"},{"index":0,"value":8,"op":"SCMP_CMP_EQ"}]},
                            {"names":["clone"],"action":"SCMP_ACT_ALLOW","args":[{"index":0,"value":2114060288,"valueTwo":0,"op":"SCMP_CMP_MASKED_EQ"}]},
                            {"names":["mount"],"action":"SCMP_ACT_ERRNO","errnoRet":1}]}"#,
        )
        .unwrap();
        build(&cfg).unwrap();
    }

    #[test]
    fn notify_without_listener_and_unknown_flags_are_refused_by_name() {
        let cfg: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        let err = build(&cfg).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("listenerPath"), "{err}");
        let cfg: LinuxSeccomp = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/l.sock","syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        )
        .unwrap();
        build(&cfg).unwrap();
        // oci-spec refuses an unknown flag while parsing config.json, naming it.
        let cfg: Result<LinuxSeccomp, _> = serde_json::from_str(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_BOGUS"]}"#,
        );
        let err = cfg.unwrap_err().to_string();
        assert!(err.contains("SECCOMP_FILTER_FLAG_BOGUS"), "{err}");
    }

    #[test]
    fn flags_follow_libseccomp_rules_for_listeners() {
        let parse = |j: &str| -> LinuxSeccomp { serde_json::from_str(j).unwrap() };
        let f = build(&parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","flags":["SECCOMP_FILTER_FLAG_LOG","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_ERRNO"}]}"#,
        ))
        .unwrap();
        // Without a listener WAIT_KILLABLE_RECV means nothing and the kernel refuses it.
        assert_eq!(f.flags, libc::SECCOMP_FILTER_FLAG_LOG);
        assert!(!f.prog.is_empty());
        let f = build(&parse(
            r#"{"defaultAction":"SCMP_ACT_ALLOW","listenerPath":"/run/l.sock","flags":["SECCOMP_FILTER_FLAG_TSYNC","SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV"],
                "syscalls":[{"names":["mkdir"],"action":"SCMP_ACT_NOTIFY"}]}"#,
        ))
        .unwrap();
        assert_eq!(
            f.flags,
            libc::SECCOMP_FILTER_FLAG_TSYNC
                | libc::SECCOMP_FILTER_FLAG_TSYNC_ESRCH
                | libc::SECCOMP_FILTER_FLAG_NEW_LISTENER
                | libc::SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV
        );
        assert_eq!(
            flag_names(f.flags),
            "SECCOMP_FILTER_FLAG_TSYNC|SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV|SECCOMP_FILTER_FLAG_NEW_LISTENER"
        );
    }
}
