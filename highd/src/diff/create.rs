//! Diff.Diff: a layer tar of the changes between two directory trees.
//!
//! With overlayfs the changes are exactly the upper dir: 0:0 character devices become
//! `.wh.NAME` whiteouts and opaque directories `.wh..wh..opq`. For plain directories (the
//! copying snapshotter, or a snapshot without parent) the two trees are walked side by side:
//! entries that are new or differ in type, mode, owner, size, mtime, link target, device or
//! xattrs are added, entries gone from the upper tree become whiteouts.

use std::collections::{BTreeMap, HashMap};
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use super::resolve::is_whiteout;
use crate::db::StoreError;

/// One change in walk order (parents before children).
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Change {
    Add(PathBuf),
    Delete(PathBuf),
    Opaque(PathBuf),
}

fn sorted_entries(dir: &Path) -> Result<Vec<(String, std::fs::Metadata)>, StoreError> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).map_err(StoreError::io("read directory", dir))? {
        let e = e.map_err(StoreError::io("read directory", dir))?;
        let name = e.file_name().to_string_lossy().into_owned();
        let md = std::fs::symlink_metadata(e.path()).map_err(StoreError::io("stat", e.path()))?;
        out.push((name, md));
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(out)
}

/// The changes recorded in an overlay upper dir.
pub(crate) fn overlay_changes(upper: &Path) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    walk_upper(upper, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_upper(upper: &Path, rel: &Path, out: &mut Vec<Change>) -> Result<(), StoreError> {
    for (name, md) in sorted_entries(&upper.join(rel))? {
        let r = rel.join(&name);
        if is_whiteout(&md) {
            out.push(Change::Delete(r));
            continue;
        }
        out.push(Change::Add(r.clone()));
        if md.is_dir() {
            let opaque = xattr::get(upper.join(&r), "trusted.overlay.opaque")
                .map_err(StoreError::io("get xattr of", upper.join(&r)))?;
            if opaque.as_deref() == Some(b"y") {
                out.push(Change::Opaque(r.clone()));
            }
            walk_upper(upper, &r, out)?;
        }
    }
    Ok(())
}

fn xattrs(path: &Path) -> Result<BTreeMap<String, Vec<u8>>, StoreError> {
    let mut out = BTreeMap::new();
    let names = match xattr::list(path) {
        Ok(n) => n,
        Err(e) if e.raw_os_error() == Some(libc::EOPNOTSUPP) => return Ok(out),
        Err(e) => return Err(StoreError::io("list xattrs of", path)(e)),
    };
    for name in names {
        let name = name.to_string_lossy().into_owned();
        // Overlay's own bookkeeping is not part of the layer.
        if name.starts_with("trusted.overlay.") {
            continue;
        }
        if let Some(v) = xattr::get(path, &name).map_err(StoreError::io("get xattr of", path))? {
            out.insert(name, v);
        }
    }
    Ok(out)
}

fn same(
    a: &Path,
    am: &std::fs::Metadata,
    b: &Path,
    bm: &std::fs::Metadata,
) -> Result<bool, StoreError> {
    let ft = |m: &std::fs::Metadata| m.mode() & libc::S_IFMT;
    if ft(am) != ft(bm)
        || am.mode() != bm.mode()
        || (am.uid(), am.gid(), am.rdev()) != (bm.uid(), bm.gid(), bm.rdev())
        || (am.mtime(), am.mtime_nsec()) != (bm.mtime(), bm.mtime_nsec())
        || (!am.is_dir() && am.size() != bm.size())
        || xattrs(a)? != xattrs(b)?
    {
        return Ok(false);
    }
    if am.file_type().is_symlink() {
        let read = |p: &Path| std::fs::read_link(p).map_err(StoreError::io("read link", p));
        return Ok(read(a)? == read(b)?);
    }
    // Whole-second mtimes (e.g. from a tar) cannot tell a rewrite apart: compare bytes.
    if am.is_file() && am.mtime_nsec() == 0 {
        let read = |p: &Path| std::fs::read(p).map_err(StoreError::io("read", p));
        return Ok(read(a)? == read(b)?);
    }
    Ok(true)
}

/// The changes from `lower` (None: empty) to `upper`.
pub(crate) fn compare_changes(
    lower: Option<&Path>,
    upper: &Path,
) -> Result<Vec<Change>, StoreError> {
    let mut out = Vec::new();
    walk_compare(lower, upper, Path::new(""), &mut out)?;
    Ok(out)
}

fn walk_compare(
    lower: Option<&Path>,
    upper: &Path,
    rel: &Path,
    out: &mut Vec<Change>,
) -> Result<(), StoreError> {
    let ups = sorted_entries(&upper.join(rel))?;
    let lows: HashMap<String, std::fs::Metadata> = match lower {
        Some(l) if l.join(rel).is_dir() && !l.join(rel).is_symlink() => {
            sorted_entries(&l.join(rel))?.into_iter().collect()
        }
        _ => HashMap::new(),
    };
    for (name, um) in &ups {
        let r = rel.join(name);
        let unchanged = match (lower, lows.get(name)) {
            (Some(l), Some(lm)) => same(&l.join(&r), lm, &upper.join(&r), um)?,
            _ => false,
        };
        if !unchanged {
            out.push(Change::Add(r.clone()));
        }
        if um.is_dir() {
            let lower_dir = lows.get(name).filter(|m| m.is_dir()).and(lower);
            walk_compare(lower_dir, upper, &r, out)?;
        }
    }
    let mut gone: Vec<&String> = lows
        .keys()
        .filter(|n| !ups.iter().any(|(u, _)| u == *n))
        .collect();
    gone.sort();
    out.extend(gone.into_iter().map(|n| Change::Delete(rel.join(n))));
    Ok(())
}

/// One PAX record: "<len> <key>=<value>\n", where len counts the whole record.
fn pax_record(key: &str, value: &[u8]) -> Vec<u8> {
    let body = key.len() + value.len() + 3;
    let mut len = body + body.to_string().len();
    if len.to_string().len() != body.to_string().len() {
        len += 1;
    }
    let mut rec = format!("{len} {key}=").into_bytes();
    rec.extend_from_slice(value);
    rec.push(b'\n');
    rec
}

fn empty_file() -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(tar::EntryType::Regular);
    h.set_size(0);
    h.set_mode(0o644);
    h.set_mtime(0);
    // Every numeric field filled: some readers refuse empty ones.
    h.set_uid(0);
    h.set_gid(0);
    h
}

/// Writes `changes` of the tree at `root` as a tar stream to `out`.
pub(crate) fn write_tar(
    root: &Path,
    changes: &[Change],
    out: impl Write,
) -> Result<(), StoreError> {
    let tar_err = |source| StoreError::Io {
        op: "write layer tar",
        path: root.to_path_buf(),
        source,
    };
    let mut b = tar::Builder::new(out);
    let mut links: HashMap<(u64, u64), PathBuf> = HashMap::new();
    for c in changes {
        let (rel, md) = match c {
            Change::Delete(rel) | Change::Opaque(rel) => {
                let name = match c {
                    Change::Opaque(_) => rel.join(".wh..wh..opq"),
                    _ => rel.with_file_name(format!(
                        ".wh.{}",
                        rel.file_name()
                            .map(|n| n.to_string_lossy())
                            .unwrap_or_default()
                    )),
                };
                let mut h = empty_file();
                b.append_data(&mut h, &name, std::io::empty())
                    .map_err(tar_err)?;
                continue;
            }
            Change::Add(rel) => {
                let p = root.join(rel);
                (
                    rel,
                    std::fs::symlink_metadata(&p).map_err(StoreError::io("stat", &p))?,
                )
            }
        };
        let path = root.join(rel);
        let attrs = xattrs(&path)?;
        if !attrs.is_empty() {
            let mut data = Vec::new();
            for (k, v) in &attrs {
                data.extend(pax_record(&format!("SCHILY.xattr.{k}"), v));
            }
            let mut h = tar::Header::new_ustar();
            h.set_entry_type(tar::EntryType::XHeader);
            h.set_size(data.len() as u64);
            b.append_data(&mut h, "PaxHeaders/entry", data.as_slice())
                .map_err(tar_err)?;
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(md.mode() & 0o7777);
        h.set_uid(md.uid().into());
        h.set_gid(md.gid().into());
        h.set_mtime(u64::try_from(md.mtime()).unwrap_or(0));
        h.set_size(0);
        let ft = md.file_type();
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            b.append_data(&mut h, rel, std::io::empty())
                .map_err(tar_err)?;
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target = std::fs::read_link(&path).map_err(StoreError::io("read link", &path))?;
            b.append_link(&mut h, rel, target).map_err(tar_err)?;
        } else if ft.is_file() && md.nlink() > 1 && links.contains_key(&(md.dev(), md.ino())) {
            h.set_entry_type(tar::EntryType::Link);
            b.append_link(&mut h, rel, &links[&(md.dev(), md.ino())])
                .map_err(tar_err)?;
        } else if ft.is_file() {
            if md.nlink() > 1 {
                links.insert((md.dev(), md.ino()), rel.clone());
            }
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(md.size());
            let f = std::fs::File::open(&path).map_err(StoreError::io("open", &path))?;
            b.append_data(&mut h, rel, f).map_err(tar_err)?;
        } else if ft.is_socket() {
            // Sockets cannot be carried in a layer (as with docker and containerd).
            continue;
        } else {
            h.set_entry_type(if ft.is_char_device() {
                tar::EntryType::Char
            } else if ft.is_block_device() {
                tar::EntryType::Block
            } else {
                tar::EntryType::Fifo
            });
            let dev = md.rdev();
            let (major, minor) = (nix::sys::stat::major(dev), nix::sys::stat::minor(dev));
            h.set_device_major(u32::try_from(major).unwrap_or(0))
                .map_err(tar_err)?;
            h.set_device_minor(u32::try_from(minor).unwrap_or(0))
                .map_err(tar_err)?;
            b.append_data(&mut h, rel, std::io::empty())
                .map_err(tar_err)?;
        }
    }
    b.finish().map_err(tar_err)
}
