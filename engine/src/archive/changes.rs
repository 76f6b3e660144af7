//! `docker diff`: the changes of a container's overlay upper dir against its image
//! layers, reported as dockerd 20.10's overlay2 (tree comparison) reports them: an
//! entry present below is modified (directories only when their size, mode or mtime
//! differ), whiteouts (0:0 char devices) are deletions, an opaque directory over one
//! below is modified with what it hides deleted, and the parent of an addition or
//! deletion is reported as modified once (moby's `OverlayChanges` rule). dockerd's order
//! is Go map order; here it is depth first and lexical.
//! Skipped paths (the runtime's mountpoints) are left out, and do not make their parent
//! directory look modified.

use std::collections::HashSet;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use serde::Serialize;

use super::ArchiveError;

pub const MODIFIED: u8 = 0;
pub const ADDED: u8 = 1;
pub const DELETED: u8 = 2;

/// dockerd's `container.FilesystemChange`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct Change {
    pub path: String,
    pub kind: u8,
}

/// The changes in `upper` over `lowers` (nearest first); paths for which `skip` is true
/// are left out with everything below them.
pub fn changes(
    upper: &Path,
    lowers: &[PathBuf],
    skip: &dyn Fn(&str) -> bool,
) -> Result<Vec<Change>, ArchiveError> {
    let mut w = Walk {
        upper,
        lowers,
        skip,
        out: Vec::new(),
        changed_dirs: HashSet::new(),
    };
    w.dir("")?;
    Ok(w.out)
}

struct Walk<'a> {
    upper: &'a Path,
    lowers: &'a [PathBuf],
    skip: &'a dyn Fn(&str) -> bool,
    out: Vec<Change>,
    changed_dirs: HashSet<String>,
}

fn host(base: &Path, path: &str) -> PathBuf {
    base.join(path.trim_start_matches('/'))
}

fn is_whiteout(m: &std::fs::Metadata) -> bool {
    m.file_type().is_char_device() && m.rdev() == 0
}

impl Walk<'_> {
    fn dir(&mut self, dir: &str) -> Result<(), ArchiveError> {
        let hdir = host(self.upper, dir);
        let mut names: Vec<(std::ffi::OsString, bool)> = std::fs::read_dir(&hdir)
            .map_err(|e| ArchiveError::io("read", &hdir, e))?
            .filter_map(|e| e.ok().map(|e| (e.file_name(), false)))
            .collect();
        // An opaque directory hides what the layers below had in it: those entries are
        // deletions, as dockerd's tree comparison reports them.
        if !dir.is_empty() && self.opaque_over_lower(dir, &hdir) {
            let mut hidden: Vec<std::ffi::OsString> = Vec::new();
            for layer in self.lowers {
                let Ok(rd) = std::fs::read_dir(host(layer, dir)) else {
                    continue;
                };
                for e in rd.filter_map(Result::ok) {
                    let whiteout = e.metadata().is_ok_and(|m| is_whiteout(&m));
                    let n = e.file_name();
                    if !whiteout && !names.iter().any(|(u, _)| *u == n) && !hidden.contains(&n) {
                        hidden.push(n);
                    }
                }
            }
            names.extend(hidden.into_iter().map(|n| (n, true)));
        }
        names.sort_by(|a, b| a.0.as_bytes().cmp(b.0.as_bytes()));
        for (n, hidden) in names {
            let path = format!("{dir}/{}", n.to_string_lossy());
            if (self.skip)(&path) {
                continue;
            }
            if hidden {
                self.record(path, DELETED);
                continue;
            }
            let hpath = host(self.upper, &path);
            let meta = match std::fs::symlink_metadata(&hpath) {
                Ok(m) => m,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ArchiveError::io("lstat", &hpath, e)),
            };
            if let Some(kind) = self.kind(&path, &hpath, &meta) {
                if meta.is_dir() {
                    self.changed_dirs.insert(path.clone());
                }
                self.record(path.clone(), kind);
            }
            if meta.is_dir() {
                self.dir(&path)?;
            }
        }
        Ok(())
    }

    /// Adds a change; an addition or deletion reports its parent as modified first.
    fn record(&mut self, path: String, kind: u8) {
        if kind != MODIFIED {
            let parent = match path.rfind('/') {
                Some(0) | None => "/".to_string(),
                Some(i) => path[..i].to_string(),
            };
            if parent != "/" && self.changed_dirs.insert(parent.clone()) {
                self.out.push(Change {
                    path: parent,
                    kind: MODIFIED,
                });
            }
        }
        self.out.push(Change { path, kind });
    }

    /// `None` for a directory that exists below unchanged.
    fn kind(&self, path: &str, hpath: &Path, meta: &std::fs::Metadata) -> Option<u8> {
        if is_whiteout(meta) {
            return Some(DELETED);
        }
        for layer in self.lowers {
            // Followed like moby's os.Stat.
            let Ok(below) = std::fs::metadata(host(layer, path)) else {
                continue;
            };
            if below.is_dir() && meta.is_dir() && below.mode() == meta.mode() {
                // A directory in the upper dir only for a runtime mountpoint (/etc for
                // /etc/hosts) got its mtime and size from making it, which dockerd does
                // in the init layer below: only its mode tells.
                let unchanged = (below.size() == meta.size() && same_time(&below, meta))
                    || self.only_skipped(path, hpath);
                if unchanged {
                    return None;
                }
            }
            return Some(MODIFIED);
        }
        Some(ADDED)
    }

    fn only_skipped(&self, path: &str, hpath: &Path) -> bool {
        let Ok(d) = std::fs::read_dir(hpath) else {
            return false;
        };
        let names: Vec<String> = d
            .filter_map(Result::ok)
            .map(|e| format!("{path}/{}", e.file_name().to_string_lossy()))
            .collect();
        !names.is_empty() && names.iter().all(|n| (self.skip)(n))
    }

    /// Whether `path` is an opaque directory over one that exists below.
    fn opaque_over_lower(&self, path: &str, hpath: &Path) -> bool {
        let opaque = xattr(hpath, "trusted.overlay.opaque");
        if opaque.as_deref() != Some(b"y") {
            return false;
        }
        self.lowers
            .iter()
            .any(|layer| std::fs::symlink_metadata(host(layer, path)).is_ok_and(|m| m.is_dir()))
    }
}

/// moby's `sameFsTime`: equal seconds, and equal nanoseconds unless one side has none.
pub(super) fn same_time(a: &std::fs::Metadata, b: &std::fs::Metadata) -> bool {
    a.mtime() == b.mtime()
        && (a.mtime_nsec() == b.mtime_nsec() || a.mtime_nsec() == 0 || b.mtime_nsec() == 0)
}

fn xattr(path: &Path, name: &str) -> Option<Vec<u8>> {
    xattr::get(path, name).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn adds_modifications_and_deletions_in_moby_order() {
        let dir = tempfile::tempdir().unwrap();
        let lower = dir.path().join("lower");
        let upper = dir.path().join("upper");
        for d in [&lower, &upper] {
            std::fs::create_dir_all(d.join("etc")).unwrap();
            std::fs::create_dir_all(d.join("usr")).unwrap();
        }
        std::fs::write(lower.join("etc/passwd"), "root").unwrap();
        std::fs::write(lower.join("etc/group"), "root").unwrap();
        std::fs::write(upper.join("etc/passwd"), "root2").unwrap();
        nix::sys::stat::mknod(
            &upper.join("etc/group"),
            nix::sys::stat::SFlag::S_IFCHR,
            nix::sys::stat::Mode::empty(),
            0,
        )
        .unwrap();
        std::fs::write(upper.join("new"), "").unwrap();
        // /usr removed and made again: opaque, hiding the lower usr/lib.
        std::fs::create_dir_all(lower.join("usr/lib")).unwrap();
        xattr::set(upper.join("usr"), "trusted.overlay.opaque", b"y").unwrap();
        std::fs::write(upper.join("usr/x"), "").unwrap();
        // Only a runtime mountpoint in it: not modified.
        std::fs::create_dir_all(lower.join("run")).unwrap();
        std::fs::create_dir_all(upper.join("run/proc")).unwrap();
        std::fs::create_dir_all(upper.join("proc")).unwrap();
        // Same dir metadata on both sides: not reported.
        let t = nix::sys::time::TimeSpec::new(1000, 0);
        for d in [&lower, &upper] {
            for sub in ["etc", "usr"] {
                nix::sys::stat::utimensat(
                    nix::fcntl::AT_FDCWD,
                    &d.join(sub),
                    &t,
                    &t,
                    nix::sys::stat::UtimensatFlags::NoFollowSymlink,
                )
                .unwrap();
            }
        }
        let got = changes(&upper, &[lower], &|p| p == "/proc" || p == "/run/proc").unwrap();
        let got: Vec<(&str, u8)> = got.iter().map(|c| (c.path.as_str(), c.kind)).collect();
        assert_eq!(
            got,
            [
                ("/etc", MODIFIED),
                ("/etc/group", DELETED),
                ("/etc/passwd", MODIFIED),
                ("/new", ADDED),
                ("/usr", MODIFIED),
                ("/usr/lib", DELETED),
                ("/usr/x", ADDED),
            ]
        );
    }
}
