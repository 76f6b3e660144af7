//! Docker's multiplexed stream framing (moby `pkg/stdcopy`): every chunk is preceded by an
//! 8-byte header `[stream, 0, 0, 0, len(u32 big-endian)]`. Used for attach, logs and exec
//! when the process has no terminal.

use bytes::{BufMut, Bytes, BytesMut};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum StdStream {
    Stdin = 0,
    Stdout = 1,
    Stderr = 2,
}

impl StdStream {
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "stdout" => Some(Self::Stdout),
            "stderr" => Some(Self::Stderr),
            "stdin" => Some(Self::Stdin),
            _ => None,
        }
    }
}

/// Content type dockerd announces for multiplexed streams (API ≥ 1.42).
pub const MULTIPLEXED_CONTENT_TYPE: &str = "application/vnd.docker.multiplexed-stream";
/// Content type for raw streams (terminal containers).
pub const RAW_CONTENT_TYPE: &str = "application/vnd.docker.raw-stream";

/// Frames `data` for `stream`. Chunks larger than a u32 are split, never truncated.
pub fn frame(stream: StdStream, data: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(data.len() + 8);
    for chunk in data.chunks(u32::MAX as usize) {
        out.put_u8(stream as u8);
        out.put_bytes(0, 3);
        // chunks() bounds the length to u32::MAX.
        out.put_u32(u32::try_from(chunk.len()).unwrap_or(u32::MAX));
        out.put_slice(chunk);
    }
    out.freeze()
}

/// Splits a multiplexed byte stream back into `(stream id, payload)` pairs; used by tests
/// and by anything in Berth that reads its own streams. Returns `None` on a torn frame.
pub fn demux(mut data: &[u8]) -> Option<Vec<(u8, Vec<u8>)>> {
    let mut out = Vec::new();
    while !data.is_empty() {
        if data.len() < 8 {
            return None;
        }
        let len = u32::from_be_bytes([data[4], data[5], data[6], data[7]]) as usize;
        let payload = data.get(8..8 + len)?;
        out.push((data[0], payload.to_vec()));
        data = &data[8 + len..];
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_layout_matches_docker() {
        let f = frame(StdStream::Stderr, b"hello\n");
        assert_eq!(&f[..8], &[2, 0, 0, 0, 0, 0, 0, 6]);
        assert_eq!(&f[8..], b"hello\n");
        let f = frame(StdStream::Stdout, &[b'x'; 300]);
        assert_eq!(&f[..8], &[1, 0, 0, 0, 0, 0, 1, 44]);
    }

    #[test]
    fn frames_round_trip() {
        let mut all = frame(StdStream::Stdout, b"out").to_vec();
        all.extend_from_slice(&frame(StdStream::Stderr, b"err"));
        assert_eq!(
            demux(&all).unwrap(),
            vec![(1, b"out".to_vec()), (2, b"err".to_vec())]
        );
        assert!(demux(&all[..all.len() - 1]).is_none());
    }
}
