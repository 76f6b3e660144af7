//! Local archives that ADD unpacks, told by content as dockerd 20.10 does: a tar, plain
//! or compressed with gzip, bzip2 or xz (zstd is not one of its formats: such a file is
//! copied as it is). gzip is decoded in-process; bzip2 and xz by the `bzip2` and `xz`
//! programs (dockerd runs `xz -d -c -q` too).

use std::io::Read;
use std::path::Path;
use std::process::{Child, ChildStdout, Command, Stdio};

use super::fsops::Owner;
use super::BuildError;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
}

fn detect(head: &[u8]) -> Compression {
    if head.starts_with(&[0x1f, 0x8b, 0x08]) {
        Compression::Gzip
    } else if head.starts_with(b"BZh") {
        Compression::Bzip2
    } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
        Compression::Xz
    } else {
        Compression::None
    }
}

/// A decompressing program's output; the program is killed and reaped when dropped.
struct ChildReader {
    child: Child,
    out: ChildStdout,
}

impl Read for ChildReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        self.out.read(buf)
    }
}

impl Drop for ChildReader {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn program(path: &Path, name: &str, args: &[&str]) -> Result<Box<dyn Read>, BuildError> {
    let input = std::fs::File::open(path).map_err(io("open", path))?;
    let mut child = Command::new(name)
        .args(args)
        .stdin(input)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .map_err(|e| BuildError::Invalid {
            message: format!("exec: {name:?}: {e} (needed to unpack {})", path.display()),
        })?;
    let out = child.stdout.take().ok_or_else(|| BuildError::Invalid {
        message: format!("{name}: no output pipe"),
    })?;
    Ok(Box::new(ChildReader { child, out }))
}

/// The file's content, decompressed.
fn open(path: &Path) -> Result<Box<dyn Read>, BuildError> {
    let mut head = [0u8; 6];
    let n = std::fs::File::open(path)
        .and_then(|mut f| f.read(&mut head))
        .map_err(io("open", path))?;
    let f = std::fs::File::open(path).map_err(io("open", path))?;
    Ok(match detect(&head[..n]) {
        Compression::None => Box::new(f),
        Compression::Gzip => Box::new(flate2::read::MultiGzDecoder::new(f)),
        Compression::Bzip2 => program(path, "bzip2", &["-d", "-c", "-q"])?,
        Compression::Xz => program(path, "xz", &["-d", "-c", "-q"])?,
    })
}

/// Whether a local file is a (possibly compressed) tar archive that ADD unpacks: its
/// first (decompressed) block is a tar header.
pub fn is_archive(path: &Path) -> Result<bool, BuildError> {
    let mut r = open(path)?;
    let mut block = [0u8; 512];
    let mut got = 0;
    while got < block.len() {
        match r.read(&mut block[got..]) {
            Ok(0) | Err(_) => break,
            Ok(n) => got += n,
        }
    }
    Ok(got == 512 && is_tar_header(&block))
}

/// A tar header block: `ustar` magic, or (old V7 archives) a valid checksum.
fn is_tar_header(b: &[u8; 512]) -> bool {
    if &b[257..262] == b"ustar" {
        return true;
    }
    let field = String::from_utf8_lossy(&b[148..156]);
    let Ok(want) = u32::from_str_radix(field.trim_matches(|c: char| c == '\0' || c == ' '), 8)
    else {
        return false;
    };
    let sum: u32 = b
        .iter()
        .enumerate()
        .map(|(i, &c)| {
            if (148..156).contains(&i) {
                32
            } else {
                u32::from(c)
            }
        })
        .sum();
    b[0] != 0 && sum == want
}

/// ADD of a local archive: unpacked into `dest` (a directory), owners kept as in the
/// archive unless `--chown` was given.
pub fn extract_into(src: &Path, dest: &Path, owner: Option<Owner>) -> Result<(), BuildError> {
    std::fs::create_dir_all(dest).map_err(io("create", dest))?;
    let mut archive = tar::Archive::new(open(src)?);
    archive.set_preserve_permissions(true);
    archive.set_preserve_ownerships(owner.is_none());
    archive.set_overwrite(true);
    let entries = archive.entries().map_err(io("read", src))?;
    for entry in entries {
        let mut entry = entry.map_err(io("read", src))?;
        let unpacked = entry.unpack_in(dest).map_err(io("extract", dest))?;
        if let (true, Some(o)) = (unpacked, owner) {
            let rel = entry.path().map_err(io("read", src))?.into_owned();
            let _ = std::os::unix::fs::lchown(dest.join(rel), Some(o.uid), Some(o.gid));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tar_with_file(path: &Path) {
        let mut b = tar::Builder::new(std::fs::File::create(path).unwrap());
        let mut h = tar::Header::new_gnu();
        h.set_size(3);
        h.set_mode(0o640);
        h.set_uid(7);
        h.set_gid(8);
        b.append_data(&mut h, "inner/file", &b"abc"[..]).unwrap();
        b.finish().unwrap();
    }

    #[test]
    fn add_unpacks_a_tar_without_dir_entries() {
        let d = tempfile::tempdir().unwrap();
        let tar_path = d.path().join("f.tar");
        tar_with_file(&tar_path);
        assert!(is_archive(&tar_path).unwrap());
        let dest = d.path().join("out");
        extract_into(&tar_path, &dest, None).unwrap();
        assert_eq!(std::fs::read(dest.join("inner/file")).unwrap(), b"abc");
    }

    #[test]
    fn formats_by_magic_and_text_is_no_archive() {
        assert_eq!(detect(&[0x1f, 0x8b, 0x08, 0]), Compression::Gzip);
        assert_eq!(detect(b"BZh91AY"), Compression::Bzip2);
        assert_eq!(detect(&[0xfd, b'7', b'z', b'X', b'Z', 0]), Compression::Xz);
        assert_eq!(detect(&[0x28, 0xb5, 0x2f, 0xfd]), Compression::None);
        let d = tempfile::tempdir().unwrap();
        let text = d.path().join("t");
        std::fs::write(&text, "just text\n".repeat(100)).unwrap();
        assert!(!is_archive(&text).unwrap());
    }
}
