//! Which namespaces a container gets: created at clone time, joined by path, or (cgroup)
//! unshared only after the process has been moved into its cgroups, so the namespace's
//! root is the container's cgroup (cgroup_namespaces(7)).

use std::os::fd::{AsFd, OwnedFd};
use std::path::{Path, PathBuf};

use nix::fcntl::{open, OFlag};
use nix::sched::CloneFlags;
use nix::sys::stat::Mode;
use oci_spec::runtime::{LinuxNamespace, LinuxNamespaceType};

#[derive(Debug, thiserror::Error)]
pub enum NamespaceError {
    #[error("cannot write linux.timeOffsets to /proc/self/timens_offsets: {source}")]
    TimeOffsets { source: std::io::Error },
    #[error("cannot open namespace {}: {}", path.display(), crate::syscall::errno_text(*source))]
    Open {
        path: PathBuf,
        source: nix::errno::Errno,
    },
    #[error("cannot return the runtime to its own {kind} namespace: {}", crate::syscall::errno_text(*source))]
    Return {
        kind: &'static str,
        source: nix::errno::Errno,
    },
    #[error("linux.namespaces: {} is a {found} namespace, not a {want} namespace", path.display())]
    WrongType {
        path: PathBuf,
        found: String,
        want: &'static str,
    },
    #[error("linux.namespaces: {} is not a namespace file (want a {want} namespace such as /proc/<pid>/ns/{proc})", path.display())]
    NotNamespace {
        path: PathBuf,
        want: &'static str,
        proc: &'static str,
    },
    #[error("cannot join {kind} namespace {}: {}", path.display(), crate::syscall::errno_text(*source))]
    Join {
        kind: &'static str,
        path: PathBuf,
        source: nix::errno::Errno,
    },
}

pub fn flag(typ: LinuxNamespaceType) -> CloneFlags {
    match typ {
        LinuxNamespaceType::Mount => CloneFlags::CLONE_NEWNS,
        LinuxNamespaceType::Cgroup => CloneFlags::CLONE_NEWCGROUP,
        LinuxNamespaceType::Uts => CloneFlags::CLONE_NEWUTS,
        LinuxNamespaceType::Ipc => CloneFlags::CLONE_NEWIPC,
        LinuxNamespaceType::User => CloneFlags::CLONE_NEWUSER,
        LinuxNamespaceType::Pid => CloneFlags::CLONE_NEWPID,
        LinuxNamespaceType::Network => CloneFlags::CLONE_NEWNET,
        LinuxNamespaceType::Time => CloneFlags::from_bits_retain(libc::CLONE_NEWTIME),
    }
}

/// The /proc/<pid>/ns/ file name.
pub fn proc_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mnt",
        LinuxNamespaceType::Cgroup => "cgroup",
        LinuxNamespaceType::Uts => "uts",
        LinuxNamespaceType::Ipc => "ipc",
        LinuxNamespaceType::User => "user",
        LinuxNamespaceType::Pid => "pid",
        LinuxNamespaceType::Network => "net",
        LinuxNamespaceType::Time => "time",
    }
}

const KINDS: [LinuxNamespaceType; 8] = [
    LinuxNamespaceType::Mount,
    LinuxNamespaceType::Cgroup,
    LinuxNamespaceType::Uts,
    LinuxNamespaceType::Ipc,
    LinuxNamespaceType::User,
    LinuxNamespaceType::Pid,
    LinuxNamespaceType::Network,
    LinuxNamespaceType::Time,
];

/// The runtime-spec name of a namespace type (`network`, not /proc's `net`).
fn spec_name(typ: LinuxNamespaceType) -> &'static str {
    match typ {
        LinuxNamespaceType::Mount => "mount",
        LinuxNamespaceType::Network => "network",
        other => proc_name(other),
    }
}

/// An opened namespace to setns(2) into.
#[derive(Debug)]
pub struct Join {
    pub kind: LinuxNamespaceType,
    pub path: PathBuf,
    pub fd: OwnedFd,
}

impl Join {
    pub fn open(kind: LinuxNamespaceType, path: &Path) -> Result<Self, NamespaceError> {
        let fd =
            open(path, OFlag::O_RDONLY | OFlag::O_CLOEXEC, Mode::empty()).map_err(|source| {
                NamespaceError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
        // Named here rather than as setns's bare EINVAL. By the filesystem and the
        // kernel's own answer, not the fd's link: a bind-mounted namespace file (`ip
        // netns`, the engine's) is its mount's root, and its link reads that path.
        let nsfs = nix::sys::statfs::fstatfs(&fd)
            .is_ok_and(|st| st.filesystem_type() == nix::sys::statfs::NSFS_MAGIC);
        let found = nsfs.then(|| crate::sys::ns_type(fd.as_fd()).ok()).flatten();
        match found {
            None if !nsfs => {
                return Err(NamespaceError::NotNamespace {
                    path: path.to_path_buf(),
                    want: spec_name(kind),
                    proc: proc_name(kind),
                })
            }
            Some(bits) if bits != flag(kind).bits() => {
                let found = KINDS
                    .into_iter()
                    .find(|k| flag(*k).bits() == bits)
                    .map_or_else(|| format!("{bits:#x}"), |k| spec_name(k).to_owned());
                return Err(NamespaceError::WrongType {
                    path: path.to_path_buf(),
                    found,
                    want: spec_name(kind),
                });
            }
            // Its type, or a kernel without NS_GET_NSTYPE: setns checks the kind.
            _ => {}
        }
        Ok(Self {
            kind,
            path: path.to_path_buf(),
            fd,
        })
    }

    pub fn enter(&self) -> Result<(), NamespaceError> {
        nix::sched::setns(self.fd.as_fd(), flag(self.kind)).map_err(|source| NamespaceError::Join {
            kind: proc_name(self.kind),
            path: self.path.clone(),
            source,
        })
    }
}

/// The namespace plan of a new container.
#[derive(Debug)]
pub struct Plan {
    /// New namespaces created by clone.
    pub clone_flags: CloneFlags,
    /// New namespaces created after the cgroup move (cgroup).
    pub unshare_later: CloneFlags,
    /// Namespaces joined by path, in setns order (mount last: it changes what paths mean).
    pub joins: Vec<Join>,
    /// A pid namespace to join: entered by the runtime itself before clone, since
    /// setns(CLONE_NEWPID) only affects children (pid_namespaces(7)).
    pub pid_join: Option<Join>,
    /// A new time namespace: unshared by the runtime before clone, so its offsets can be
    /// written before the first process (init) enters it (time_namespaces(7)).
    pub new_time: bool,
    /// A user namespace to join: entered by the runtime itself right before clone, so the
    /// namespaces clone creates are owned by it (as runc's nsexec does with setns first).
    pub user_join: Option<Join>,
}

pub fn plan(namespaces: &[LinuxNamespace]) -> Result<Plan, NamespaceError> {
    let mut plan = Plan {
        clone_flags: CloneFlags::empty(),
        unshare_later: CloneFlags::empty(),
        joins: Vec::new(),
        pid_join: None,
        new_time: false,
        user_join: None,
    };
    for ns in namespaces {
        match (ns.typ(), ns.path()) {
            (LinuxNamespaceType::User, Some(path)) => {
                plan.user_join = Some(Join::open(ns.typ(), path)?)
            }
            (LinuxNamespaceType::Pid, Some(path)) => {
                plan.pid_join = Some(Join::open(ns.typ(), path)?)
            }
            (typ, Some(path)) => plan.joins.push(Join::open(typ, path)?),
            (LinuxNamespaceType::Cgroup, None) => plan.unshare_later |= CloneFlags::CLONE_NEWCGROUP,
            (LinuxNamespaceType::Time, None) => plan.new_time = true,
            (typ, None) => plan.clone_flags |= flag(typ),
        }
    }
    plan.joins
        .sort_by_key(|j| j.kind == LinuxNamespaceType::Mount);
    Ok(plan)
}

/// unshare(CLONE_NEWTIME) in the calling (single-threaded) runtime, then the offsets into
/// /proc/self/timens_offsets, which names the namespace our children will be created in;
/// the runtime itself stays in its own. Offsets are only writable before any process has
/// entered the namespace, which is why clone(CLONE_NEWTIME) cannot be used.
pub fn new_time_namespace(
    offsets: Option<&std::collections::HashMap<String, oci_spec::runtime::LinuxTimeOffset>>,
) -> Result<(), NamespaceError> {
    let path = Path::new("/proc/self/timens_offsets");
    nix::sched::unshare(flag(LinuxNamespaceType::Time)).map_err(|source| NamespaceError::Join {
        kind: "time",
        path: PathBuf::from("(new)"),
        source,
    })?;
    let mut text = String::new();
    for (clock, off) in offsets.into_iter().flatten() {
        let secs = off.secs().unwrap_or(0);
        let nanos = off.nanosecs().unwrap_or(0);
        text.push_str(&format!("{clock} {secs} {nanos}\n"));
    }
    if text.is_empty() {
        return Ok(());
    }
    std::fs::write(path, text).map_err(|e| NamespaceError::TimeOffsets { source: e })
}

impl Plan {
    /// Enters the user namespace given by path (the runtime does, right before clone, so
    /// the namespaces clone creates are owned by it), after runc 1.2's first pass: every
    /// other namespace given by path but the mount namespace is entered first where our
    /// capabilities allow, since one owned by an outer user namespace (e.g. the host's)
    /// can no longer be entered from inside. Init inherits those; the ones refused here
    /// stay in `joins` for init, which tries them again inside the user namespace. The
    /// runtime stays in what it entered (it cannot return to namespaces of the host's user
    /// namespace from the joined one); the mount namespace is left to init so the
    /// runtime's paths keep their meaning.
    pub fn enter_user_join(&mut self) -> Result<(), NamespaceError> {
        let Some(user) = &self.user_join else {
            return Ok(());
        };
        let mut later = Vec::new();
        for join in std::mem::take(&mut self.joins) {
            if join.kind == LinuxNamespaceType::Mount {
                later.push(join);
                continue;
            }
            match join.enter() {
                Ok(()) => {}
                Err(NamespaceError::Join {
                    source: nix::errno::Errno::EPERM,
                    ..
                }) => later.push(join),
                Err(e) => return Err(e),
            }
        }
        self.joins = later;
        user.enter()
    }

    /// runc's order when a new user namespace meets namespaces given by path: nsexec
    /// joins those first, as root of the host's user namespace (they are usually owned by
    /// it, and from inside the new one their setns would be refused), and only then makes
    /// the user namespace and the remaining new ones, owned by it. The runtime does the
    /// same around its clone: it enters the joined namespaces itself, clone creates the
    /// user namespace and the others (the child inherits the joined ones), and
    /// [`Borrowed::restore`] takes the runtime back to its own right after. None when
    /// there is nothing to do this way (init joins by itself).
    pub fn enter_joins_for_clone(&mut self) -> Result<Option<Borrowed>, NamespaceError> {
        if !self.clone_flags.contains(CloneFlags::CLONE_NEWUSER) || self.joins.is_empty() {
            return Ok(None);
        }
        let cwd = open(
            ".",
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
            Mode::empty(),
        )
        .map_err(|source| NamespaceError::Open {
            path: PathBuf::from("."),
            source,
        })?;
        let mut borrowed = Borrowed {
            own: Vec::new(),
            cwd,
        };
        for join in std::mem::take(&mut self.joins) {
            let own = Join::open(
                join.kind,
                &PathBuf::from(format!("/proc/self/ns/{}", proc_name(join.kind))),
            )?;
            if let Err(e) = join.enter() {
                // Back to where we were before reporting: the caller goes on cleaning up.
                borrowed.restore()?;
                return Err(e);
            }
            borrowed.own.push(own);
        }
        Ok(Some(borrowed))
    }
}

/// The runtime's own namespaces (and cwd: entering a mount namespace moves it) while it is
/// in a container's for [`Plan::enter_joins_for_clone`].
#[derive(Debug)]
pub struct Borrowed {
    own: Vec<Join>,
    cwd: OwnedFd,
}

impl Borrowed {
    pub fn restore(self) -> Result<(), NamespaceError> {
        for own in self.own.iter().rev() {
            own.enter().map_err(|e| match e {
                NamespaceError::Join { kind, source, .. } => {
                    NamespaceError::Return { kind, source }
                }
                other => other,
            })?;
        }
        nix::unistd::fchdir(&self.cwd).map_err(|source| NamespaceError::Return {
            kind: "mnt",
            source,
        })
    }
}

/// Enters `joins` in order; when one of them is a user namespace, runc 1.2's three
/// passes: every other namespace first where our capabilities allow (a namespace owned by
/// an outer user namespace cannot be joined from inside the container's), then the user
/// namespace, then what was refused before (a rootless runtime only gets the
/// capabilities for those from the user namespace).
pub fn enter_all(joins: &[Join]) -> Result<(), NamespaceError> {
    let is_user = |j: &&Join| j.kind == LinuxNamespaceType::User;
    if !joins.iter().any(|j| is_user(&j)) {
        return joins.iter().try_for_each(Join::enter);
    }
    let mut refused = Vec::new();
    for join in joins.iter().filter(|j| !is_user(j)) {
        match join.enter() {
            Err(NamespaceError::Join {
                source: nix::errno::Errno::EPERM,
                ..
            }) => refused.push(join),
            other => other?,
        }
    }
    joins.iter().filter(is_user).try_for_each(Join::enter)?;
    refused.into_iter().try_for_each(Join::enter)
}

/// [`is_new`] over a spec's `linux` section.
pub fn is_new_in(linux: &oci_spec::runtime::Linux, typ: LinuxNamespaceType) -> bool {
    is_new(linux.namespaces().as_deref().unwrap_or(&[]), typ)
}

pub fn is_new(namespaces: &[LinuxNamespace], typ: LinuxNamespaceType) -> bool {
    namespaces
        .iter()
        .any(|n| n.typ() == typ && n.path().is_none())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_splits_new_joined_and_late() {
        let list: Vec<LinuxNamespace> = serde_json::from_str(
            r#"[{"type":"pid"},{"type":"mount"},{"type":"cgroup"},{"type":"network","path":"/proc/self/ns/net"},{"type":"uts","path":"/proc/self/ns/uts"}]"#,
        )
        .unwrap();
        let p = plan(&list).unwrap();
        assert_eq!(
            p.clone_flags,
            CloneFlags::CLONE_NEWPID | CloneFlags::CLONE_NEWNS
        );
        assert_eq!(p.unshare_later, CloneFlags::CLONE_NEWCGROUP);
        let kinds: Vec<_> = p.joins.iter().map(|j| j.kind).collect();
        assert_eq!(
            kinds,
            [LinuxNamespaceType::Network, LinuxNamespaceType::Uts]
        );
        assert!(is_new(&list, LinuxNamespaceType::Pid));
        assert!(!is_new(&list, LinuxNamespaceType::Network));
    }

    #[test]
    fn bad_path_is_named() {
        let list: Vec<LinuxNamespace> =
            serde_json::from_str(r#"[{"type":"network","path":"/nonexistent/ns"}]"#).unwrap();
        let err = plan(&list).unwrap_err().to_string();
        assert!(err.contains("/nonexistent/ns"), "{err}");
    }

    #[test]
    fn wrong_type_and_non_namespace_are_named() {
        let list: Vec<LinuxNamespace> =
            serde_json::from_str(r#"[{"type":"network","path":"/proc/self/ns/uts"}]"#).unwrap();
        let err = plan(&list).unwrap_err().to_string();
        assert_eq!(
            err,
            "linux.namespaces: /proc/self/ns/uts is a uts namespace, not a network namespace"
        );
        let list: Vec<LinuxNamespace> =
            serde_json::from_str(r#"[{"type":"mount","path":"/dev/null"}]"#).unwrap();
        let err = plan(&list).unwrap_err().to_string();
        assert!(err.contains("/dev/null is not a namespace file (want a mount namespace such as /proc/<pid>/ns/mnt)"), "{err}");
        let list: Vec<LinuxNamespace> =
            serde_json::from_str(r#"[{"type":"network","path":"/proc/self/ns/net"}]"#).unwrap();
        plan(&list).unwrap();
    }
}
