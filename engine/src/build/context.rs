//! The build context: the uploaded tar unpacked into a private directory, `.dockerignore`
//! applied, source globs matched, and content checksums for the layer cache.

use std::io::Read;
use std::path::{Path, PathBuf};

use sha2::{Digest, Sha256};

use super::BuildError;

fn io<'a>(op: &'static str, path: &'a Path) -> impl FnOnce(std::io::Error) -> BuildError + 'a {
    move |source| BuildError::Io {
        op,
        path: path.to_path_buf(),
        source,
    }
}

/// Unpacks the uploaded context (plain or gzip tar) into `dir` as it is read.
pub fn unpack(body: impl Read, dir: &Path) -> Result<(), BuildError> {
    use std::io::BufRead;
    std::fs::create_dir_all(dir).map_err(io("create", dir))?;
    let mut body = std::io::BufReader::with_capacity(64 << 10, body);
    let head = body.fill_buf().map_err(io("read the build context", dir))?;
    let reader: Box<dyn Read> = if head.starts_with(&[0x1f, 0x8b]) {
        Box::new(flate2::read::MultiGzDecoder::new(body))
    } else {
        Box::new(body)
    };
    let reader = TarTail::new(reader);
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    // `unpack` refuses entries escaping `dir` (`..`, absolute paths through symlinks).
    archive.unpack(dir).map_err(|e| {
        // The tar crate keeps the cause (a bad header, a short read) in `source`.
        let cause = std::error::Error::source(&e)
            .map(|c| format!(": {c}"))
            .unwrap_or_default();
        BuildError::Context {
            message: format!("unpack the build context: {e}{cause}"),
        }
    })
}

/// A downloaded `remote` context: a (gzip) tar is unpacked, anything else is taken as
/// the Dockerfile itself (dockerd's `remotecontext` does the same).
pub fn from_download(file: &Path, dir: &Path, dockerfile: &str) -> Result<(), BuildError> {
    let mut head = Vec::with_capacity(512);
    std::fs::File::open(file)
        .and_then(|f| f.take(512).read_to_end(&mut head))
        .map_err(io("read", file))?;
    let is_tar = head.starts_with(&[0x1f, 0x8b]) || head.get(257..262) == Some(b"ustar");
    if is_tar {
        let f = std::fs::File::open(file).map_err(io("open", file))?;
        return unpack(f, dir);
    }
    let dest = dir.join(clean(dockerfile));
    if let Some(parent) = dest.parent() {
        std::fs::create_dir_all(parent).map_err(io("create", parent))?;
    }
    std::fs::rename(file, &dest).map_err(io("move", file))
}

/// Ends a tar stream the way the docker CLI's `-f <outside the context>` stream lacks:
/// after the last byte, zeros up to the block boundary and the end-of-archive blocks.
/// (The CLI never closes its tar writer there; dockerd's reader accepts that.)
struct TarTail<R> {
    inner: R,
    read: u64,
    tail: Option<u64>,
}

impl<R: Read> TarTail<R> {
    fn new(inner: R) -> Self {
        Self {
            inner,
            read: 0,
            tail: None,
        }
    }
}

impl<R: Read> Read for TarTail<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        if self.tail.is_none() {
            let n = self.inner.read(buf)?;
            if n > 0 || buf.is_empty() {
                self.read += n as u64;
                return Ok(n);
            }
            self.tail = Some((512 - self.read % 512) % 512 + 1024);
        }
        let left = self.tail.unwrap_or(0);
        let n = buf.len().min(usize::try_from(left).unwrap_or(usize::MAX));
        buf[..n].fill(0);
        self.tail = Some(left - n as u64);
        Ok(n)
    }
}

/// A `.dockerignore` pattern list (moby's `patternmatcher`): later patterns win, `!`
/// re-includes, `**` matches any number of directories, a match on a directory covers
/// everything below it.
#[derive(Debug, Clone, Default)]
pub struct Ignore {
    patterns: Vec<(bool, Vec<String>)>,
}

impl Ignore {
    pub fn parse(text: &str) -> Self {
        let mut patterns = Vec::new();
        for line in text.lines() {
            let l = line.trim();
            if l.is_empty() || l.starts_with('#') {
                continue;
            }
            let (neg, p) = match l.strip_prefix('!') {
                Some(p) => (true, p.trim()),
                None => (false, l),
            };
            let p = clean(p);
            if p.is_empty() {
                continue;
            }
            patterns.push((neg, p.split('/').map(String::from).collect()));
        }
        Self { patterns }
    }

    /// Whether the context-relative `path` is excluded.
    pub fn excluded(&self, path: &str) -> bool {
        let segs: Vec<&str> = path.split('/').collect();
        let mut out = false;
        for (neg, pat) in &self.patterns {
            // A pattern matching a parent directory matches the path too.
            let hit = (1..=segs.len()).any(|n| match_segs(pat, &segs[..n]));
            if hit {
                out = !neg;
            }
        }
        out
    }
}

/// `./a//b/` → `a/b`.
pub fn clean(p: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for s in p.split('/') {
        match s {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

fn match_segs(pat: &[String], segs: &[&str]) -> bool {
    match pat.first() {
        None => segs.is_empty(),
        Some(p) if p == "**" => (0..=segs.len()).any(|i| match_segs(&pat[1..], &segs[i..])),
        Some(p) => match segs.first() {
            Some(s) if glob(p, s) => match_segs(&pat[1..], &segs[1..]),
            _ => false,
        },
    }
}

/// Go's `filepath.Match` for one path segment: `*`, `?`, `[...]`, `\` escapes.
pub fn glob(pat: &str, name: &str) -> bool {
    let p: Vec<char> = pat.chars().collect();
    let n: Vec<char> = name.chars().collect();
    glob_at(&p, &n)
}

fn glob_at(p: &[char], n: &[char]) -> bool {
    match p.first() {
        None => n.is_empty(),
        Some('*') => (0..=n.len()).any(|i| glob_at(&p[1..], &n[i..])),
        Some('?') => !n.is_empty() && glob_at(&p[1..], &n[1..]),
        Some('[') => {
            let Some(end) = p.iter().skip(1).position(|&c| c == ']').map(|e| e + 1) else {
                return false;
            };
            let Some(&c) = n.first() else { return false };
            let class = &p[1..end];
            let (neg, class) = match class.first() {
                Some('^' | '!') => (true, &class[1..]),
                _ => (false, class),
            };
            let mut hit = false;
            let mut i = 0;
            while i < class.len() {
                if i + 2 < class.len() && class[i + 1] == '-' {
                    hit |= class[i] <= c && c <= class[i + 2];
                    i += 3;
                } else {
                    hit |= class[i] == c;
                    i += 1;
                }
            }
            hit != neg && glob_at(&p[end + 1..], &n[1..])
        }
        Some('\\') if p.len() > 1 => n.first() == Some(&p[1]) && glob_at(&p[2..], &n[1..]),
        Some(&c) => n.first() == Some(&c) && glob_at(&p[1..], &n[1..]),
    }
}

/// Deletes what `.dockerignore` excludes (the CLI already leaves most of it out; other
/// clients may not). The Dockerfile and `.dockerignore` themselves stay.
pub fn apply_ignore(root: &Path, dockerfile: &str) -> Result<(), BuildError> {
    let file = root.join(".dockerignore");
    let text = match std::fs::read_to_string(&file) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(e) => return Err(io("read", &file)(e)),
    };
    let ignore = Ignore::parse(&text);
    let keep = [clean(dockerfile), ".dockerignore".to_string()];
    for rel in walk(root, "")? {
        if keep.contains(&rel) || !ignore.excluded(&rel) {
            continue;
        }
        let p = root.join(&rel);
        let meta = match std::fs::symlink_metadata(&p) {
            Ok(m) => m,
            Err(_) => continue, // already gone with its directory
        };
        // A directory is removed only when nothing inside it is re-included.
        if meta.is_dir() {
            let inner = walk(&p, &rel)?;
            if inner
                .iter()
                .any(|r| keep.contains(r) || !ignore.excluded(r))
            {
                continue;
            }
            std::fs::remove_dir_all(&p).map_err(io("remove", &p))?;
        } else {
            std::fs::remove_file(&p).map_err(io("remove", &p))?;
        }
    }
    Ok(())
}

/// Every path under `dir`, relative to the context root (`prefix` is `dir`'s own).
pub fn walk(dir: &Path, prefix: &str) -> Result<Vec<String>, BuildError> {
    let mut out = Vec::new();
    let mut entries: Vec<_> = match std::fs::read_dir(dir) {
        Ok(rd) => rd.filter_map(Result::ok).collect(),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(io("read", dir)(e)),
    };
    entries.sort_by_key(|e| e.file_name());
    for e in entries {
        let name = e.file_name().to_string_lossy().into_owned();
        let rel = if prefix.is_empty() {
            name
        } else {
            format!("{prefix}/{name}")
        };
        out.push(rel.clone());
        if e.file_type().is_ok_and(|t| t.is_dir()) {
            out.extend(walk(&e.path(), &rel)?);
        }
    }
    Ok(out)
}

/// The paths under `root` a COPY/ADD source names: a literal path, or a glob matched
/// segment by segment. Errors as dockerd when nothing matches.
pub fn sources(root: &Path, src: &str) -> Result<Vec<PathBuf>, BuildError> {
    let rel = clean(src);
    let has_glob = rel.contains(['*', '?', '[']);
    if !has_glob {
        let p = root.join(&rel);
        if std::fs::symlink_metadata(&p).is_err() {
            return Err(BuildError::Invalid {
                message: format!("COPY failed: file not found in build context or excluded by .dockerignore: stat {rel}: file does not exist"),
            });
        }
        return Ok(vec![p]);
    }
    let pat: Vec<String> = rel.split('/').map(String::from).collect();
    let matches: Vec<PathBuf> = walk(root, "")?
        .into_iter()
        .filter(|r| {
            let segs: Vec<&str> = r.split('/').collect();
            segs.len() == pat.len() && match_segs(&pat, &segs)
        })
        .map(|r| root.join(r))
        .collect();
    if matches.is_empty() {
        return Err(BuildError::Invalid {
            message: "COPY failed: no source files were specified".to_string(),
        });
    }
    Ok(matches)
}

/// A checksum over the sources' paths, modes and contents (for the layer cache and the
/// `file:<sum>` history text).
pub fn checksum(paths: &[PathBuf], root: &Path) -> Result<String, BuildError> {
    use std::os::unix::fs::PermissionsExt;
    let mut h = Sha256::new();
    let mut files: Vec<PathBuf> = Vec::new();
    for p in paths {
        files.push(p.clone());
        if p.is_dir() {
            let rel = p
                .strip_prefix(root)
                .unwrap_or(p)
                .to_string_lossy()
                .into_owned();
            files.extend(walk(p, &rel)?.into_iter().map(|r| root.join(r)));
        }
    }
    for f in files {
        let meta = std::fs::symlink_metadata(&f).map_err(io("stat", &f))?;
        let rel = f
            .strip_prefix(root)
            .unwrap_or(&f)
            .to_string_lossy()
            .into_owned();
        h.update(format!("{rel}\0{:o}\0", meta.permissions().mode()));
        if meta.file_type().is_symlink() {
            let t = std::fs::read_link(&f).map_err(io("readlink", &f))?;
            h.update(t.to_string_lossy().as_bytes());
        } else if meta.is_file() {
            let mut file = std::fs::File::open(&f).map_err(io("open", &f))?;
            std::io::copy(&mut file, &mut h).map_err(io("read", &f))?;
        }
        h.update([0]);
    }
    Ok(hex::encode(h.finalize()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerignore_patterns() {
        let i = Ignore::parse("# c\n*.log\n!keep.log\nsecret/\n**/tmp\n");
        assert!(i.excluded("a.log"));
        assert!(!i.excluded("keep.log"));
        assert!(i.excluded("secret/x/y"));
        assert!(i.excluded("deep/er/tmp"));
        assert!(i.excluded("tmp/file"));
        assert!(
            !i.excluded("sub/a.log"),
            "no ** means the top directory only"
        );
        assert!(!i.excluded("src/main.rs"));
    }

    #[test]
    fn unterminated_tar_unpacks() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_size(5);
        h.set_mode(0o644);
        b.append_data(&mut h, "Dockerfile", &b"FROM "[..]).unwrap();
        let full = b.into_inner().unwrap();
        // Header and data without the padding and end blocks, as the CLI sends it.
        let cut = &full[..512 + 5];
        let d = tempfile::tempdir().unwrap();
        unpack(cut, d.path()).unwrap();
        assert_eq!(
            std::fs::read(d.path().join("Dockerfile")).unwrap(),
            b"FROM "
        );
    }

    #[test]
    fn globs() {
        assert!(glob("*.txt", "a.txt"));
        assert!(!glob("*.txt", "a.txt.bak"));
        assert!(glob("f?le[0-9]", "file7"));
        assert!(!glob("[!a]b", "ab"));
    }

    #[test]
    fn sources_and_checksums() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("a.txt"), "a").unwrap();
        std::fs::write(d.path().join("b.txt"), "b").unwrap();
        std::fs::create_dir(d.path().join("dir")).unwrap();
        std::fs::write(d.path().join("dir/c"), "c").unwrap();
        assert_eq!(sources(d.path(), "*.txt").unwrap().len(), 2);
        assert!(sources(d.path(), "nope").is_err());
        let s1 = checksum(&sources(d.path(), "dir").unwrap(), d.path()).unwrap();
        std::fs::write(d.path().join("dir/c"), "C").unwrap();
        let s2 = checksum(&sources(d.path(), "dir").unwrap(), d.path()).unwrap();
        assert_ne!(s1, s2);
    }
}
