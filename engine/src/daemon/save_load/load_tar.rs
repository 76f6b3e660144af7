//! The blocking half of `docker load`: walks the uploaded tar as it arrives and turns it
//! into [`Event`]s. Every regular file's bytes go on (to the content store) in chunks,
//! hashed on the way; only the small index documents are kept whole.

use std::io::{self, BufReader, Read};

use bytes::Bytes;
use tokio::sync::mpsc;

use super::stream_io::{decompressed, hash_blob, sniff, Compression, Tee};
use super::ArchiveError;

/// Documents kept in memory: they say what the other files are.
pub const DOCUMENTS: [&str; 3] = ["manifest.json", "index.json", "repositories"];
/// Bigger "documents" are refused rather than held.
pub const DOCUMENT_LIMIT: u64 = 16 << 20;

#[derive(Debug)]
pub enum Event {
    Document {
        path: String,
        data: Vec<u8>,
    },
    /// A symbolic or hard link to another file of the archive (older docker-archives
    /// link repeated layers).
    Link {
        path: String,
        target: String,
    },
    /// A file to store: `expected` is the digest its path names (`blobs/sha256/<hex>`),
    /// or empty.
    Begin {
        path: String,
        size: u64,
        expected: String,
    },
    Data(Bytes),
    End(FileInfo),
}

/// What the archive's file turned out to be.
#[derive(Debug, Clone)]
pub struct FileInfo {
    pub digest: String,
    pub size: u64,
    pub compression: Compression,
    /// The digest of the uncompressed bytes; `None` for compressed data that does not
    /// decompress.
    pub diff_id: Option<String>,
    /// The unpacked size of a layer (see [`super::stream_io::tar_size`]); `None` for a
    /// file that is no tar.
    pub unpacked: Option<i64>,
}

fn invalid(message: String) -> ArchiveError {
    ArchiveError::Invalid { message }
}

/// The digest a path like `blobs/sha256/<hex>` names.
pub fn digest_of_path(path: &str) -> Option<String> {
    let hex = path.strip_prefix("blobs/sha256/")?;
    (hex.len() == 64 && hex.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
        .then(|| format!("sha256:{hex}"))
}

pub fn normalize(path: &str) -> String {
    path.trim_start_matches("./").to_string()
}

/// Resolves a link target relative to the link's directory, as tar does.
fn link_target(path: &str, target: &str, hard: bool) -> String {
    if hard || target.starts_with('/') {
        return normalize(target.trim_start_matches('/'));
    }
    let mut parts: Vec<&str> = path.split('/').collect();
    parts.pop();
    for seg in target.split('/') {
        match seg {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            s => parts.push(s),
        }
    }
    parts.join("/")
}

/// Walks the (optionally gzip, bzip2, xz or zstd compressed) tar in `body`, sending its events.
/// Returns when the archive ends, or with the first error (the consumer going away
/// shows as a send error).
pub fn walk(body: impl Read, tx: &mpsc::Sender<Event>) -> Result<(), ArchiveError> {
    let walked = walk_events(body, tx);
    // A consumer that went away has its own error to report; this side's would only say
    // that it left.
    if tx.is_closed() {
        return Ok(());
    }
    walked
}

fn walk_events(body: impl Read, tx: &mpsc::Sender<Event>) -> Result<(), ArchiveError> {
    let gone = || io::Error::other("the load was abandoned");
    let send = |e: Event| tx.blocking_send(e).map_err(|_| gone());
    let mut raw = BufReader::with_capacity(64 << 10, body);
    let compression = sniff(&mut raw).map_err(|e| invalid(format!("read the archive: {e}")))?;
    let mut archive = tar::Archive::new(decompressed(raw, compression));
    let entries = archive
        .entries()
        .map_err(|e| invalid(format!("not a tar archive: {e}")))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| invalid(format!("not a tar archive: {e}")))?;
        let path = normalize(
            &entry
                .path()
                .map_err(|e| invalid(format!("entry path: {e}")))?
                .to_string_lossy(),
        );
        let kind = entry.header().entry_type();
        if kind.is_symlink() || kind.is_hard_link() {
            if let Some(target) = entry.link_name().ok().flatten() {
                let target = link_target(&path, &target.to_string_lossy(), kind.is_hard_link());
                send(Event::Link { path, target }).map_err(|e| invalid(e.to_string()))?;
            }
            continue;
        }
        if !kind.is_file() {
            continue;
        }
        let size = entry.size();
        if DOCUMENTS.contains(&path.as_str()) {
            if size > DOCUMENT_LIMIT {
                return Err(invalid(format!(
                    "{path} is {size} bytes, more than {DOCUMENT_LIMIT}"
                )));
            }
            let mut data = Vec::new();
            entry
                .read_to_end(&mut data)
                .map_err(|e| invalid(format!("read {path}: {e}")))?;
            send(Event::Document { path, data }).map_err(|e| invalid(e.to_string()))?;
            continue;
        }
        let expected = digest_of_path(&path).unwrap_or_default();
        send(Event::Begin {
            path: path.clone(),
            size,
            expected,
        })
        .map_err(|e| invalid(e.to_string()))?;
        let mut tee = Tee::new(&mut entry, |b| send(Event::Data(b)));
        let facts = hash_blob(&mut tee).map_err(|e| invalid(format!("read {path}: {e}")))?;
        let (digest, size) = tee
            .finish()
            .map_err(|e| invalid(format!("read {path}: {e}")))?;
        let diff_id = match facts.compression {
            Compression::None => Some(digest.clone()),
            _ => facts.diff_id,
        };
        send(Event::End(FileInfo {
            digest,
            size,
            compression: facts.compression,
            diff_id,
            unpacked: facts.unpacked,
        }))
        .map_err(|e| invalid(e.to_string()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn links_resolve_relative_to_their_directory() {
        assert_eq!(
            link_target("b/layer.tar", "../a/layer.tar", false),
            "a/layer.tar"
        );
        assert_eq!(
            link_target("b/layer.tar", "a/layer.tar", true),
            "a/layer.tar"
        );
        assert_eq!(
            digest_of_path(&format!("blobs/sha256/{}", "a".repeat(64))),
            Some(format!("sha256:{}", "a".repeat(64)))
        );
        assert_eq!(digest_of_path("blobs/sha256/xyz"), None);
    }
}
