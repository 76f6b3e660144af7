//! Resolving a container path inside the rootfs without letting symlinks escape it
//! (the filepath-securejoin idea runc uses): every symlink is resolved by hand, with
//! absolute targets re-rooted at the rootfs and ".." clamped at the rootfs.

use std::path::{Component, Path, PathBuf};

use super::RootfsError;

const MAX_SYMLINKS: usize = 255;

/// `root` + `unsafe_path`, resolved so the result is always below `root`. Components that
/// do not exist yet are appended literally.
pub fn secure_join(root: &Path, unsafe_path: &Path) -> Result<PathBuf, RootfsError> {
    let mut pending: Vec<PathBuf> = vec![unsafe_path.to_path_buf()];
    let mut resolved: Vec<std::ffi::OsString> = Vec::new();
    let mut links = 0;
    while let Some(path) = pending.pop() {
        let mut comps: Vec<Component> = path.components().collect();
        comps.reverse();
        while let Some(comp) = comps.pop() {
            match comp {
                Component::RootDir | Component::Prefix(_) => resolved.clear(),
                Component::CurDir => {}
                Component::ParentDir => {
                    resolved.pop();
                }
                Component::Normal(name) => {
                    let mut candidate = root.to_path_buf();
                    candidate.extend(&resolved);
                    candidate.push(name);
                    match std::fs::read_link(&candidate) {
                        Ok(target) => {
                            links += 1;
                            if links > MAX_SYMLINKS {
                                return Err(RootfsError::SymlinkLoop {
                                    path: unsafe_path.to_path_buf(),
                                });
                            }
                            // Resolve the target first, then what remained of this path.
                            let rest: PathBuf = comps.iter().rev().collect();
                            pending.push(rest);
                            pending.push(target);
                            comps.clear();
                        }
                        Err(_) => resolved.push(name.to_os_string()),
                    }
                }
            }
        }
    }
    let mut out = root.to_path_buf();
    out.extend(&resolved);
    Ok(out)
}

/// Go's `filepath.Clean` for a container path, made absolute: "." and empty components
/// go, ".." removes the component before it and stays at "/" at the top. runc cleans
/// every mount destination this way before resolving it, so `/missing/../x` is `/x`
/// (lexically, whether or not `/missing` exists or is a symlink).
pub fn clean(path: &Path) -> PathBuf {
    let mut out: Vec<&std::ffi::OsStr> = Vec::new();
    for comp in path.components() {
        match comp {
            Component::Normal(name) => out.push(name),
            Component::ParentDir => {
                out.pop();
            }
            Component::RootDir | Component::CurDir | Component::Prefix(_) => {}
        }
    }
    let mut clean = PathBuf::from("/");
    clean.extend(out);
    clean
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn clean_is_lexical_like_go() {
        for (input, want) in [
            ("/missing/../x", "/x"),
            ("/a/./b//c/", "/a/b/c"),
            ("/../../x", "/x"),
            ("/a/b/../../..", "/"),
            ("/", "/"),
            ("a/../../b", "/b"),
        ] {
            assert_eq!(clean(Path::new(input)), Path::new(want), "{input}");
        }
    }
    use std::os::unix::fs::symlink;

    #[test]
    fn symlinks_stay_inside_root() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::create_dir_all(root.join("real/dir")).unwrap();
        symlink("/real", root.join("abs")).unwrap();
        symlink("../../../../etc", root.join("real/up")).unwrap();
        assert_eq!(
            secure_join(root, Path::new("/abs/dir/x")).unwrap(),
            root.join("real/dir/x")
        );
        assert_eq!(
            secure_join(root, Path::new("/real/up/passwd")).unwrap(),
            root.join("etc/passwd")
        );
        assert_eq!(
            secure_join(root, Path::new("/../../x")).unwrap(),
            root.join("x")
        );
    }

    #[test]
    fn symlink_loop_is_an_error() {
        let tmp = tempfile::tempdir().unwrap();
        symlink("b", tmp.path().join("a")).unwrap();
        symlink("a", tmp.path().join("b")).unwrap();
        assert!(matches!(
            secure_join(tmp.path(), Path::new("/a/x")),
            Err(RootfsError::SymlinkLoop { .. })
        ));
    }
}
