//! linux.seccomp → a libseccomp filter. Built before the container reports Ready (so a bad
//! profile fails `create`), loaded at the last possible moment: right before execve when
//! no_new_privs is set, else before capabilities are dropped, because loading a filter
//! without no_new_privs needs CAP_SYS_ADMIN (seccomp(2)) — runc's order.

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

/// Builds (does not load) the filter.
pub fn build(cfg: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
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
    // Loading must not switch no_new_privs on by itself; the spec decides that.
    ctx.set_ctl_nnp(false)
        .map_err(lib("disable implicit no_new_privs"))?;
    for arch in cfg.architectures().as_deref().unwrap_or(&[]) {
        let name = serde_json::to_value(arch)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let arch: ScmpArch = name.parse().map_err(|_| SeccompError::Arch(name.clone()))?;
        ctx.add_arch(arch)
            .map_err(lib(format!("add architecture {name}")))?;
    }
    for flag in cfg.flags().as_deref().unwrap_or(&[]) {
        let name = serde_json::to_value(flag)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        match name.as_str() {
            "SECCOMP_FILTER_FLAG_LOG" => {
                ctx.set_ctl_log(true).map_err(lib("set log flag"))?;
            }
            "SECCOMP_FILTER_FLAG_SPEC_ALLOW" => {
                ctx.set_ctl_ssb(true).map_err(lib("set spec_allow flag"))?;
            }
            // Needs libseccomp >= 2.6 and Linux >= 5.19; an older one fails here by name.
            "SECCOMP_FILTER_FLAG_WAIT_KILLABLE_RECV" => {
                ctx.set_ctl_waitkill(true)
                    .map_err(lib("set wait_killable_recv flag"))?;
            }
            // lowrt is single-threaded when it loads the filter; TSYNC changes nothing.
            "SECCOMP_FILTER_FLAG_TSYNC" => {}
            other => return Err(SeccompError::UnknownFlag(other.to_owned())),
        }
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
    Ok(ctx)
}

pub fn load(ctx: &ScmpFilterContext) -> Result<(), SeccompError> {
    ctx.load().map_err(lib("load filter"))
}

/// The loaded filter's notify fd (owned by the filter context's process; dup'd by the
/// kernel when sent).
pub fn notify_fd(ctx: &ScmpFilterContext) -> Result<std::os::fd::RawFd, SeccompError> {
    ctx.get_notify_fd().map_err(lib("get notify fd"))
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
}
