//! Files the shim leaves in the task directory for its peers: `shim.pid`, `address` and
//! `exit.json`. Each one is written atomically (temp file, rename) so a reader after a
//! crash sees the old content or the new, never a torn one; `exit.json` also durably
//! (fsync of the file and the directory), since it records what highd must report.

use std::path::{Path, PathBuf};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};

#[derive(Debug, thiserror::Error)]
pub enum StateFileError {
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{path} is not a valid exit record")]
    Parse {
        path: PathBuf,
        #[source]
        source: serde_json::Error,
    },
}

/// `exit.json`: the init process's exit, recorded before TaskExit is published.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ExitRecord {
    pub pid: u32,
    pub exit_status: u32,
    /// RFC 3339 with nanoseconds, UTC.
    pub exited_at: String,
}

impl ExitRecord {
    pub fn new(pid: u32, exit_status: u32, exited_at: DateTime<Utc>) -> Self {
        ExitRecord {
            pid,
            exit_status,
            exited_at: rfc3339_nano(exited_at),
        }
    }

    pub fn write(&self, path: &Path) -> Result<(), StateFileError> {
        // Serializing a struct of strings and integers cannot fail.
        let json = serde_json::to_vec(self).unwrap_or_default();
        write_atomic(path, &json)
    }

    pub fn read(path: &Path) -> Result<Self, StateFileError> {
        let data = std::fs::read(path).map_err(|source| StateFileError::Read {
            path: path.to_owned(),
            source,
        })?;
        serde_json::from_slice(&data).map_err(|source| StateFileError::Parse {
            path: path.to_owned(),
            source,
        })
    }
}

/// Docker's and containerd's fixed-width RFC3339Nano (nine fractional digits, `Z`).
pub fn rfc3339_nano(at: DateTime<Utc>) -> String {
    at.to_rfc3339_opts(SecondsFormat::Nanos, true)
}

/// Replaces `path` with `data` atomically, not durably (berth-fsutil): for the pid and
/// socket path of this process and the files handed to the runtime, none of which means
/// anything after a reboot, so a power loss taking them back is harmless while two
/// fsyncs would sit on every task start and exec.
pub fn write_atomic_nosync(path: &Path, data: &[u8]) -> Result<(), StateFileError> {
    berth_fsutil::write_atomic_nosync(path, data).map_err(|source| StateFileError::Write {
        path: path.to_owned(),
        source,
    })
}

/// Replaces `path` with `data` atomically and durably (berth-fsutil).
pub fn write_atomic(path: &Path, data: &[u8]) -> Result<(), StateFileError> {
    berth_fsutil::write_atomic(path, data).map_err(|source| StateFileError::Write {
        path: path.to_owned(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    #[test]
    fn exit_record_round_trips_with_nanosecond_time() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("exit.json");
        let at = Utc.timestamp_opt(1_700_000_000, 5).single().expect("time");
        let rec = ExitRecord::new(42, 137, at);
        rec.write(&path).expect("write");
        let text = std::fs::read_to_string(&path).expect("read");
        assert_eq!(
            text,
            r#"{"pid":42,"exit_status":137,"exited_at":"2023-11-14T22:13:20.000000005Z"}"#
        );
        assert_eq!(ExitRecord::read(&path).expect("parse"), rec);
        let leftovers: Vec<_> = std::fs::read_dir(dir.path()).expect("ls").collect();
        assert_eq!(leftovers.len(), 1, "temp file left behind");
    }
}
