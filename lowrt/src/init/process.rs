//! The process phases shared by container init and exec: oom score, rlimits, user,
//! capabilities, no_new_privs, cwd, environment, executable lookup, then execve.

use std::ffi::CString;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};

use caps::{CapSet, CapsHashSet};
use nix::fcntl::{open, OFlag};
use nix::sys::resource::{setrlimit, Resource};
use nix::sys::signal::{sigprocmask, SigSet, SigmaskHow};
use nix::sys::stat::Mode;
use nix::unistd::{Gid, Uid};
use oci_spec::runtime::{Capabilities, PosixRlimitType, Process};

use super::{errno, InitContext, InitError};
use crate::syscall::errno_text;

const DEFAULT_PATH: &str = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// What to execve.
pub struct Target {
    path: CString,
    name: String,
    args: Vec<CString>,
    env: Vec<CString>,
    /// A seccomp filter still to load right before execve (no_new_privs case).
    pub seccomp: Option<crate::seccomp::Filter>,
}

pub(super) fn reset_signals() {
    // The parent may block signals (foreground run/exec forward them); the container
    // must start with an empty mask, and SIGPIPE back at its default.
    let _ = sigprocmask(SigmaskHow::SIG_SETMASK, Some(&SigSet::empty()), None);
    let _ = crate::sys::default_sigpipe();
}

pub(super) fn prepare(ctx: &mut InitContext<'_>) -> Result<Target, InitError> {
    let p = ctx.process;
    oom_score_adj(p)?;
    rlimits(p)?;
    let nnp = p.no_new_privileges() == Some(true);
    if nnp {
        nix::sys::prctl::set_no_new_privs().map_err(errno("set no_new_privs"))?;
    }
    personality(ctx.spec)?;
    let filter = match ctx.spec.linux().as_ref().and_then(|l| l.seccomp().as_ref()) {
        Some(cfg) => Some(crate::seccomp::build(cfg)?),
        None => None,
    };
    let notify = ctx
        .spec
        .linux()
        .as_ref()
        .and_then(|l| l.seccomp().as_ref())
        .is_some_and(crate::seccomp::uses_notify);
    // Without no_new_privs, loading needs CAP_SYS_ADMIN, so it must precede the drop.
    let seccomp = match filter {
        Some(f) if !nnp => {
            if let Some(fd) = crate::seccomp::load(&f)? {
                hand_over_notify_fd(ctx, fd)?;
            }
            None
        }
        other => other,
    };
    // Exec labels (AppArmor, SELinux) while we still hold every capability, as runc does.
    crate::lsm::check(&crate::lsm::HOST, p)?.apply()?;
    user_and_caps(p)?;
    let umask = p.user().umask().unwrap_or(0o022);
    nix::sys::stat::umask(Mode::from_bits_truncate(umask));
    let cwd = if p.cwd().as_os_str().is_empty() {
        Path::new("/")
    } else {
        p.cwd().as_path()
    };
    nix::unistd::chdir(cwd).map_err(|source| InitError::Cwd {
        path: cwd.to_path_buf(),
        source,
    })?;
    let env = environment(p);
    let args: Vec<String> = p.args().clone().unwrap_or_default();
    let name = args.first().cloned().unwrap_or_default();
    let path_var = env
        .iter()
        .find_map(|e| e.strip_prefix("PATH="))
        .unwrap_or(DEFAULT_PATH);
    let path = lookup_executable(&name, path_var)?;
    // A notifying filter with no_new_privs: loaded after our own set-up calls (setuid,
    // umask, chdir, the lookup…), which its listener would otherwise be asked about, and
    // while the runtime still listens (before Ready): its fd goes to the runtime, which
    // hands it to the listener (runc loads it before closing its sync pipe likewise).
    let seccomp = match seccomp {
        Some(f) if notify => {
            if let Some(fd) = crate::seccomp::load(&f)? {
                hand_over_notify_fd(ctx, fd)?;
            }
            None
        }
        other => other,
    };
    let cstr = |s: &[u8]| {
        CString::new(s).map_err(|_| InitError::Exec {
            name: name.clone(),
            reason: "argument contains a NUL byte".into(),
        })
    };
    Ok(Target {
        path: cstr(path.as_os_str().as_bytes())?,
        args: args
            .iter()
            .map(|a| cstr(a.as_bytes()))
            .collect::<Result<_, _>>()?,
        env: env
            .iter()
            .map(|e| cstr(e.as_bytes()))
            .collect::<Result<_, _>>()?,
        name: name.clone(),
        seccomp,
    })
}

/// Sends the notify fd to the runtime and waits until it has reached the listener; our
/// copy is closed then, so the container process never holds it.
fn hand_over_notify_fd(ctx: &InitContext<'_>, fd: std::os::fd::OwnedFd) -> Result<(), InitError> {
    use std::os::fd::AsRawFd;
    crate::channel::send_fd(
        ctx.sync,
        &crate::channel::Message::SeccompFd,
        fd.as_raw_fd(),
    )?;
    match crate::channel::recv(ctx.sync)? {
        Some(crate::channel::Message::SeccompDone) => Ok(()),
        _ => Err(InitError::HookSync),
    }
}

/// linux.personality, before seccomp (a profile may refuse personality(2)), for exec too.
fn personality(spec: &oci_spec::runtime::Spec) -> Result<(), InitError> {
    use oci_spec::runtime::LinuxPersonalityDomain;
    let Some(p) = spec.linux().as_ref().and_then(|l| l.personality().as_ref()) else {
        return Ok(());
    };
    let persona = match p.domain() {
        LinuxPersonalityDomain::PerLinux => 0x0000,
        LinuxPersonalityDomain::PerLinux32 => 0x0008,
    };
    crate::sys::set_personality(persona).map_err(errno("set personality"))
}

fn oom_score_adj(p: &Process) -> Result<(), InitError> {
    let Some(value) = p.oom_score_adj() else {
        return Ok(());
    };
    std::fs::write("/proc/self/oom_score_adj", value.to_string()).map_err(|e| {
        let reason = if e.kind() == std::io::ErrorKind::PermissionDenied && value < 0 {
            "permission denied (lowering it needs CAP_SYS_RESOURCE, which this host does not grant)"
                .to_owned()
        } else {
            e.to_string()
        };
        InitError::OomScoreAdj { value, reason }
    })
}

fn rlimit_resource(t: PosixRlimitType) -> Option<Resource> {
    use PosixRlimitType as T;
    Some(match t {
        T::RlimitCpu => Resource::RLIMIT_CPU,
        T::RlimitFsize => Resource::RLIMIT_FSIZE,
        T::RlimitData => Resource::RLIMIT_DATA,
        T::RlimitStack => Resource::RLIMIT_STACK,
        T::RlimitCore => Resource::RLIMIT_CORE,
        T::RlimitRss => Resource::RLIMIT_RSS,
        T::RlimitNproc => Resource::RLIMIT_NPROC,
        T::RlimitNofile => Resource::RLIMIT_NOFILE,
        T::RlimitMemlock => Resource::RLIMIT_MEMLOCK,
        T::RlimitAs => Resource::RLIMIT_AS,
        T::RlimitLocks => Resource::RLIMIT_LOCKS,
        T::RlimitSigpending => Resource::RLIMIT_SIGPENDING,
        T::RlimitMsgqueue => Resource::RLIMIT_MSGQUEUE,
        T::RlimitNice => Resource::RLIMIT_NICE,
        T::RlimitRtprio => Resource::RLIMIT_RTPRIO,
        T::RlimitRttime => Resource::RLIMIT_RTTIME,
    })
}

fn rlimits(p: &Process) -> Result<(), InitError> {
    for r in p.rlimits().as_deref().unwrap_or(&[]) {
        if let Some(res) = rlimit_resource(r.typ()) {
            setrlimit(res, r.soft(), r.hard()).map_err(errno(format!(
                "setrlimit {} soft={} hard={}",
                r.typ(),
                r.soft(),
                r.hard()
            )))?;
        }
    }
    Ok(())
}

fn to_caps(set: &Option<Capabilities>) -> CapsHashSet {
    set.iter()
        .flatten()
        .filter_map(|c| format!("CAP_{c}").parse::<caps::Capability>().ok())
        .filter(|c| caps::all().contains(c))
        .collect()
}

/// runc's order (finalizeNamespace): shrink the bounding set while still privileged,
/// keep capabilities across setuid with PR_SET_KEEPCAPS, switch ids, then set the
/// effective/permitted/inheritable/ambient sets (capabilities(7), "Effect of user ID
/// changes on capabilities").
fn user_and_caps(p: &Process) -> Result<(), InitError> {
    let caps_cfg = p.capabilities().as_ref();
    if let Some(c) = caps_cfg {
        let bounding = to_caps(c.bounding());
        for cap in caps::all() {
            if !bounding.contains(&cap) {
                caps::drop(None, CapSet::Bounding, cap).map_err(|source| InitError::Caps {
                    what: "bounding",
                    source,
                })?;
            }
        }
    }
    nix::sys::prctl::set_keepcaps(true).map_err(errno("set keepcaps"))?;
    let user = p.user();
    let gids: Vec<Gid> = user
        .additional_gids()
        .iter()
        .flatten()
        .map(|g| Gid::from_raw(*g))
        .collect();
    nix::unistd::setgroups(&gids).map_err(errno("setgroups"))?;
    let gid = Gid::from_raw(user.gid());
    nix::unistd::setresgid(gid, gid, gid).map_err(errno(format!("setgid {}", user.gid())))?;
    let uid = Uid::from_raw(user.uid());
    nix::unistd::setresuid(uid, uid, uid).map_err(errno(format!("setuid {}", user.uid())))?;
    nix::sys::prctl::set_keepcaps(false).map_err(errno("clear keepcaps"))?;
    let Some(c) = caps_cfg else { return Ok(()) };
    let permitted = to_caps(c.permitted());
    let effective = to_caps(c.effective());
    let set = |what: &'static str, cset: CapSet, value: &CapsHashSet| {
        caps::set(None, cset, value).map_err(|source| InitError::Caps { what, source })
    };
    // capset(2) needs effective ⊆ permitted at every step.
    let current_permitted =
        caps::read(None, CapSet::Permitted).map_err(|source| InitError::Caps {
            what: "read",
            source,
        })?;
    set(
        "effective",
        CapSet::Effective,
        &effective
            .intersection(&current_permitted)
            .copied()
            .collect(),
    )?;
    set(
        "inheritable",
        CapSet::Inheritable,
        &to_caps(c.inheritable()),
    )?;
    set("permitted", CapSet::Permitted, &permitted)?;
    set(
        "effective",
        CapSet::Effective,
        &effective.intersection(&permitted).copied().collect(),
    )?;
    caps::clear(None, CapSet::Ambient).map_err(|source| InitError::Caps {
        what: "ambient",
        source,
    })?;
    // The kernel raises an ambient capability only if it is both permitted and
    // inheritable; runc (whose default spec dropped inheritable for CVE-2022-29162)
    // warns and continues, and so do we.
    for cap in to_caps(c.ambient()) {
        if let Err(e) = caps::raise(None, CapSet::Ambient, cap) {
            tracing::debug!("cannot raise ambient capability {cap}: {e}");
        }
    }
    Ok(())
}

/// process.env, plus HOME from the container's /etc/passwd when unset (runc does this).
fn environment(p: &Process) -> Vec<String> {
    let mut env = p.env().clone().unwrap_or_default();
    if !env.iter().any(|e| e.starts_with("HOME=")) {
        let uid = p.user().uid().to_string();
        let home = std::fs::read_to_string("/etc/passwd")
            .ok()
            .and_then(|text| {
                text.lines().find_map(|l| {
                    let f: Vec<&str> = l.split(':').collect();
                    (f.len() > 5 && f[2] == uid).then(|| f[5].to_owned())
                })
            })
            .unwrap_or_else(|| "/".to_owned());
        env.push(format!("HOME={home}"));
    }
    env
}

/// Go's exec.LookPath, with its error texts (runc reports exactly these).
pub fn lookup_executable(name: &str, path_var: &str) -> Result<PathBuf, InitError> {
    let fail = |reason: String| InitError::Exec {
        name: name.to_owned(),
        reason,
    };
    let check = |candidate: &Path| -> Result<(), String> {
        let meta = std::fs::metadata(candidate).map_err(|e| {
            let text = e.raw_os_error().map_or(e.to_string(), |n| {
                errno_text(nix::errno::Errno::from_raw(n))
            });
            format!("stat {}: {text}", candidate.display())
        })?;
        if meta.is_dir() || meta.permissions().mode() & 0o111 == 0 {
            return Err("permission denied".to_owned());
        }
        Ok(())
    };
    if name.is_empty() {
        return Err(fail("executable file not found in $PATH".into()));
    }
    if name.contains('/') {
        return check(Path::new(name))
            .map(|()| PathBuf::from(name))
            .map_err(fail);
    }
    for dir in path_var.split(':') {
        let dir = if dir.is_empty() { "." } else { dir };
        let candidate = Path::new(dir).join(name);
        if check(&candidate).is_ok() {
            return Ok(candidate);
        }
    }
    Err(fail("executable file not found in $PATH".into()))
}

pub(super) fn close_fds(preserve: u32) -> Result<(), InitError> {
    let first = 3 + preserve;
    match crate::sys::cloexec_from(first) {
        Ok(()) => Ok(()),
        // A seccomp profile loaded earlier may refuse close_range; walk /proc instead.
        Err(_) => {
            let fds: Vec<i32> = std::fs::read_dir("/proc/self/fd")
                .map_err(|e| InitError::Errno {
                    what: format!("list /proc/self/fd: {e}"),
                    source: nix::errno::Errno::EIO,
                })?
                .flatten()
                .filter_map(|e| e.file_name().to_str().and_then(|n| n.parse().ok()))
                .filter(|fd| *fd >= first as i32)
                .collect();
            for fd in fds {
                // The fd of the directory listing itself is already closed; EBADF is fine.
                let _ = crate::sys::set_cloexec(fd);
            }
            Ok(())
        }
    }
}

/// Blocks until `start` opens exec.fifo for reading. The fd we hold is O_PATH (opened on
/// the host before pivot_root); reopening it through /proc/self/fd gives a real open that
/// blocks like open(2) on a FIFO does (fifo(7)).
pub(super) fn wait_for_start(fifo: &OwnedFd) -> Result<(), InitError> {
    let path = format!("/proc/self/fd/{}", fifo.as_raw_fd());
    let fd = loop {
        match open(
            path.as_str(),
            OFlag::O_WRONLY | OFlag::O_CLOEXEC,
            Mode::empty(),
        ) {
            Err(nix::errno::Errno::EINTR) => continue,
            other => break other.map_err(|source| InitError::Fifo { source })?,
        }
    };
    nix::unistd::write(&fd, b"0").map_err(|source| InitError::Fifo { source })?;
    Ok(())
}

pub(super) fn exec(t: &Target) -> InitError {
    let err = nix::unistd::execve(&t.path, &t.args, &t.env).unwrap_err();
    InitError::Exec {
        name: t.name.clone(),
        reason: errno_text(err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lookup_messages_match_runc() {
        let err = lookup_executable("/nonexistent", DEFAULT_PATH)
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"exec: "/nonexistent": stat /nonexistent: no such file or directory"#
        );
        let err = lookup_executable("/etc", DEFAULT_PATH)
            .unwrap_err()
            .to_string();
        assert_eq!(err, r#"exec: "/etc": permission denied"#);
        let err = lookup_executable("no-such-tool-xyz", "/bin")
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            r#"exec: "no-such-tool-xyz": executable file not found in $PATH"#
        );
        assert_eq!(
            lookup_executable("sh", "/nope:/bin").unwrap(),
            PathBuf::from("/bin/sh")
        );
    }
}
