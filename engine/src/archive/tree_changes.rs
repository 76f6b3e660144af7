//! `docker diff` on the copying snapshotter: the container's full tree against a full
//! tree of its image, as dockerd's naive differ (`archive.ChangesDirs`, the vfs driver)
//! compares two directories. An entry only in the container's tree is added (with all
//! below it), one only in the image's is deleted; one in both is modified when its type,
//! permissions, owner, device number or file capabilities differ, or (not for directories)
//! its size or mtime. A directory with any change below it that is not itself reported
//! comes first as modified. Depth first and lexical (dockerd's order is Go map order).
//! Skipped paths (the runtime's mountpoints) are left out with what is below them, and do
//! not make their parent look modified.

use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use super::changes::{same_time, Change, ADDED, DELETED, MODIFIED};
use super::ArchiveError;

/// The changes of tree `new` over tree `old` (`None`: an empty image, all is added).
pub fn tree_changes(
    new: &Path,
    old: Option<&Path>,
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<Change>, ArchiveError> {
    let mut w = TreeWalk {
        new,
        old: old.unwrap_or(new),
        skip,
        out: Vec::new(),
    };
    w.dir("", old.is_some(), true)?;
    Ok(w.out)
}

struct TreeWalk<'a> {
    new: &'a Path,
    old: &'a Path,
    skip: &'a dyn Fn(&str) -> bool,
    out: Vec<Change>,
}

fn host(base: &Path, path: &str) -> std::path::PathBuf {
    base.join(path.trim_start_matches('/'))
}

fn names(dir: &Path) -> Result<Vec<std::ffi::OsString>, ArchiveError> {
    let rd = std::fs::read_dir(dir).map_err(|e| ArchiveError::io("read", dir, e))?;
    Ok(rd.filter_map(|e| e.ok().map(|e| e.file_name())).collect())
}

fn lstat(path: &Path) -> Result<Option<std::fs::Metadata>, ArchiveError> {
    match std::fs::symlink_metadata(path) {
        Ok(m) => Ok(Some(m)),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(ArchiveError::io("lstat", path, e)),
    }
}

/// moby's `statDifferent` plus its file-capability comparison.
fn different(old: &std::fs::Metadata, new: &std::fs::Metadata, op: &Path, np: &Path) -> bool {
    if old.mode() != new.mode()
        || old.uid() != new.uid()
        || old.gid() != new.gid()
        || old.rdev() != new.rdev()
    {
        return true;
    }
    if !new.is_dir() && (!same_time(old, new) || old.size() != new.size()) {
        return true;
    }
    let caps = |p: &Path| xattr::get(p, "security.capability").ok().flatten();
    !new.file_type().is_symlink() && caps(op) != caps(np)
}

impl TreeWalk<'_> {
    /// Compares directory `dir` of the new tree with the same path in the old one
    /// (`old_is_dir`: it exists there as a directory); `reported`: `dir` itself is already
    /// in the output.
    fn dir(&mut self, dir: &str, old_is_dir: bool, reported: bool) -> Result<(), ArchiveError> {
        let start = self.out.len();
        let mut all = names(&host(self.new, dir))?;
        if old_is_dir {
            all.extend(names(&host(self.old, dir))?);
        }
        all.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        all.dedup();
        for n in all {
            let path = format!("{dir}/{}", n.to_string_lossy());
            if (self.skip)(&path) {
                continue;
            }
            let (np, op) = (host(self.new, &path), host(self.old, &path));
            let new = lstat(&np)?;
            let old = if old_is_dir { lstat(&op)? } else { None };
            match (new, old) {
                (Some(n), None) => {
                    self.push(&path, ADDED);
                    if n.is_dir() {
                        self.dir(&path, false, true)?;
                    }
                }
                (Some(n), Some(o)) => {
                    let changed = different(&o, &n, &op, &np);
                    if changed {
                        self.push(&path, MODIFIED);
                    }
                    if n.is_dir() {
                        self.dir(&path, o.is_dir(), changed)?;
                    }
                }
                (None, Some(_)) => self.push(&path, DELETED),
                (None, None) => {}
            }
        }
        if self.out.len() > start && !reported && !dir.is_empty() {
            self.out.insert(
                start,
                Change {
                    path: dir.to_string(),
                    kind: MODIFIED,
                },
            );
        }
        Ok(())
    }

    fn push(&mut self, path: &str, kind: u8) {
        self.out.push(Change {
            path: path.to_string(),
            kind,
        });
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    fn kinds(out: &[Change]) -> Vec<(String, u8)> {
        out.iter().map(|c| (c.path.clone(), c.kind)).collect()
    }

    #[test]
    fn adds_changes_deletes_and_metadata_as_dockerds_naive_diff() {
        let d = tempfile::tempdir().unwrap();
        let (old, new) = (d.path().join("old"), d.path().join("new"));
        for t in [&old, &new] {
            std::fs::create_dir_all(t.join("etc/deep")).unwrap();
            std::fs::create_dir_all(t.join("bin")).unwrap();
            std::fs::create_dir_all(t.join("dev")).unwrap();
            std::fs::write(t.join("etc/passwd"), "root\n").unwrap();
            std::fs::write(t.join("etc/deep/conf"), "a").unwrap();
            std::fs::write(t.join("bin/tool"), "x").unwrap();
            std::fs::write(t.join("bin/gone"), "x").unwrap();
        }
        // Same content and times everywhere first: a copy, as the snapshotter makes one.
        let set_times = |p: &Path| {
            let f = std::fs::File::options().write(true).open(p).unwrap();
            f.set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(1000))
                .unwrap();
        };
        for t in [&old, &new] {
            for f in ["etc/passwd", "etc/deep/conf", "bin/tool", "bin/gone"] {
                set_times(&t.join(f));
            }
        }
        std::fs::write(new.join("etc/deep/conf"), "bb").unwrap();
        std::fs::set_permissions(new.join("bin/tool"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::fs::remove_file(new.join("bin/gone")).unwrap();
        std::fs::create_dir_all(new.join("new/sub")).unwrap();
        std::fs::write(new.join("new/sub/f"), "").unwrap();
        std::fs::write(new.join("dev/null"), "").unwrap();
        let out = tree_changes(&new, Some(&old), &|p| p == "/dev").unwrap();
        assert_eq!(
            kinds(&out),
            vec![
                ("/bin".into(), MODIFIED),
                ("/bin/gone".into(), DELETED),
                ("/bin/tool".into(), MODIFIED),
                ("/etc".into(), MODIFIED),
                ("/etc/deep".into(), MODIFIED),
                ("/etc/deep/conf".into(), MODIFIED),
                ("/new".into(), ADDED),
                ("/new/sub".into(), ADDED),
                ("/new/sub/f".into(), ADDED),
            ]
        );
        assert!(tree_changes(&old, Some(&old), &|_| false)
            .unwrap()
            .is_empty());
        let all = tree_changes(&old, None, &|_| false).unwrap();
        assert!(all.iter().all(|c| c.kind == ADDED) && all.len() == 8);
    }
}
