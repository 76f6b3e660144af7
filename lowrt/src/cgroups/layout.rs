//! Which cgroup hierarchies the host has mounted, read from /proc/self/mountinfo.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::CgroupError;

/// One cgroup v1 hierarchy.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct V1Hierarchy {
    /// Where it is mounted, e.g. /sys/fs/cgroup/cpu,cpuacct.
    pub mountpoint: PathBuf,
    /// Its controllers (e.g. ["cpu", "cpuacct"]) or ["name=systemd"] for a named one.
    pub controllers: Vec<String>,
}

impl V1Hierarchy {
    /// The directory name used inside the container's /sys/fs/cgroup.
    pub fn dir_name(&self) -> String {
        self.mountpoint
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| self.controllers.join(","))
    }

    pub fn has(&self, controller: &str) -> bool {
        self.controllers.iter().any(|c| c == controller)
    }
}

/// The host's cgroup mounts that lowrt uses.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq, Eq)]
pub struct CgroupLayout {
    pub v1: Vec<V1Hierarchy>,
    /// The cgroup2 mount: /sys/fs/cgroup on a pure v2 host, or e.g. /sys/fs/cgroup/unified.
    pub v2: Option<PathBuf>,
}

/// Reads the layout of the running host.
pub fn detect_layout() -> Result<CgroupLayout, CgroupError> {
    let text = std::fs::read_to_string("/proc/self/mountinfo").map_err(CgroupError::Mountinfo)?;
    let layout = parse_mountinfo(&text);
    if layout.v1.is_empty() && layout.v2.is_none() {
        return Err(CgroupError::NoHierarchy);
    }
    Ok(layout)
}

/// Parses mountinfo(5) text. Only mounts of a hierarchy's root are used (a container's
/// bind of a sub-cgroup is not a hierarchy we should create cgroups in); the first mount
/// of each hierarchy wins.
pub fn parse_mountinfo(text: &str) -> CgroupLayout {
    let mut layout = CgroupLayout::default();
    for line in text.lines() {
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        let fields: Vec<&str> = left.split(' ').collect();
        let tail: Vec<&str> = right.split(' ').collect();
        if fields.len() < 5 || tail.len() < 3 || fields[3] != "/" {
            continue;
        }
        let mountpoint = PathBuf::from(unescape(fields[4]));
        match tail[0] {
            "cgroup2" if layout.v2.is_none() => layout.v2 = Some(mountpoint),
            "cgroup" => {
                let controllers: Vec<String> = tail[2]
                    .split(',')
                    .filter(|o| {
                        !matches!(
                            *o,
                            "rw" | "ro"
                                | "xattr"
                                | "clone_children"
                                | "noprefix"
                                | "cpuset_v2_mode"
                        )
                    })
                    .filter(|o| !o.starts_with("release_agent="))
                    .map(str::to_owned)
                    .collect();
                if controllers.is_empty() || layout.v1.iter().any(|h| h.controllers == controllers)
                {
                    continue;
                }
                layout.v1.push(V1Hierarchy {
                    mountpoint,
                    controllers,
                });
            }
            _ => {}
        }
    }
    // On a hybrid host /sys/fs/cgroup itself is a tmpfs and cgroup2 sits below it; on a
    // pure v2 host cgroup2 is /sys/fs/cgroup and there are no v1 hierarchies.
    layout
}

/// mountinfo escapes space, tab, newline and backslash as octal.
pub fn unescape(field: &str) -> String {
    let mut out = String::with_capacity(field.len());
    let bytes = field.as_bytes();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' && i + 4 <= bytes.len() {
            if let Ok(v) = u8::from_str_radix(&field[i + 1..i + 4], 8) {
                out.push(v as char);
                i += 4;
                continue;
            }
        }
        out.push(bytes[i] as char);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const HYBRID: &str = "\
25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw
26 25 0:24 / /sys/fs/cgroup ro,nosuid,nodev,noexec shared:8 - tmpfs tmpfs ro,mode=755
27 26 0:25 / /sys/fs/cgroup/unified rw,nosuid,nodev,noexec,relatime shared:9 - cgroup2 cgroup2 rw,nsdelegate
28 26 0:26 / /sys/fs/cgroup/systemd rw,nosuid shared:10 - cgroup cgroup rw,xattr,name=systemd
31 26 0:29 / /sys/fs/cgroup/cpu,cpuacct rw,nosuid shared:13 - cgroup cgroup rw,cpu,cpuacct
32 26 0:30 / /sys/fs/cgroup/memory rw,nosuid shared:14 - cgroup cgroup rw,memory
40 32 0:30 /berth/x /mnt/inner rw - cgroup cgroup rw,memory
";

    #[test]
    fn parses_hybrid_layout() {
        let layout = parse_mountinfo(HYBRID);
        assert_eq!(layout.v2, Some(PathBuf::from("/sys/fs/cgroup/unified")));
        let names: Vec<String> = layout.v1.iter().map(V1Hierarchy::dir_name).collect();
        assert_eq!(names, ["systemd", "cpu,cpuacct", "memory"]);
        assert_eq!(layout.v1[0].controllers, ["name=systemd"]);
        assert!(layout.v1[1].has("cpuacct"));
    }

    #[test]
    fn parses_pure_v2_layout() {
        let text =
            "30 1 0:26 / /sys/fs/cgroup rw,nosuid shared:4 - cgroup2 cgroup2 rw,nsdelegate\n";
        let layout = parse_mountinfo(text);
        assert!(layout.v1.is_empty());
        assert_eq!(layout.v2, Some(PathBuf::from("/sys/fs/cgroup")));
    }

    #[test]
    fn unescapes_octal() {
        assert_eq!(unescape("/a\\040b"), "/a b");
        assert_eq!(unescape("/plain"), "/plain");
    }
}
