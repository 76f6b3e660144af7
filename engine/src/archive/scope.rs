//! Paths inside a container's root, resolved the way the container would see them:
//! symlinks are followed relative to the container's `/` and `..` never climbs above it
//! (moby's `FollowSymlinkInScope`), so a link like `/x -> /etc` or `../../..` can never
//! reach the host.

use std::collections::VecDeque;
use std::ffi::OsString;
use std::io;
use std::path::{Component, Path, PathBuf};

/// Symlinks followed before giving up, like Linux's MAXSYMLINKS.
const MAX_LINKS: usize = 40;

/// `path` (absolute in the container) under `root`. With `follow_last` a symlink in the
/// last component is followed too; otherwise the link itself is named.
pub fn resolve(root: &Path, path: &str, follow_last: bool) -> io::Result<PathBuf> {
    let mut queue: VecDeque<OsString> = components(Path::new(path));
    let mut done: Vec<OsString> = Vec::new();
    let mut links = 0;
    while let Some(c) = queue.pop_front() {
        if c == ".." {
            done.pop();
            continue;
        }
        let last = queue.is_empty();
        let candidate = join(root, &done).join(&c);
        let meta = match std::fs::symlink_metadata(&candidate) {
            Ok(m) => m,
            // The rest does not exist (yet): it is taken literally.
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                done.push(c);
                continue;
            }
            Err(e) => return Err(e),
        };
        if meta.file_type().is_symlink() && (!last || follow_last) {
            links += 1;
            if links > MAX_LINKS {
                return Err(io::Error::from_raw_os_error(libc::ELOOP));
            }
            let target = std::fs::read_link(&candidate)?;
            if target.is_absolute() {
                done.clear();
            }
            for t in components(&target).into_iter().rev() {
                queue.push_front(t);
            }
            continue;
        }
        done.push(c);
    }
    if done.is_empty() {
        // `root/.`: the root itself even when `root` is a magic link like
        // `/proc/<pid>/root`, which lstat would report as a symlink.
        return Ok(root.join("."));
    }
    Ok(join(root, &done))
}

fn components(p: &Path) -> VecDeque<OsString> {
    p.components()
        .filter_map(|c| match c {
            Component::Normal(n) => Some(n.to_os_string()),
            Component::ParentDir => Some("..".into()),
            _ => None,
        })
        .collect()
}

fn join(root: &Path, parts: &[OsString]) -> PathBuf {
    let mut p = root.to_path_buf();
    for c in parts {
        p.push(c);
    }
    p
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;

    #[test]
    fn links_stay_inside_the_root() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("etc/sub")).unwrap();
        symlink("/etc", root.join("abs")).unwrap();
        symlink("../../../../..", root.join("etc/up")).unwrap();
        symlink("sub", root.join("etc/rel")).unwrap();
        symlink("loop", root.join("loop")).unwrap();
        let r = |p: &str, f: bool| resolve(root, p, f).unwrap();
        assert_eq!(r("/abs/sub", true), root.join("etc/sub"));
        assert_eq!(r("/abs", false), root.join("abs"));
        assert_eq!(r("/abs", true), root.join("etc"));
        assert_eq!(r("/etc/up/etc", true), root.join("etc"));
        assert_eq!(r("/../../etc/rel/x", true), root.join("etc/sub/x"));
        assert_eq!(r("/missing/../etc", true), root.join("etc"));
        assert_eq!(r("/etc/up", true), root.join("."));
        assert!(resolve(root, "/loop/x", true).is_err());
    }
}
