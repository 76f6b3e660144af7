//! `HEAD /containers/{id}/archive`: dockerd's `ContainerPathStat`, sent base64-encoded in
//! the `X-Docker-Container-Path-Stat` header. `mode` is a Go `os.FileMode` (type bits at
//! the top, not the unix `S_IF*` values), which the CLI decodes as such.

use std::os::unix::fs::MetadataExt;

use base64::Engine as _;
use serde::Serialize;

pub const HEADER: &str = "X-Docker-Container-Path-Stat";

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct PathStat {
    pub name: String,
    pub size: i64,
    pub mode: u32,
    pub mtime: String,
    pub link_target: String,
}

impl PathStat {
    /// `name` is the base name of the path asked for; `link_target` the fully resolved
    /// container path when the entry is a symlink.
    pub fn new(name: String, meta: &std::fs::Metadata, link_target: String) -> Self {
        Self {
            name,
            size: meta.size() as i64,
            mode: go_mode(meta.mode()),
            mtime: go_time(meta.mtime(), meta.mtime_nsec()),
            link_target,
        }
    }

    pub fn header_value(&self) -> String {
        let json = serde_json::to_vec(self).unwrap_or_default();
        base64::engine::general_purpose::STANDARD.encode(json)
    }

    pub fn is_dir(&self) -> bool {
        self.mode & MODE_DIR != 0
    }
}

const MODE_DIR: u32 = 1 << 31;
const MODE_SYMLINK: u32 = 1 << 27;
const MODE_DEVICE: u32 = 1 << 26;
const MODE_PIPE: u32 = 1 << 25;
const MODE_SOCKET: u32 = 1 << 24;
const MODE_SETUID: u32 = 1 << 23;
const MODE_SETGID: u32 = 1 << 22;
const MODE_CHAR: u32 = 1 << 21;
const MODE_STICKY: u32 = 1 << 20;

/// A unix `st_mode` as Go's `os.FileMode`.
pub fn go_mode(mode: u32) -> u32 {
    let mut m = mode & 0o777;
    m |= match mode & libc::S_IFMT {
        libc::S_IFDIR => MODE_DIR,
        libc::S_IFLNK => MODE_SYMLINK,
        libc::S_IFBLK => MODE_DEVICE,
        libc::S_IFCHR => MODE_DEVICE | MODE_CHAR,
        libc::S_IFIFO => MODE_PIPE,
        libc::S_IFSOCK => MODE_SOCKET,
        _ => 0,
    };
    for (bit, go) in [
        (libc::S_ISUID, MODE_SETUID),
        (libc::S_ISGID, MODE_SETGID),
        (libc::S_ISVTX, MODE_STICKY),
    ] {
        if mode & bit != 0 {
            m |= go;
        }
    }
    m
}

/// Go's `time.Time` JSON (RFC 3339 with the fraction's trailing zeros trimmed), in UTC.
pub fn go_time(secs: i64, nanos: i64) -> String {
    let Some(t) = chrono::DateTime::from_timestamp(secs, nanos.clamp(0, 999_999_999) as u32) else {
        return "0001-01-01T00:00:00Z".into();
    };
    let base = t.format("%Y-%m-%dT%H:%M:%S").to_string();
    let frac = format!("{:09}", t.timestamp_subsec_nanos());
    let frac = frac.trim_end_matches('0');
    if frac.is_empty() {
        format!("{base}Z")
    } else {
        format!("{base}.{frac}Z")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn modes_and_times_as_go_writes_them() {
        assert_eq!(go_mode(libc::S_IFDIR | 0o755), (1 << 31) | 0o755);
        assert_eq!(go_mode(libc::S_IFREG | 0o4755), (1 << 23) | 0o755);
        assert_eq!(go_mode(libc::S_IFLNK | 0o777), (1 << 27) | 0o777);
        assert_eq!(
            go_mode(libc::S_IFCHR | 0o666),
            (1 << 26) | (1 << 21) | 0o666
        );
        assert_eq!(go_time(0, 0), "1970-01-01T00:00:00Z");
        assert_eq!(go_time(1, 500_000_000), "1970-01-01T00:00:01.5Z");
    }
}
