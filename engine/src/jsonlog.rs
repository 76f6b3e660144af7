//! Reading docker's json-file logs, which the shim writes (one JSON object per line,
//! rotated by size to `<log>.1`, `<log>.2`, ...): tail and follow.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Deserialize;

use crate::stdcopy::StdStream;

#[derive(Debug, thiserror::Error)]
pub enum JsonLogError {
    #[error("read log {path}: {source}")]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEntry {
    pub stream: StdStream,
    pub log: String,
    /// RFC 3339 with nanoseconds, as the shim wrote it.
    pub time: String,
}

#[derive(Deserialize)]
struct RawEntry {
    log: String,
    stream: String,
    #[serde(default)]
    time: String,
}

/// Parses one log line; lines that are not valid entries (a torn write after a crash) are
/// skipped by returning `None` rather than failing the whole read.
pub fn parse_line(line: &[u8]) -> Option<LogEntry> {
    let raw: RawEntry = serde_json::from_slice(line).ok()?;
    Some(LogEntry {
        stream: StdStream::from_name(&raw.stream)?,
        log: raw.log,
        time: raw.time,
    })
}

/// Rotated files oldest first, then the live file.
fn log_files(path: &Path) -> Vec<PathBuf> {
    let mut rotated = Vec::new();
    for n in 1.. {
        let p = PathBuf::from(format!("{}.{n}", path.display()));
        if !p.exists() {
            break;
        }
        rotated.push(p);
    }
    rotated.reverse();
    rotated.push(path.to_path_buf());
    rotated
}

/// Reads every complete entry (or the last `tail`), returning them with a follower
/// positioned right after what was read.
pub fn read_all(
    path: &Path,
    tail: Option<usize>,
) -> Result<(Vec<LogEntry>, Follower), JsonLogError> {
    let mut entries = Vec::new();
    let files = log_files(path);
    let last = files.len() - 1;
    let mut follower = Follower::from_end(path)?;
    for (i, file) in files.iter().enumerate() {
        if i == last {
            // The live file is read through the follower so nothing written between
            // reading and following is lost or duplicated.
            follower = Follower::from_start(path);
            entries.extend(follower.poll()?);
        } else {
            let data = std::fs::read(file).map_err(|source| JsonLogError::Read {
                path: file.clone(),
                source,
            })?;
            entries.extend(data.split(|b| *b == b'\n').filter_map(parse_line));
        }
    }
    if let Some(n) = tail {
        let skip = entries.len().saturating_sub(n);
        entries.drain(..skip);
    }
    Ok((entries, follower))
}

/// Follows a growing log file. Keeps the open file across rotation so the rest of a
/// rotated file is still read before switching to the new one.
#[derive(Debug)]
pub struct Follower {
    path: PathBuf,
    file: Option<(File, u64)>,
    partial: Vec<u8>,
}

impl Follower {
    /// Starts at the current end: only output written from now on is returned. A file that
    /// does not exist yet is followed from its start once it appears.
    pub fn from_end(path: &Path) -> Result<Self, JsonLogError> {
        let mut f = Self::from_start(path);
        if let Ok(mut file) = File::open(path) {
            let read_err = |source| JsonLogError::Read {
                path: path.to_path_buf(),
                source,
            };
            let ino = file.metadata().map_err(read_err)?.ino();
            file.seek(SeekFrom::End(0)).map_err(read_err)?;
            f.file = Some((file, ino));
        }
        Ok(f)
    }

    pub fn from_start(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            file: None,
            partial: Vec::new(),
        }
    }

    /// Returns the complete entries appended since the last call (possibly none).
    pub fn poll(&mut self) -> Result<Vec<LogEntry>, JsonLogError> {
        let read_err = |source| JsonLogError::Read {
            path: self.path.clone(),
            source,
        };
        let mut out = Vec::new();
        loop {
            if self.file.is_none() {
                match File::open(&self.path) {
                    Ok(file) => {
                        let ino = file.metadata().map_err(read_err)?.ino();
                        self.file = Some((file, ino));
                    }
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
                    Err(e) => return Err(read_err(e)),
                }
            }
            let Some((file, ino)) = self.file.as_mut() else {
                return Ok(out);
            };
            let mut buf = Vec::new();
            file.read_to_end(&mut buf).map_err(read_err)?;
            self.partial.extend_from_slice(&buf);
            if let Some(end) = self.partial.iter().rposition(|b| *b == b'\n') {
                let complete: Vec<u8> = self.partial.drain(..=end).collect();
                out.extend(complete.split(|b| *b == b'\n').filter_map(parse_line));
            }
            // Rotated away (new inode at the path): the old file is complete, move on.
            match std::fs::metadata(&self.path) {
                Ok(m) if m.ino() != *ino => {
                    self.file = None;
                    self.partial.clear();
                }
                _ => return Ok(out),
            }
        }
    }
}

#[cfg(test)]
#[path = "jsonlog_tests.rs"]
mod tests;
