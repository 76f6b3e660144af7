//! The cgroup hierarchies mounted on this host, from /proc/self/mountinfo (proc(5)).

use std::collections::BTreeMap;
use std::path::PathBuf;

use super::{CgroupError, CgroupPaths};

/// One mounted hierarchy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hierarchy {
    /// v1 controllers (and `name=` hierarchies like `name=systemd`); empty for v2.
    pub controllers: Vec<String>,
    /// The cgroup the mount shows as its root (not `/` inside a cgroup namespace).
    pub root: String,
    /// Where it is mounted.
    pub dir: PathBuf,
}

impl Hierarchy {
    /// The directory of cgroup `path` (as /proc/PID/cgroup writes it) in this mount.
    fn dir_of(&self, path: &str) -> Option<PathBuf> {
        let rel = if self.root == "/" {
            path
        } else {
            let rest = path.strip_prefix(self.root.as_str())?;
            if !rest.is_empty() && !rest.starts_with('/') {
                return None;
            }
            rest
        };
        Some(self.dir.join(rel.trim_start_matches('/')))
    }
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Hierarchies {
    pub v1: Vec<Hierarchy>,
    pub v2: Option<Hierarchy>,
}

impl Hierarchies {
    pub fn current() -> Result<Hierarchies, CgroupError> {
        let path = PathBuf::from("/proc/self/mountinfo");
        let text =
            std::fs::read_to_string(&path).map_err(|source| CgroupError::Read { path, source })?;
        Ok(Hierarchies::parse(&text))
    }

    /// Parses mountinfo lines: `ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTS [OPTIONAL...] -
    /// FSTYPE SOURCE SUPER_OPTS`. The first mount of each hierarchy wins.
    pub fn parse(mountinfo: &str) -> Hierarchies {
        let mut found = Hierarchies::default();
        for line in mountinfo.lines() {
            let Some((before, after)) = line.split_once(" - ") else {
                continue;
            };
            let fields: Vec<&str> = before.split(' ').collect();
            let after: Vec<&str> = after.split(' ').collect();
            let (Some(root), Some(dir), Some(fstype)) =
                (fields.get(3), fields.get(4), after.first())
            else {
                continue;
            };
            let mut hierarchy = Hierarchy {
                controllers: Vec::new(),
                root: unescape(root),
                dir: PathBuf::from(unescape(dir)),
            };
            match *fstype {
                "cgroup2" if found.v2.is_none() => found.v2 = Some(hierarchy),
                "cgroup" => {
                    let opts = after.get(2).copied().unwrap_or_default();
                    hierarchy.controllers = opts
                        .split(',')
                        .filter(|o| is_controller(o))
                        .map(str::to_owned)
                        .collect();
                    let seen = found
                        .v1
                        .iter()
                        .any(|h| h.controllers == hierarchy.controllers);
                    if !hierarchy.controllers.is_empty() && !seen {
                        found.v1.push(hierarchy);
                    }
                }
                _ => {}
            }
        }
        found
    }

    /// The cgroup a process is in, from its /proc/PID/cgroup text: its v1 controllers'
    /// directories when it has any (v1 and hybrid hosts), else its unified cgroup.
    pub fn resolve(&self, proc_cgroup: &str) -> Option<CgroupPaths> {
        let mut dirs = BTreeMap::new();
        let mut unified = None;
        for line in proc_cgroup.lines() {
            let mut parts = line.splitn(3, ':');
            let (Some(_), Some(ctrls), Some(path)) = (parts.next(), parts.next(), parts.next())
            else {
                continue;
            };
            if ctrls.is_empty() {
                unified = self.v2.as_ref().and_then(|h| h.dir_of(path));
                continue;
            }
            let Some(first) = ctrls.split(',').next() else {
                continue;
            };
            let mounted = self
                .v1
                .iter()
                .find(|h| h.controllers.iter().any(|c| c == first));
            if let Some(dir) = mounted.and_then(|h| h.dir_of(path)) {
                for ctrl in ctrls.split(',') {
                    dirs.insert(ctrl.to_owned(), dir.clone());
                }
            }
        }
        if dirs.keys().any(|c| !c.starts_with("name=")) {
            return Some(CgroupPaths::V1(dirs));
        }
        unified.map(CgroupPaths::V2)
    }

    /// The cgroup an OCI `linux.cgroupsPath` names, for runtimes driving cgroupfs
    /// directly (absolute paths, relative to each hierarchy's root).
    pub fn from_cgroups_path(&self, path: &str) -> Result<CgroupPaths, CgroupError> {
        if !path.starts_with('/') || path.contains(':') {
            return Err(CgroupError::SpecPath {
                path: path.to_owned(),
            });
        }
        let rel = path.trim_start_matches('/');
        if !self.v1.is_empty() {
            let dirs = self
                .v1
                .iter()
                .flat_map(|h| h.controllers.iter().map(|c| (c.clone(), h.dir.join(rel))))
                .collect();
            return Ok(CgroupPaths::V1(dirs));
        }
        let v2 = self.v2.as_ref().ok_or(CgroupError::NoHierarchy)?;
        Ok(CgroupPaths::V2(v2.dir.join(rel)))
    }

    /// Every mounted hierarchy once: v1 ones, then the unified one.
    pub fn all(&self) -> impl Iterator<Item = &Hierarchy> {
        self.v1.iter().chain(self.v2.as_ref())
    }
}

/// Super options of a v1 mount that name a hierarchy rather than set an option.
fn is_controller(opt: &str) -> bool {
    const NOT_CONTROLLERS: [&str; 8] = [
        "rw",
        "ro",
        "noprefix",
        "clone_children",
        "xattr",
        "cpuset_v2_mode",
        "favordynmods",
        "nofavor",
    ];
    !opt.is_empty()
        && !NOT_CONTROLLERS.contains(&opt)
        && !opt.starts_with("release_agent=")
        && (opt.starts_with("name=") || !opt.contains('='))
}

/// mountinfo escapes space, tab, newline and backslash as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes.get(i + 1..i + 4).and_then(|d| {
            let s = std::str::from_utf8(d).ok()?;
            u8::from_str_radix(s, 8).ok()
        });
        match (bytes[i], octal) {
            (b'\\', Some(b)) => {
                out.push(b);
                i += 4;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Test helper: a host whose hierarchies are mounted under `base`.
#[cfg(test)]
pub(super) fn fake(base: &std::path::Path, v1: &[&str], v2: bool) -> Hierarchies {
    Hierarchies {
        v1: v1
            .iter()
            .map(|name| Hierarchy {
                controllers: name.split(',').map(str::to_owned).collect(),
                root: "/".into(),
                dir: base.join(name),
            })
            .collect(),
        v2: v2.then(|| Hierarchy {
            controllers: Vec::new(),
            root: "/".into(),
            dir: base.join("unified"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::Path;

    const MOUNTINFO: &str = "\
25 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw
30 25 0:26 / /sys/fs/cgroup rw shared:6 - tmpfs tmpfs rw,mode=755
31 30 0:27 / /sys/fs/cgroup/unified rw shared:7 - cgroup2 cgroup2 rw,nsdelegate
32 30 0:28 / /sys/fs/cgroup/systemd rw shared:8 - cgroup cgroup rw,xattr,name=systemd
33 30 0:29 / /sys/fs/cgroup/cpu,cpuacct rw shared:9 - cgroup cgroup rw,cpu,cpuacct
34 30 0:30 / /sys/fs/cgroup/memory rw shared:10 - cgroup cgroup rw,memory
35 30 0:31 /ns /sys/fs/cgroup/pids rw shared:11 - cgroup cgroup rw,pids
36 25 0:30 / /mnt/again\\040x rw shared:10 - cgroup cgroup rw,memory
";

    #[test]
    fn parses_v1_v2_and_comounted_hierarchies() {
        let h = Hierarchies::parse(MOUNTINFO);
        let names: Vec<_> = h.v1.iter().map(|h| h.controllers.join(",")).collect();
        assert_eq!(names, ["name=systemd", "cpu,cpuacct", "memory", "pids"]);
        assert_eq!(h.v1[1].dir, Path::new("/sys/fs/cgroup/cpu,cpuacct"));
        assert_eq!(
            h.v2.as_ref().map(|h| h.dir.clone()),
            Some("/sys/fs/cgroup/unified".into())
        );
        assert_eq!(unescape("/mnt/again\\040x"), "/mnt/again x");
    }

    #[test]
    fn resolves_a_process_on_a_hybrid_host() {
        let h = Hierarchies::parse(MOUNTINFO);
        let proc_cgroup = "5:pids:/ns/berth/c1\n4:memory:/berth/c1\n2:cpu,cpuacct:/berth/c1\n\
                           1:name=systemd:/user.slice\n0::/user.slice\n";
        let Some(CgroupPaths::V1(dirs)) = h.resolve(proc_cgroup) else {
            panic!("not v1");
        };
        assert_eq!(dirs["memory"], Path::new("/sys/fs/cgroup/memory/berth/c1"));
        assert_eq!(
            dirs["cpuacct"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/c1")
        );
        assert_eq!(dirs["pids"], Path::new("/sys/fs/cgroup/pids/berth/c1"));
        assert_eq!(
            dirs["name=systemd"],
            Path::new("/sys/fs/cgroup/systemd/user.slice")
        );
    }

    #[test]
    fn resolves_a_process_on_a_unified_host() {
        let h = Hierarchies::parse(
            "31 30 0:27 / /sys/fs/cgroup rw shared:7 - cgroup2 cgroup2 rw,nsdelegate\n",
        );
        assert_eq!(
            h.resolve("0::/berth/c1\n"),
            Some(CgroupPaths::V2("/sys/fs/cgroup/berth/c1".into()))
        );
        assert_eq!(
            h.from_cgroups_path("/berth/c2").expect("path"),
            CgroupPaths::V2("/sys/fs/cgroup/berth/c2".into())
        );
        assert!(h.from_cgroups_path("system.slice:berth:c1").is_err());
        assert!(h.from_cgroups_path("relative/c1").is_err());
        assert_eq!(Hierarchies::default().resolve("0::/x\n"), None);
    }

    #[test]
    fn spec_path_covers_every_v1_controller() {
        let h = Hierarchies::parse(MOUNTINFO);
        let Ok(CgroupPaths::V1(dirs)) = h.from_cgroups_path("/berth/c1") else {
            panic!("not v1");
        };
        assert_eq!(
            dirs["cpu"],
            Path::new("/sys/fs/cgroup/cpu,cpuacct/berth/c1")
        );
        assert_eq!(dirs["memory"], Path::new("/sys/fs/cgroup/memory/berth/c1"));
    }
}
