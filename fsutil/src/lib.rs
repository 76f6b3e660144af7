//! Durable writes (invariant 3 of DESIGN.md): a state change that must survive a crash or
//! a power loss is on disk, with its directory entry, before the caller hears "ok".
//!
//! Errors are plain `std::io::Error`s; callers add the path and the action in their own
//! error enum. fsync(2), NOTES: "calling fsync() does not necessarily ensure that the
//! entry in the directory containing the file has also reached disk. For that an
//! explicit fsync() on a file descriptor for the directory is also needed."

#![forbid(unsafe_code)]

#[cfg(feature = "zstd")]
pub mod zstd;

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

/// The directory holding `path` (`.` for a bare file name).
fn parent_of(path: &Path) -> &Path {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    }
}

/// Makes the entries of `dir` (files created, renamed or removed in it) durable.
pub fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// [`write_atomic_mode`] with mode 0644.
pub fn write_atomic(path: &Path, data: &[u8]) -> io::Result<()> {
    write_atomic_mode(path, data, 0o644)
}

/// Replaces `path` with `data` so that a crash leaves the old content or the new one,
/// never a torn file, and the new one is durable on return: a temp file in the same
/// directory (`.<name>.tmp-<pid>-<n>`, created with `mode` minus the umask), fsync,
/// rename over `path`, fsync of the directory. On failure the temp file is removed.
pub fn write_atomic_mode(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    replace(path, data, mode, true)
}

/// Like [`write_atomic`] without the two fsyncs: a reader never sees a torn file, even
/// if the writer is killed, but a power loss may take the change back. For files whose
/// meaning dies with the machine's processes anyway (a daemon's pid or socket path under
/// a runtime-state dir), where two fsyncs per write would only add latency.
pub fn write_atomic_nosync(path: &Path, data: &[u8]) -> io::Result<()> {
    replace(path, data, 0o644, false)
}

fn replace(path: &Path, data: &[u8], mode: u32, durable: bool) -> io::Result<()> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = parent_of(path);
    let name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "path has no file name"))?;
    // pid + counter: concurrent writers of one path (several processes, or threads)
    // never share a temp file.
    let tmp = dir.join(format!(
        ".{}.tmp-{}-{}",
        name.to_string_lossy(),
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        file.write_all(data)?;
        if durable {
            file.sync_all()?;
        }
        drop(file);
        std::fs::rename(&tmp, path)
    })();
    if let Err(e) = result {
        let _ = std::fs::remove_file(&tmp);
        return Err(e);
    }
    if durable {
        fsync_dir(dir)?;
    }
    Ok(())
}

/// Writes a new file and makes its content durable (not its directory entry: the caller
/// fsyncs the directory once after writing several files, see [`fsync_dir`]). Fails if
/// `path` exists.
pub fn write_new_synced(path: &Path, data: &[u8], mode: u32) -> io::Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)?;
    file.write_all(data)?;
    file.sync_all()
}

/// Creates `path` and any missing ancestors like `create_dir_all`, and makes every new
/// entry durable: fsyncs the parent of each directory it created, deepest first, so a
/// power loss cannot make a directory vanish along with files already fsynced in it.
/// Returns the directories it fsynced: none when `path` already existed, so the common
/// case costs no fsync. A directory a concurrent caller created is that caller's to sync.
pub fn create_dir_durable(path: &Path) -> io::Result<Vec<PathBuf>> {
    let mut missing = Vec::new();
    let mut cur = path;
    while !cur.as_os_str().is_empty() && !cur.is_dir() {
        missing.push(cur.to_path_buf());
        match cur.parent() {
            Some(p) => cur = p,
            None => break,
        }
    }
    let mut created = Vec::new();
    for dir in missing.into_iter().rev() {
        match std::fs::create_dir(&dir) {
            Ok(()) => created.push(dir),
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists && dir.is_dir() => {}
            Err(e) => return Err(e),
        }
    }
    let mut synced = Vec::new();
    for dir in created.iter().rev() {
        let parent = parent_of(dir);
        fsync_dir(parent)?;
        synced.push(parent.to_path_buf());
    }
    Ok(synced)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    fn names(dir: &Path) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    #[test]
    fn write_atomic_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("state.json");
        write_atomic(&path, b"old").unwrap();
        write_atomic(&path, b"new").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"new");
        assert_eq!(names(dir.path()), ["state.json"]);
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & !0o644, 0, "mode {mode:o}");
        write_atomic_mode(&path, b"x", 0o600).unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode, 0o600);
    }

    #[test]
    fn write_atomic_nosync_replaces_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("shim.pid");
        write_atomic_nosync(&path, b"1").unwrap();
        write_atomic_nosync(&path, b"22").unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"22");
        assert_eq!(names(dir.path()), ["shim.pid"]);
        assert!(write_atomic_nosync(&dir.path().join("missing/file"), b"x").is_err());
        assert_eq!(names(dir.path()), ["shim.pid"]);
    }

    #[test]
    fn write_atomic_failure_keeps_the_old_file_and_removes_the_temp() {
        let dir = tempfile::tempdir().unwrap();
        // Renaming a file over a directory fails after the temp file was written.
        let path = dir.path().join("taken");
        std::fs::create_dir(&path).unwrap();
        std::fs::write(path.join("inside"), b"keep").unwrap();
        assert!(write_atomic(&path, b"data").is_err());
        assert_eq!(names(dir.path()), ["taken"]);
        assert!(write_atomic(&dir.path().join("missing/file"), b"x").is_err());
        assert!(write_atomic(Path::new("/"), b"x").is_err(), "no file name");
    }

    #[test]
    fn write_new_synced_refuses_an_existing_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("config.json");
        write_new_synced(&path, b"{}", 0o600).unwrap();
        assert_eq!(std::fs::read(&path).unwrap(), b"{}");
        let err = write_new_synced(&path, b"[]", 0o600).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::AlreadyExists);
        fsync_dir(dir.path()).unwrap();
        assert!(fsync_dir(&dir.path().join("nope")).is_err());
    }

    #[test]
    fn create_dir_durable_syncs_the_parent_of_each_new_dir() {
        let dir = tempfile::tempdir().unwrap();
        let deep = dir.path().join("a/b/c");
        assert_eq!(
            create_dir_durable(&deep).unwrap(),
            vec![
                dir.path().join("a/b"),
                dir.path().join("a"),
                dir.path().to_path_buf()
            ]
        );
        assert!(deep.is_dir());
        assert!(create_dir_durable(&deep).unwrap().is_empty());
        assert_eq!(
            create_dir_durable(&deep.join("d")).unwrap(),
            vec![deep.clone()]
        );
        std::fs::write(dir.path().join("file"), b"").unwrap();
        assert!(create_dir_durable(&dir.path().join("file/x")).is_err());
    }
}
