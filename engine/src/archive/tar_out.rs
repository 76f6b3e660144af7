//! Tars a tree the way dockerd's tarballer does for `docker cp` and `docker export`:
//! entries in lexical order, directories named with a trailing `/`, hard links kept as
//! links to the first name, sockets skipped, symlinks never followed. The bytes go to a
//! [`ChannelWriter`] so the response is streamed, never held in memory.

use std::collections::HashMap;
use std::fs::File;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::Path;

use bytes::Bytes;
use tokio::sync::mpsc;

use super::ArchiveError;

/// Pseudo filesystems whose contents are not the container's files (seen through
/// `/proc/<pid>/root` of a running container): their directories are archived empty.
const PSEUDO_FS: &[libc::__fsword_t] = &[
    0x9fa0,      // proc
    0x6265_6572, // sysfs
    0x0027_e0eb, // cgroup
    0x6367_7270, // cgroup2
    0x1cd1,      // devpts
    0x1980_0202, // mqueue
    0x7363_6673, // securityfs
    0x6462_6720, // debugfs
    0x7472_6163, // tracefs
];

/// A `Write` that hands 64 KiB chunks to an async response body.
pub struct ChannelWriter {
    tx: mpsc::Sender<Bytes>,
    buf: Vec<u8>,
}

const CHUNK: usize = 64 * 1024;

impl ChannelWriter {
    pub fn new(tx: mpsc::Sender<Bytes>) -> Self {
        Self {
            tx,
            buf: Vec::with_capacity(CHUNK),
        }
    }

    fn send(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        let chunk = Bytes::from(std::mem::replace(&mut self.buf, Vec::with_capacity(CHUNK)));
        self.tx
            .blocking_send(chunk)
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))
    }
}

impl Write for ChannelWriter {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(data);
        if self.buf.len() >= CHUNK {
            self.send()?;
        }
        Ok(data.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        self.send()
    }
}

/// Writes tar entries with names exactly as given (the `tar` crate's path helpers would
/// drop the `./` and `/` prefixes the CLI's rebasing relies on).
pub struct TarWriter<W: Write> {
    out: tar::Builder<W>,
    links: HashMap<(u64, u64), Vec<u8>>,
    /// Skip the contents of pseudo filesystems met below the start.
    skip_pseudo: bool,
}

impl<W: Write> TarWriter<W> {
    pub fn new(out: W, skip_pseudo: bool) -> Self {
        Self {
            out: tar::Builder::new(out),
            links: HashMap::new(),
            skip_pseudo,
        }
    }

    /// `docker cp`: the entry at `path` named `name` (a directory as `name/`, its
    /// children as `name/child`; `name` "/" gives `/` and `/child`).
    pub fn add_named(&mut self, path: &Path, name: &str) -> Result<(), ArchiveError> {
        let meta =
            std::fs::symlink_metadata(path).map_err(|e| ArchiveError::io("lstat", path, e))?;
        let prefix = if name == "/" { "" } else { name };
        self.entry(path, &meta, prefix.as_bytes(), true)
    }

    /// `docker export`: everything below `root`, named relative to it, without `root`
    /// itself.
    pub fn add_contents(&mut self, root: &Path) -> Result<(), ArchiveError> {
        let meta =
            std::fs::symlink_metadata(root).map_err(|e| ArchiveError::io("lstat", root, e))?;
        self.children(root, &meta, b"")
    }

    pub fn finish(self) -> Result<W, ArchiveError> {
        let mut w = self
            .out
            .into_inner()
            .map_err(|e| ArchiveError::io("write", "tar stream", e))?;
        w.flush()
            .map_err(|e| ArchiveError::io("write", "tar stream", e))?;
        Ok(w)
    }

    fn entry(
        &mut self,
        path: &Path,
        meta: &std::fs::Metadata,
        name: &[u8],
        top: bool,
    ) -> Result<(), ArchiveError> {
        let ft = meta.file_type();
        let kind = meta.mode() & libc::S_IFMT;
        if kind == libc::S_IFSOCK {
            return Ok(());
        }
        let mut h = tar::Header::new_gnu();
        h.set_mode(meta.mode() & 0o7777);
        h.set_uid(meta.uid().into());
        h.set_gid(meta.gid().into());
        h.set_mtime(meta.mtime().max(0) as u64);
        h.set_size(0);
        let mut link: Option<Vec<u8>> = None;
        let mut file: Option<File> = None;
        let mut entry_name = name.to_vec();
        if ft.is_dir() {
            h.set_entry_type(tar::EntryType::Directory);
            if !entry_name.ends_with(b"/") {
                entry_name.push(b'/');
            }
        } else if ft.is_symlink() {
            h.set_entry_type(tar::EntryType::Symlink);
            let target =
                std::fs::read_link(path).map_err(|e| ArchiveError::io("readlink", path, e))?;
            link = Some(target.as_os_str().as_bytes().to_vec());
        } else if let Some(first) = self.hard_link(meta, name) {
            h.set_entry_type(tar::EntryType::Link);
            link = Some(first);
        } else if ft.is_file() {
            h.set_entry_type(tar::EntryType::Regular);
            h.set_size(meta.size());
            // O_NOFOLLOW: a file swapped for a symlink since the lstat is not followed.
            file = Some(
                std::fs::OpenOptions::new()
                    .read(true)
                    .custom_flags(libc::O_NOFOLLOW)
                    .open(path)
                    .map_err(|e| ArchiveError::io("open", path, e))?,
            );
        } else {
            h.set_entry_type(match kind {
                libc::S_IFCHR => tar::EntryType::Char,
                libc::S_IFBLK => tar::EntryType::Block,
                _ => tar::EntryType::Fifo,
            });
            let rdev = meta.rdev();
            h.set_device_major(nix::sys::stat::major(rdev) as u32)
                .map_err(|e| ArchiveError::io("tar header", path, e))?;
            h.set_device_minor(nix::sys::stat::minor(rdev) as u32)
                .map_err(|e| ArchiveError::io("tar header", path, e))?;
        }
        let pax = super::xattrs::records_of(path);
        if !pax.is_empty() {
            self.pax_header(&entry_name, &pax)?;
        }
        self.long_field(&mut h, &entry_name, tar::EntryType::GNULongName)?;
        if let Some(l) = &link {
            self.long_field(&mut h, l, tar::EntryType::GNULongLink)?;
        }
        h.set_cksum();
        let size = h.size().unwrap_or(0);
        let write = |e| ArchiveError::io("write", "tar stream", e);
        match file {
            // Exactly `size` bytes even if the file changed since the stat.
            Some(f) => self
                .out
                .append(&h, f.take(size).chain(io::repeat(0)).take(size))
                .map_err(write)?,
            None => self.out.append(&h, io::empty()).map_err(write)?,
        }
        if ft.is_dir() && (top || !self.pseudo(path, meta)) {
            self.children(path, meta, &entry_name)?;
        }
        Ok(())
    }

    fn children(
        &mut self,
        dir: &Path,
        _meta: &std::fs::Metadata,
        prefix: &[u8],
    ) -> Result<(), ArchiveError> {
        let mut names: Vec<std::ffi::OsString> = std::fs::read_dir(dir)
            .map_err(|e| ArchiveError::io("read", dir, e))?
            .filter_map(|e| e.ok().map(|e| e.file_name()))
            .collect();
        names.sort_by(|a, b| a.as_bytes().cmp(b.as_bytes()));
        for n in names {
            let path = dir.join(&n);
            let meta = match std::fs::symlink_metadata(&path) {
                Ok(m) => m,
                // Gone since the listing (a running container deleting files).
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(ArchiveError::io("lstat", &path, e)),
            };
            let mut name = prefix.to_vec();
            if !name.is_empty() && !name.ends_with(b"/") {
                name.push(b'/');
            }
            name.extend_from_slice(n.as_bytes());
            self.entry(&path, &meta, &name, false)?;
        }
        Ok(())
    }

    /// The first name of an inode with more than one link, if it was archived already.
    fn hard_link(&mut self, meta: &std::fs::Metadata, name: &[u8]) -> Option<Vec<u8>> {
        if meta.is_dir() || meta.nlink() < 2 {
            return None;
        }
        let key = (meta.dev(), meta.ino());
        if let Some(first) = self.links.get(&key) {
            return Some(first.clone());
        }
        self.links.insert(key, name.to_vec());
        None
    }

    fn pseudo(&self, path: &Path, meta: &std::fs::Metadata) -> bool {
        if !self.skip_pseudo {
            return false;
        }
        let parent_dev = path
            .parent()
            .and_then(|p| std::fs::symlink_metadata(p).ok())
            .map(|m| m.dev());
        if parent_dev == Some(meta.dev()) {
            return false;
        }
        nix::sys::statfs::statfs(path)
            .map(|s| PSEUDO_FS.contains(&s.filesystem_type().0))
            .unwrap_or(false)
    }

    /// A PAX extended header (type `x`) with `records`, for the entry named `name` that
    /// follows it.
    fn pax_header(
        &mut self,
        name: &[u8],
        records: &[(String, Vec<u8>)],
    ) -> Result<(), ArchiveError> {
        let data = super::xattrs::pax_data(records);
        let mut h = tar::Header::new_ustar();
        let pax_name = super::xattrs::pax_name(name);
        h.as_ustar_mut().expect("a ustar header").name[..pax_name.len()].copy_from_slice(&pax_name);
        h.set_mode(0o644);
        h.set_entry_type(tar::EntryType::XHeader);
        h.set_size(data.len() as u64);
        h.set_cksum();
        self.out
            .append(&h, data.as_slice())
            .map_err(|e| ArchiveError::io("write", "tar stream", e))
    }

    /// Puts `value` in the header's name or link field, preceded by a GNU long-name
    /// entry when it does not fit in 100 bytes.
    fn long_field(
        &mut self,
        h: &mut tar::Header,
        value: &[u8],
        kind: tar::EntryType,
    ) -> Result<(), ArchiveError> {
        let gnu = h.as_gnu_mut().expect("a GNU header");
        let field = if kind == tar::EntryType::GNULongName {
            &mut gnu.name
        } else {
            &mut gnu.linkname
        };
        let n = value.len().min(field.len());
        field[..n].copy_from_slice(&value[..n]);
        if value.len() <= field.len() {
            return Ok(());
        }
        let mut long = tar::Header::new_gnu();
        let gname = &mut long.as_gnu_mut().expect("a GNU header").name;
        gname[..13].copy_from_slice(b"././@LongLink");
        long.set_mode(0o644);
        long.set_entry_type(kind);
        long.set_size(value.len() as u64 + 1);
        long.set_cksum();
        let mut data = value.to_vec();
        data.push(0);
        self.out
            .append(&long, data.as_slice())
            .map_err(|e| ArchiveError::io("write", "tar stream", e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn names(data: &[u8]) -> Vec<(String, String)> {
        let mut a = tar::Archive::new(data);
        a.entries()
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                let name = String::from_utf8_lossy(&e.path_bytes()).into_owned();
                let link = e
                    .link_name_bytes()
                    .map(|l| String::from_utf8_lossy(&l).into_owned())
                    .unwrap_or_default();
                (name, link)
            })
            .collect()
    }

    #[test]
    fn names_links_and_long_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("d");
        std::fs::create_dir_all(d.join("sub")).unwrap();
        std::fs::write(d.join("b"), "x").unwrap();
        std::fs::hard_link(d.join("b"), d.join("a")).unwrap();
        std::os::unix::fs::symlink("/etc/passwd", d.join("sub/l")).unwrap();
        let long = "n".repeat(150);
        std::fs::write(d.join(&long), "").unwrap();

        let mut w = TarWriter::new(Vec::new(), false);
        w.add_named(&d, "d").unwrap();
        let got = names(&w.finish().unwrap());
        let want = [
            ("d/", ""),
            ("d/a", ""),
            ("d/b", "d/a"),
            (&format!("d/{long}")[..], ""),
            ("d/sub/", ""),
            ("d/sub/l", "/etc/passwd"),
        ];
        let want: Vec<(String, String)> = want
            .iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect();
        assert_eq!(got, want);

        let mut w = TarWriter::new(Vec::new(), false);
        w.add_named(&d.join("sub"), ".").unwrap();
        assert_eq!(names(&w.finish().unwrap())[0].0, "./");

        let mut w = TarWriter::new(Vec::new(), false);
        w.add_contents(&d).unwrap();
        assert_eq!(names(&w.finish().unwrap())[0].0, "a");
    }
}
