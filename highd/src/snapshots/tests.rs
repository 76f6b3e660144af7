use super::*;
use nix::mount::{mount, umount2, MntFlags, MsFlags};

fn is_root() -> bool {
    let root = nix::unistd::geteuid().is_root();
    if !root {
        eprintln!("SKIP: this test needs root (mounts)");
    }
    root
}

fn open(mode: Mode) -> anyhow::Result<(tempfile::TempDir, Snapshotter)> {
    let dir = tempfile::tempdir()?;
    let db = Db::open(dir.path())?;
    let s = Snapshotter::open(dir.path(), db, Some(mode))?;
    Ok((dir, s))
}

/// Mounts `mounts` at `target` like the shim does, and unmounts on drop.
struct Mounted(PathBuf);

impl Mounted {
    fn new(mounts: &[Mount], target: &Path) -> anyhow::Result<Mounted> {
        std::fs::create_dir_all(target)?;
        let [m] = mounts else {
            anyhow::bail!("expected one mount, got {mounts:?}");
        };
        let ro = m.options.iter().any(|o| o == "ro");
        if m.kind == "bind" {
            mount(
                Some(m.source.as_str()),
                target,
                None::<&str>,
                MsFlags::MS_BIND | MsFlags::MS_REC,
                None::<&str>,
            )?;
            let guard = Mounted(target.to_path_buf());
            if ro {
                let flags = MsFlags::MS_BIND | MsFlags::MS_REMOUNT | MsFlags::MS_RDONLY;
                mount(None::<&str>, target, None::<&str>, flags, None::<&str>)?;
            }
            return Ok(guard);
        }
        let data = m
            .options
            .iter()
            .filter(|o| *o != "ro")
            .cloned()
            .collect::<Vec<_>>()
            .join(",");
        let flags = if ro {
            MsFlags::MS_RDONLY
        } else {
            MsFlags::empty()
        };
        mount(
            Some("overlay"),
            target,
            Some("overlay"),
            flags,
            Some(data.as_str()),
        )?;
        Ok(Mounted(target.to_path_buf()))
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(e) = umount2(&self.0, MntFlags::MNT_DETACH) {
            eprintln!("unmount {}: {e}", self.0.display());
        }
    }
}

fn fs(s: &Snapshotter, ns: &str, key: &str) -> anyhow::Result<PathBuf> {
    Ok(s.fs_path(s.record(ns, key)?.id))
}

#[test]
fn mounts_match_containerd_overlayfs() -> anyhow::Result<()> {
    let (dir, s) = open(Mode::Overlay { index_off: true })?;
    let root = dir.path().join("snapshots/overlayfs");
    let p = |id: u64, d: &str| root.join(id.to_string()).join(d).display().to_string();
    let m = s.prepare("ns", "a", "", BTreeMap::new())?;
    assert_eq!(m[0].kind, "bind");
    assert_eq!(m[0].source, p(1, "fs"));
    assert_eq!(m[0].options, ["rw", "rbind"]);
    s.commit("ns", "l1", "a", BTreeMap::new())?;
    let m = s.prepare("ns", "b", "l1", BTreeMap::new())?;
    assert_eq!(m[0].kind, "overlay");
    assert_eq!(m[0].source, "overlay");
    let want = [
        "index=off".to_string(),
        format!("workdir={}", p(2, "work")),
        format!("upperdir={}", p(2, "fs")),
        format!("lowerdir={}", p(1, "fs")),
    ];
    assert_eq!(m[0].options, want);
    // A view of one layer is a read-only bind of that layer.
    let m = s.view("ns", "v1", "l1", BTreeMap::new())?;
    assert_eq!(
        (m[0].kind.as_str(), m[0].source.clone()),
        ("bind", p(1, "fs"))
    );
    assert_eq!(m[0].options, ["ro", "rbind"]);
    s.commit("ns", "l2", "b", BTreeMap::new())?;
    let m = s.view("ns", "v2", "l2", BTreeMap::new())?;
    let lower = format!("lowerdir={}:{}", p(2, "fs"), p(1, "fs"));
    assert_eq!(m[0].options, ["index=off".to_string(), lower]);
    // A view with no parent is its own (empty) directory, read-only.
    let m = s.view("ns", "empty", "", BTreeMap::new())?;
    assert_eq!(m[0].options, ["ro", "rbind"]);
    Ok(())
}

#[test]
fn containerd_errors_for_keys_parents_and_children() -> anyhow::Result<()> {
    let (_dir, s) = open(Mode::Overlay { index_off: false })?;
    let none = BTreeMap::new;
    s.prepare("ns", "a", "", none())?;
    let code = |r: Result<Vec<Mount>, StoreError>| r.map(|_| ()).map_err(|e| e.code());
    assert_eq!(
        code(s.prepare("ns", "a", "", none())),
        Err(tonic::Code::AlreadyExists)
    );
    assert_eq!(
        code(s.prepare("ns", "b", "a", none())),
        Err(tonic::Code::NotFound)
    );
    assert_eq!(
        code(s.prepare("ns", "b", "nope", none())),
        Err(tonic::Code::NotFound)
    );
    s.commit("ns", "base", "a", [("x".into(), "y".into())].into())?;
    assert_eq!(
        s.stat("ns", "a").map_err(|e| e.code()),
        Err(tonic::Code::NotFound)
    );
    let info = s.stat("ns", "base")?;
    assert_eq!((info.kind, info.labels.len()), (Kind::Committed, 1));
    let err = s
        .commit("ns", "again", "base", none())
        .map_err(|e| e.code());
    assert_eq!(err, Err(tonic::Code::FailedPrecondition));
    s.prepare("ns", "child", "base", none())?;
    assert_eq!(s.stat("ns", "child")?.parent, "base");
    // Namespaces do not see each other's snapshots.
    assert_eq!(
        code(s.prepare("other", "c", "base", none())),
        Err(tonic::Code::NotFound)
    );
    let err = s.remove("ns", "base").map_err(|e| e.code());
    assert_eq!(err, Err(tonic::Code::FailedPrecondition));
    let committed = Filter::parse(&["kind==committed".into()])?;
    assert_eq!(s.list("ns", &committed)?.len(), 1);
    let child_dir = fs(&s, "ns", "child")?;
    s.remove("ns", "child")?;
    assert!(!child_dir.exists());
    s.remove("ns", "base")?;
    assert!(s.list("ns", &Filter::default())?.is_empty());
    Ok(())
}

#[test]
fn labels_usage_and_orphan_cleanup() -> anyhow::Result<()> {
    let (dir, s) = open(Mode::Overlay { index_off: false })?;
    s.prepare("ns", "a", "", BTreeMap::new())?;
    std::fs::write(fs(&s, "ns", "a")?.join("f"), vec![7u8; 10000])?;
    let u = s.usage("ns", "a")?;
    assert!(u.size >= 10000 && u.inodes == 2, "{u:?}");
    let mut info = s.stat("ns", "a")?;
    info.labels.insert("k".into(), "v".into());
    assert_eq!(s.update("ns", &info, &[])?.labels.len(), 1);
    assert!(s.update("ns", &info, &["parent".into()]).is_err());
    let root = dir.path().join("snapshots/overlayfs");
    std::fs::create_dir_all(root.join("99/fs"))?;
    std::fs::create_dir_all(root.join("trash-5/fs"))?;
    let s = Snapshotter::open(dir.path(), s.db.clone(), Some(s.mode))?;
    assert!(!root.join("99").exists() && !root.join("trash-5").exists());
    assert!(fs(&s, "ns", "a")?.join("f").exists());
    Ok(())
}

#[test]
fn overlay_chain_mounts_for_real() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let dir = tempfile::tempdir()?;
    let s = Snapshotter::open(dir.path(), Db::open(dir.path())?, None)?;
    if s.mode() == Mode::Copy {
        eprintln!("SKIP: overlayfs not usable on this filesystem");
        return Ok(());
    }
    s.prepare("ns", "l1-a", "", BTreeMap::new())?;
    std::fs::write(fs(&s, "ns", "l1-a")?.join("one"), "1")?;
    s.commit("ns", "l1", "l1-a", BTreeMap::new())?;
    let target = dir.path().join("mnt");
    let m = s.prepare("ns", "ctr", "l1", BTreeMap::new())?;
    {
        let _mounted = Mounted::new(&m, &target)?;
        assert_eq!(std::fs::read_to_string(target.join("one"))?, "1");
        std::fs::write(target.join("two"), "2")?;
    }
    // The write landed in the active snapshot's upper dir, not in the parent.
    assert!(fs(&s, "ns", "ctr")?.join("two").exists());
    assert!(!fs(&s, "ns", "l1")?.join("two").exists());
    s.commit("ns", "l2", "ctr", BTreeMap::new())?;
    let m = s.view("ns", "v", "l2", BTreeMap::new())?;
    {
        let _mounted = Mounted::new(&m, &target)?;
        assert_eq!(std::fs::read_to_string(target.join("two"))?, "2");
        assert!(
            std::fs::write(target.join("three"), "3").is_err(),
            "view must be read-only"
        );
    }
    Ok(())
}

#[test]
fn copying_snapshotter_copies_parents() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    let (dir, s) = open(Mode::Copy)?;
    s.prepare("ns", "a", "", BTreeMap::new())?;
    let a = fs(&s, "ns", "a")?;
    std::fs::create_dir(a.join("d"))?;
    std::fs::write(a.join("d/f"), "data")?;
    std::fs::hard_link(a.join("d/f"), a.join("hl"))?;
    std::os::unix::fs::symlink("/nonexistent", a.join("link"))?;
    lchown(&a.join("d/f"), 1000, 1000)?;
    s.commit("ns", "base", "a", BTreeMap::new())?;
    let m = s.prepare("ns", "b", "base", BTreeMap::new())?;
    assert_eq!(m[0].kind, "bind");
    let b = fs(&s, "ns", "b")?;
    assert_eq!(m[0].source, b.display().to_string());
    use std::os::unix::fs::MetadataExt;
    let f = std::fs::metadata(b.join("d/f"))?;
    assert_eq!((f.uid(), f.nlink()), (1000, 2));
    assert_eq!(
        std::fs::read_link(b.join("link"))?,
        Path::new("/nonexistent")
    );
    let target = dir.path().join("mnt");
    let _mounted = Mounted::new(&m, &target)?;
    assert_eq!(std::fs::read_to_string(target.join("d/f"))?, "data");
    Ok(())
}

#[test]
fn overlay_snapshots_are_not_reinterpreted_as_copies() -> anyhow::Result<()> {
    if !is_root() {
        return Ok(());
    }
    // A root on overlayfs cannot hold overlay upper dirs: the probe picks copying there.
    let dir = tempfile::tempdir()?;
    for d in ["lower", "upper", "work", "merged"] {
        std::fs::create_dir(dir.path().join(d))?;
    }
    let p = |d: &str| dir.path().join(d).display().to_string();
    let data = format!(
        "lowerdir={},upperdir={},workdir={}",
        p("lower"),
        p("upper"),
        p("work")
    );
    let merged = dir.path().join("merged");
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(data.as_str()),
    )?;
    let _unmount = Mounted(merged.clone());
    let db = Db::open(&dir.path().join("db"))?;
    let s = Snapshotter::open(&merged, db.clone(), None)?;
    assert_eq!(s.mode(), Mode::Copy);
    // Snapshots made with overlayfs elsewhere (a moved root, a changed kernel) are refused.
    db.update(|tx| tx.put(META, "", "mode", &"overlay"))?;
    s.prepare("ns", "a", "", BTreeMap::new())?;
    let err = Snapshotter::open(&merged, db.clone(), None)
        .map(|_| ())
        .map_err(|e| e.code());
    assert_eq!(err, Err(tonic::Code::FailedPrecondition));
    Ok(())
}

#[test]
fn a_leased_prepare_commits_snapshot_and_lease_entry_together() -> anyhow::Result<()> {
    let (dir, s) = open(Mode::Copy)?;
    crate::leases::create(&s.db, "ns", "l1", BTreeMap::new())?;
    s.prepare_leased("ns", "a", "", BTreeMap::new(), Some("l1"))?;
    let held = crate::leases::resources(&s.db, "ns", "l1")?;
    assert_eq!(
        held,
        vec![crate::leases::Resource {
            id: "a".into(),
            kind: format!("snapshots/{SNAPSHOTTER}"),
        }]
    );
    // A lease that is gone fails the whole prepare: no record, no directory.
    let err = s
        .view_leased("ns", "v", "", BTreeMap::new(), Some("gone"))
        .unwrap_err();
    assert!(err.to_string().contains("gone"), "{err}");
    assert!(s.stat("ns", "v").is_err());
    let root = dir.path().join("snapshots/overlayfs");
    let dirs: Vec<String> = std::fs::read_dir(&root)?
        .map(|e| e.map(|e| e.file_name().to_string_lossy().into_owned()))
        .collect::<Result<_, _>>()?;
    let ids = dirs
        .iter()
        .filter(|d| d.bytes().all(|b| b.is_ascii_digit()));
    assert_eq!(ids.count(), 1, "{dirs:?}");
    // Ids reserved without a flush still count up across commits.
    s.prepare("ns", "b", "", BTreeMap::new())?;
    assert_ne!(fs(&s, "ns", "a")?, fs(&s, "ns", "b")?);
    Ok(())
}
