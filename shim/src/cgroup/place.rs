//! `--cgroup PATH`: the daemon moves itself into a cgroup of its own, so its memory and
//! CPU are not accounted to whoever started it (highd), like containerd's `shim_cgroup`.
//!
//! The cgroup is created in every mounted hierarchy (each v1 hierarchy and, on hybrid
//! hosts, the unified one too) if missing. The caller owns it: the shim never removes it,
//! since other shims may share it and a process cannot remove the cgroup it is in.

use std::path::{Path, PathBuf};

use super::{CgroupError, Hierarchies, Hierarchy};

/// Checks a `--cgroup` value: absolute, normalized, not the root.
pub fn validate_path(path: &str) -> Result<(), CgroupError> {
    let rest = path
        .strip_prefix('/')
        .unwrap_or_default()
        .trim_end_matches('/');
    let normal = !rest.is_empty()
        && rest
            .split('/')
            .all(|c| !matches!(c, "" | "." | "..") && !c.contains('\n'));
    if !path.starts_with('/') || !normal {
        return Err(CgroupError::BadPath {
            path: path.to_owned(),
        });
    }
    Ok(())
}

/// Moves this process into cgroup `path` in every hierarchy; returns the directories.
///
/// On failure the process is moved back where it was and the directories this call
/// created are removed, so a rejected start leaves nothing behind.
pub fn place_self(path: &str) -> Result<Vec<PathBuf>, CgroupError> {
    validate_path(path)?;
    let hierarchies = Hierarchies::current()?;
    let proc_cgroup = std::fs::read_to_string("/proc/self/cgroup").unwrap_or_default();
    place_in(&hierarchies, &proc_cgroup, path, std::process::id())
}

fn place_in(
    hierarchies: &Hierarchies,
    proc_cgroup: &str,
    path: &str,
    pid: u32,
) -> Result<Vec<PathBuf>, CgroupError> {
    let rel = path.trim_start_matches('/');
    let mut created = Vec::new();
    let mut joined: Vec<(&Hierarchy, PathBuf)> = Vec::new();
    let mut result = Ok(());
    for h in hierarchies.all() {
        let dir = h.dir.join(rel);
        result = create(h, &dir, &mut created)
            .and_then(|()| write(&dir.join("cgroup.procs"), &pid.to_string()));
        if result.is_err() {
            break;
        }
        joined.push((h, dir));
    }
    if let Err(err) = result {
        for (h, _) in &joined {
            if let Some(old) = original_dir(h, proc_cgroup) {
                let _ = write(&old.join("cgroup.procs"), &pid.to_string());
            }
        }
        for dir in created.iter().rev() {
            let _ = std::fs::remove_dir(dir);
        }
        return Err(err);
    }
    if joined.is_empty() {
        return Err(CgroupError::NoHierarchy);
    }
    Ok(joined.into_iter().map(|(_, dir)| dir).collect())
}

/// Creates `dir` and any missing parents below the hierarchy's mount, recording them.
fn create(h: &Hierarchy, dir: &Path, created: &mut Vec<PathBuf>) -> Result<(), CgroupError> {
    let missing: Vec<&Path> = dir
        .ancestors()
        .take_while(|d| *d != h.dir && !d.is_dir())
        .collect();
    for d in missing.into_iter().rev() {
        match std::fs::create_dir(d) {
            Ok(()) => created.push(d.to_owned()),
            // Shims sharing one cgroup start concurrently; another one made it first.
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => {}
            Err(source) => {
                return Err(CgroupError::Create {
                    path: d.to_owned(),
                    source,
                })
            }
        }
        // A new v1 cpuset starts with no CPUs and no memory nodes, and no task can join
        // it until both are set (cgroup-v1/cpusets.rst, "Adding/removing cpus").
        if h.controllers.iter().any(|c| c == "cpuset") {
            inherit_cpuset(d)?;
        }
    }
    Ok(())
}

fn inherit_cpuset(dir: &Path) -> Result<(), CgroupError> {
    let Some(parent) = dir.parent() else {
        return Ok(());
    };
    for file in ["cpuset.cpus", "cpuset.mems"] {
        let current = std::fs::read_to_string(dir.join(file)).unwrap_or_default();
        if current.trim().is_empty() {
            let path = parent.join(file);
            let value = std::fs::read_to_string(&path)
                .map_err(|source| CgroupError::Read { path, source })?;
            write(&dir.join(file), value.trim())?;
        }
    }
    Ok(())
}

/// Where this process was in `h` before, from its /proc/self/cgroup text.
fn original_dir(h: &Hierarchy, proc_cgroup: &str) -> Option<PathBuf> {
    let single = Hierarchies {
        v1: (!h.controllers.is_empty())
            .then(|| h.clone())
            .into_iter()
            .collect(),
        v2: h.controllers.is_empty().then(|| h.clone()),
    };
    match single.resolve(proc_cgroup)? {
        super::CgroupPaths::V1(dirs) => dirs.into_values().next(),
        super::CgroupPaths::V2(dir) => Some(dir),
    }
}

fn write(path: &Path, value: &str) -> Result<(), CgroupError> {
    std::fs::write(path, value).map_err(|source| CgroupError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cgroup::mounts::fake;

    #[test]
    fn rejects_paths_that_are_not_absolute_and_normal() {
        for bad in ["", "/", "rel/x", "/a/../b", "/a/./b", "/a\n", "//a"] {
            assert!(validate_path(bad).is_err(), "{bad:?} accepted");
        }
        validate_path("/berth/shims").expect("valid");
        validate_path("/berth/shims/").expect("trailing slash");
    }

    #[test]
    fn creates_joins_and_inherits_cpuset_in_a_fake_tree() {
        let base = tempfile::tempdir().expect("tempdir");
        let h = fake(base.path(), &["cpuset", "memory"], true);
        for m in h.all() {
            std::fs::create_dir_all(&m.dir).expect("mount dir");
        }
        std::fs::write(base.path().join("cpuset/cpuset.cpus"), "0-1\n").expect("cpus");
        std::fs::write(base.path().join("cpuset/cpuset.mems"), "0\n").expect("mems");
        let dirs = place_in(&h, "", "/shims/x", 42).expect("place");
        assert_eq!(dirs.len(), 3);
        for dir in &dirs {
            let procs = std::fs::read_to_string(dir.join("cgroup.procs")).expect("procs");
            assert_eq!(procs, "42");
        }
        let cpus = base.path().join("cpuset/shims/x/cpuset.cpus");
        assert_eq!(std::fs::read_to_string(cpus).expect("cpus"), "0-1");
    }

    #[test]
    fn shims_starting_together_all_join_the_shared_cgroup() {
        let base = tempfile::tempdir().expect("tempdir");
        let h = fake(base.path(), &["memory", "pids"], false);
        for m in h.all() {
            std::fs::create_dir_all(&m.dir).expect("mount dir");
        }
        let h = &h;
        std::thread::scope(|scope| {
            let joins: Vec<_> = (0..8)
                .map(|pid| scope.spawn(move || place_in(h, "", "/berth/shims", 100 + pid)))
                .collect();
            for join in joins {
                let dirs = join.join().expect("thread").expect("place");
                assert_eq!(dirs.len(), 2);
            }
        });
    }

    #[test]
    fn failure_removes_what_it_created() {
        let base = tempfile::tempdir().expect("tempdir");
        // No parent values to inherit: the cpuset cannot be made usable.
        let h = fake(base.path(), &["memory", "cpuset"], false);
        for m in h.all() {
            std::fs::create_dir_all(&m.dir).expect("mount dir");
        }
        let err = place_in(&h, "", "/shims/x", 42).unwrap_err();
        assert!(err.to_string().contains("cpuset.cpus"), "{err}");
        // The memory dir keeps the fake cgroup.procs file, so only the cpuset side can
        // be checked for removal in a plain directory tree.
        assert!(!base.path().join("cpuset/shims").exists());
    }
}
