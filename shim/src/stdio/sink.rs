//! Where a process's output is written.

use std::collections::HashMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::OpenOptionsExt;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use super::{AsyncPipe, IoError, JsonLog, LineSplitter, StdioTarget};

/// Logs opened for one process, by path: stdout and stderr naming the same json-file share
/// one writer, so their lines interleave in one file as docker's do.
pub type SharedLogs = HashMap<PathBuf, Arc<Mutex<JsonLog>>>;

pub enum Sink {
    Discard,
    Fifo(AsyncPipe),
    /// Regular files take plain blocking writes: they are local and never wait on a peer.
    File(File),
    Json {
        log: Arc<Mutex<JsonLog>>,
        stream: &'static str,
        lines: LineSplitter,
    },
}

impl Sink {
    pub fn open(
        target: &StdioTarget,
        stream: &'static str,
        logs: &mut SharedLogs,
    ) -> Result<Sink, IoError> {
        let open_err = |path: &PathBuf, source| IoError::Open {
            stream,
            path: path.clone(),
            source,
        };
        match target {
            StdioTarget::Null => Ok(Sink::Discard),
            StdioTarget::Path(path) => {
                let is_fifo = std::fs::metadata(path)
                    .map(|m| m.file_type().is_fifo())
                    .unwrap_or(false);
                if is_fifo {
                    let fifo = AsyncPipe::open_fifo_writer(path).map_err(|e| open_err(path, e))?;
                    Ok(Sink::Fifo(fifo))
                } else {
                    Ok(Sink::File(append(path).map_err(|e| open_err(path, e))?))
                }
            }
            StdioTarget::File(path) => Ok(Sink::File(append(path).map_err(|e| open_err(path, e))?)),
            StdioTarget::JsonFile {
                path,
                max_size,
                max_file,
            } => {
                let log = match logs.get(path) {
                    Some(log) => Arc::clone(log),
                    None => {
                        let log = Arc::new(Mutex::new(JsonLog::open(path, *max_size, *max_file)?));
                        logs.insert(path.clone(), Arc::clone(&log));
                        log
                    }
                };
                Ok(Sink::Json {
                    log,
                    stream,
                    lines: LineSplitter::default(),
                })
            }
        }
    }

    /// Writes `data`. A destination that fails is dropped (once, with a warning) and the
    /// rest of the output discarded, so the process never blocks on a full pipe.
    pub async fn write(&mut self, data: &[u8]) {
        let result = match self {
            Sink::Discard => Ok(()),
            Sink::Fifo(fifo) => fifo.write_all(data).await,
            Sink::File(file) => file.write_all(data),
            Sink::Json { log, stream, lines } => {
                let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
                lines
                    .feed(data, |line| log.write_entry(stream, line))
                    .map_err(std::io::Error::other)
            }
        };
        if let Err(err) = result {
            tracing::warn!(%err, "output destination failed; discarding the rest");
            *self = Sink::Discard;
        }
    }

    /// End of stream (and after each read from a terminal): writes an unterminated line.
    pub fn finish(&mut self) {
        if let Sink::Json { log, stream, lines } = self {
            let mut log = log.lock().unwrap_or_else(|e| e.into_inner());
            if let Err(err) = lines.finish(|line| log.write_entry(stream, line)) {
                tracing::warn!(%err, "cannot write the last log line");
            }
        }
    }
}

/// Plain output files get the json-file log's mode: the same output, the same secrets.
fn append(path: &PathBuf) -> std::io::Result<File> {
    OpenOptions::new()
        .append(true)
        .create(true)
        .mode(super::jsonlog::LOG_MODE)
        .open(path)
}
