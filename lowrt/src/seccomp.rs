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
    #[error("seccomp: action {0} is not supported yet")]
    Unsupported(&'static str),
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
        LinuxSeccompAction::ScmpActNotify => {
            return Err(SeccompError::Unsupported("SCMP_ACT_NOTIFY"))
        }
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

/// Builds (does not load) the filter.
pub fn build(cfg: &LinuxSeccomp) -> Result<ScmpFilterContext, SeccompError> {
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
            // lowrt is single-threaded when it loads the filter; TSYNC changes nothing.
            _ => {}
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
    fn notify_is_refused_by_name() {
        let cfg: LinuxSeccomp =
            serde_json::from_str(r#"{"defaultAction":"SCMP_ACT_NOTIFY"}"#).unwrap();
        let err = build(&cfg).map(|_| ()).unwrap_err().to_string();
        assert!(err.contains("SCMP_ACT_NOTIFY"), "{err}");
    }
}
