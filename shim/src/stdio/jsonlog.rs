//! Docker's json-file log driver format: one `{"log","stream","time"}` object per line,
//! rotated by size into `<path>.1`, `<path>.2`, ... (newest first), as dockerd does.

use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use chrono::Utc;
use serde::Serialize;

use crate::state_files::rfc3339_nano;

/// A line longer than this is logged in pieces, like docker's copier (bufSize 16 KiB).
const MAX_PARTIAL: usize = 16 * 1024;

#[derive(Debug, thiserror::Error)]
pub enum JsonLogError {
    #[error("cannot open log {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot write log {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot rotate log {path}")]
    Rotate {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

#[derive(Serialize)]
struct Entry<'a> {
    log: &'a str,
    stream: &'a str,
    time: String,
}

/// One json-file log, possibly shared by stdout and stderr.
#[derive(Debug)]
pub struct JsonLog {
    path: PathBuf,
    file: File,
    size: u64,
    max_size: Option<u64>,
    max_file: u32,
}

impl JsonLog {
    pub fn open(path: &Path, max_size: Option<u64>, max_file: u32) -> Result<Self, JsonLogError> {
        let file = open_append(path).map_err(|source| JsonLogError::Open {
            path: path.to_owned(),
            source,
        })?;
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        Ok(JsonLog {
            path: path.to_owned(),
            file,
            size,
            max_size,
            max_file: max_file.max(1),
        })
    }

    /// Writes one entry; `text` is a whole line (with its `\n`) or a partial one.
    pub fn write_entry(&mut self, stream: &str, text: &[u8]) -> Result<(), JsonLogError> {
        let log = String::from_utf8_lossy(text);
        let entry = Entry {
            log: &log,
            stream,
            time: rfc3339_nano(Utc::now()),
        };
        // Serializing strings cannot fail.
        let mut line = serde_json::to_vec(&entry).unwrap_or_default();
        line.push(b'\n');
        if let Some(max) = self.max_size {
            if self.size > 0 && self.size + line.len() as u64 > max {
                self.rotate()?;
            }
        }
        self.file
            .write_all(&line)
            .map_err(|source| JsonLogError::Write {
                path: self.path.clone(),
                source,
            })?;
        self.size += line.len() as u64;
        Ok(())
    }

    fn rotate(&mut self) -> Result<(), JsonLogError> {
        let err = |source| JsonLogError::Rotate {
            path: self.path.clone(),
            source,
        };
        if self.max_file == 1 {
            self.file.set_len(0).map_err(err)?;
            self.size = 0;
            return Ok(());
        }
        let numbered = |n: u32| PathBuf::from(format!("{}.{n}", self.path.display()));
        for n in (1..self.max_file - 1).rev() {
            match std::fs::rename(numbered(n), numbered(n + 1)) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(err(e)),
                _ => {}
            }
        }
        std::fs::rename(&self.path, numbered(1)).map_err(err)?;
        self.file = open_append(&self.path).map_err(err)?;
        self.size = 0;
        Ok(())
    }
}

/// Log files are created 0640 (before umask), also when rotation recreates them: container
/// output can hold secrets, so the default 0666 & ~umask (world-readable) will not do.
pub(crate) const LOG_MODE: u32 = 0o640;

fn open_append(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(LOG_MODE)
        .open(path)
}

/// Splits one stream's bytes into log lines.
#[derive(Debug, Default)]
pub struct LineSplitter {
    partial: Vec<u8>,
}

impl LineSplitter {
    /// Feeds `data` and calls `emit` with every complete line (or over-long piece).
    pub fn feed<E>(
        &mut self,
        data: &[u8],
        mut emit: impl FnMut(&[u8]) -> Result<(), E>,
    ) -> Result<(), E> {
        self.partial.extend_from_slice(data);
        let mut start = 0;
        while let Some(nl) = self.partial[start..].iter().position(|b| *b == b'\n') {
            emit(&self.partial[start..start + nl + 1])?;
            start += nl + 1;
        }
        while self.partial.len() - start >= MAX_PARTIAL {
            emit(&self.partial[start..start + MAX_PARTIAL])?;
            start += MAX_PARTIAL;
        }
        self.partial.drain(..start);
        Ok(())
    }

    /// At end of stream: emits the unterminated rest, if any.
    pub fn finish<E>(&mut self, mut emit: impl FnMut(&[u8]) -> Result<(), E>) -> Result<(), E> {
        if !self.partial.is_empty() {
            emit(&self.partial)?;
            self.partial.clear();
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(path: &Path) -> Vec<serde_json::Value> {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .map(|l| serde_json::from_str(l).expect("json line"))
            .collect()
    }

    #[test]
    fn splits_lines_and_keeps_partial_tail() {
        let mut s = LineSplitter::default();
        let mut out: Vec<Vec<u8>> = Vec::new();
        let mut push = |l: &[u8]| -> Result<(), ()> {
            out.push(l.to_vec());
            Ok(())
        };
        s.feed(b"a\nb", &mut push).unwrap();
        s.feed(b"c\nd", &mut push).unwrap();
        s.finish(&mut push).unwrap();
        assert_eq!(out, vec![b"a\n".to_vec(), b"bc\n".to_vec(), b"d".to_vec()]);
    }

    #[test]
    fn writes_docker_entries_and_rotates_by_size() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(&path, Some(200), 3).expect("open");
        for i in 0..12 {
            let stream = if i % 2 == 0 { "stdout" } else { "stderr" };
            log.write_entry(stream, format!("line {i}\n").as_bytes())
                .expect("write");
        }
        let current = lines(&path);
        let first = &current[0];
        assert!(first["stream"].as_str().is_some());
        let time = first["time"].as_str().expect("time");
        assert!(time.ends_with('Z') && time.len() == 30, "{time}");
        let one = lines(&PathBuf::from(format!("{}.1", path.display())));
        let two = lines(&PathBuf::from(format!("{}.2", path.display())));
        assert!(!one.is_empty() && !two.is_empty());
        assert!(!PathBuf::from(format!("{}.3", path.display())).exists());
        let last = current.last().expect("entries");
        assert_eq!(last["log"], "line 11\n");
        assert_eq!(last["stream"], "stderr");
        assert!(std::fs::metadata(&path).expect("stat").len() <= 200);
    }

    #[test]
    fn log_files_are_not_world_readable_after_rotation() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("c-json.log");
        let mut log = JsonLog::open(&path, Some(100), 3).expect("open");
        for i in 0..10 {
            log.write_entry("stdout", format!("secret {i}\n").as_bytes())
                .expect("write");
        }
        let rotated = PathBuf::from(format!("{}.1", path.display()));
        assert!(rotated.exists(), "the log rotated");
        for file in [&path, &rotated] {
            let mode = std::fs::metadata(file).expect("stat").permissions().mode() & 0o777;
            // Whatever the umask removes on top, never more than rw-r-----.
            assert_eq!(mode & !LOG_MODE, 0, "{} is {mode:o}", file.display());
        }
    }
}
