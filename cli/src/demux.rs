//! The Docker stream framing used by attach and logs when the container has no TTY:
//! each frame is an 8-byte header `[stream, 0, 0, 0, len (u32 big-endian)]` then `len`
//! bytes of payload. Frames may be split across reads, so the decoder is push-based.

use crate::error::CliError;

const HEADER_LEN: usize = 8;

/// Which stream a frame belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StreamKind {
    Stdin,
    Stdout,
    Stderr,
    /// The daemon's own error messages (stream type 3).
    System,
}

impl StreamKind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            0 => Some(Self::Stdin),
            1 => Some(Self::Stdout),
            2 => Some(Self::Stderr),
            3 => Some(Self::System),
            _ => None,
        }
    }
}

/// One decoded frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Frame {
    pub kind: StreamKind,
    pub data: Vec<u8>,
}

/// Incremental decoder: feed it whatever the socket returns, take out whole frames.
#[derive(Debug, Default)]
pub struct Demuxer {
    pending: Vec<u8>,
}

impl Demuxer {
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends `data` and returns every frame that is now complete.
    pub fn push(&mut self, data: &[u8]) -> Result<Vec<Frame>, CliError> {
        self.pending.extend_from_slice(data);
        let mut frames = Vec::new();
        let mut at = 0;
        while self.pending.len() - at >= HEADER_LEN {
            let header = &self.pending[at..at + HEADER_LEN];
            let kind = StreamKind::from_byte(header[0]).ok_or_else(|| CliError::Demux {
                reason: format!("unknown stream type {}", header[0]),
            })?;
            let len = u32::from_be_bytes([header[4], header[5], header[6], header[7]]) as usize;
            if self.pending.len() - at - HEADER_LEN < len {
                break;
            }
            let start = at + HEADER_LEN;
            frames.push(Frame {
                kind,
                data: self.pending[start..start + len].to_vec(),
            });
            at = start + len;
        }
        self.pending.drain(..at);
        Ok(frames)
    }

    /// Called at end of stream: a partial frame left over means the stream was cut.
    pub fn finish(&self) -> Result<(), CliError> {
        if self.pending.is_empty() {
            Ok(())
        } else {
            Err(CliError::Demux {
                reason: format!(
                    "stream ended inside a frame ({} bytes left)",
                    self.pending.len()
                ),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(kind: u8, payload: &[u8]) -> Vec<u8> {
        let mut v = vec![kind, 0, 0, 0];
        v.extend_from_slice(&(payload.len() as u32).to_be_bytes());
        v.extend_from_slice(payload);
        v
    }

    #[test]
    fn decodes_whole_frames() {
        let mut bytes = frame(1, b"hello\n");
        bytes.extend(frame(2, b"oops\n"));
        bytes.extend(frame(1, b""));
        let mut d = Demuxer::new();
        let frames = d.push(&bytes).unwrap();
        assert_eq!(
            frames,
            vec![
                Frame {
                    kind: StreamKind::Stdout,
                    data: b"hello\n".to_vec()
                },
                Frame {
                    kind: StreamKind::Stderr,
                    data: b"oops\n".to_vec()
                },
                Frame {
                    kind: StreamKind::Stdout,
                    data: Vec::new()
                },
            ]
        );
        d.finish().unwrap();
    }

    #[test]
    fn reassembles_frames_split_at_every_byte() {
        let mut bytes = frame(1, b"abc");
        bytes.extend(frame(3, b"daemon error"));
        let mut d = Demuxer::new();
        let mut got = Vec::new();
        for b in &bytes {
            got.extend(d.push(std::slice::from_ref(b)).unwrap());
        }
        assert_eq!(got.len(), 2);
        assert_eq!(got[0].data, b"abc");
        assert_eq!(got[1].kind, StreamKind::System);
        assert_eq!(got[1].data, b"daemon error");
        d.finish().unwrap();
    }

    #[test]
    fn rejects_unknown_stream_and_truncation() {
        let mut d = Demuxer::new();
        assert!(d.push(&frame(9, b"x")).is_err());
        let mut d = Demuxer::new();
        let bytes = frame(1, b"truncated");
        assert!(d.push(&bytes[..10]).unwrap().is_empty());
        assert!(d.finish().is_err());
    }
}
