//! Unprivileged tests of fd-based resolution: openat2 needs no privileges.

use std::os::fd::AsRawFd;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use super::*;

fn real_path(fd: &OwnedFd) -> PathBuf {
    std::fs::read_link(format!("/proc/self/fd/{}", fd.as_raw_fd())).unwrap()
}

fn setup() -> (tempfile::TempDir, PathBuf) {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("rootfs");
    std::fs::create_dir_all(root.join("real/dir")).unwrap();
    (tmp, root)
}

#[test]
fn symlinked_destinations_resolve_inside_the_root() {
    let (_tmp, root) = setup();
    symlink("/real", root.join("abs")).unwrap();
    symlink("../../../../../etc", root.join("real/up")).unwrap();
    let r = Root::new(&root).unwrap();
    let fd = r.create(Path::new("/abs/dir/x"), Kind::Dir).unwrap();
    assert_eq!(real_path(&fd), root.join("real/dir/x"));
    let fd = r.create(Path::new("/real/up/new/f"), Kind::File).unwrap();
    assert_eq!(real_path(&fd), root.join("etc/new/f"));
    assert!(root.join("etc/new/f").is_file());
    let fd = r.open(Path::new("/../../abs/../real/./dir")).unwrap();
    assert_eq!(real_path(&fd), root.join("real/dir"));
}

#[test]
fn dangling_and_escaping_symlinks_create_inside_the_root() {
    let (tmp, root) = setup();
    let outside = tmp.path().join("outside");
    // Absolute and ".."-relative targets that would leave the root on the host.
    symlink(&outside, root.join("dangle_abs")).unwrap();
    symlink(
        "../../../../..".to_string() + outside.to_str().unwrap(),
        root.join("dangle_up"),
    )
    .unwrap();
    let r = Root::new(&root).unwrap();
    let fd = r.create(Path::new("/dangle_abs/a"), Kind::Dir).unwrap();
    assert_eq!(
        real_path(&fd),
        root.join(outside.strip_prefix("/").unwrap()).join("a")
    );
    let fd = r.create(Path::new("/dangle_up/b"), Kind::File).unwrap();
    assert_eq!(
        real_path(&fd),
        root.join(outside.strip_prefix("/").unwrap()).join("b")
    );
    // A dangling final component is followed too, never replaced or escaped.
    symlink("/gone/file", root.join("last")).unwrap();
    let fd = r.create(Path::new("/last"), Kind::File).unwrap();
    assert_eq!(real_path(&fd), root.join("gone/file"));
    assert!(!outside.exists(), "created outside the rootfs");
}

#[test]
fn creating_below_a_missing_parent_dir_dot_dot_is_refused() {
    let (_tmp, root) = setup();
    let r = Root::new(&root).unwrap();
    let err = r.create(Path::new("/missing/../x"), Kind::Dir).unwrap_err();
    assert!(err.to_string().contains("/missing/../x"), "{err}");
    assert!(!root.join("missing").exists());
}

#[test]
fn symlink_loops_are_an_error() {
    let (_tmp, root) = setup();
    symlink("b", root.join("a")).unwrap();
    symlink("a", root.join("b")).unwrap();
    let r = Root::new(&root).unwrap();
    assert!(r.create(Path::new("/a/x"), Kind::Dir).is_err());
    assert!(r.open(Path::new("/a")).is_err());
}

#[test]
fn fallback_walk_matches_openat2_and_refuses_symlinks() {
    let (_tmp, root) = setup();
    symlink("/real", root.join("abs")).unwrap();
    let r = Root::new(&root).unwrap();
    let fd = open_nofollow_walk(&r, Path::new("/abs/dir")).unwrap();
    assert_eq!(real_path(&fd), root.join("real/dir"));
    assert_eq!(
        open_nofollow_walk(&r, Path::new("/abs/nope")).unwrap_err(),
        Errno::ENOENT
    );
}
