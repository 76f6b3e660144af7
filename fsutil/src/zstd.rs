//! Reading zstd streams (image layers compressed as `tar+zstd`), shared by highd's layer
//! applier and the engine's `docker load`.
//!
//! The zstd format allows a stream of several frames, and skippable frames between them
//! (zstd(1)'s `--format` notes, RFC 8878 section 3.1), which encoders like containerd's
//! write for large layers; ruzstd's own reader stops after the first frame, so this one
//! starts the next frame until the input ends.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::errors::{FrameDecoderError, ReadFrameHeaderError};
use ruzstd::decoding::{BlockDecodingStrategy, FrameDecoder};

/// The first four bytes of every zstd frame.
pub const MAGIC: [u8; 4] = [0x28, 0xb5, 0x2f, 0xfd];

/// Decompresses all frames of `source`.
pub struct ZstdReader<R> {
    source: R,
    frame: FrameDecoder,
    in_frame: bool,
}

impl<R: BufRead> ZstdReader<R> {
    pub fn new(source: R) -> ZstdReader<R> {
        ZstdReader {
            source,
            frame: FrameDecoder::new(),
            in_frame: false,
        }
    }

    /// Starts the next frame; `false` at the end of the input.
    fn next_frame(&mut self) -> io::Result<bool> {
        loop {
            if self.source.fill_buf()?.is_empty() {
                return Ok(false);
            }
            match self.frame.reset(&mut self.source) {
                Ok(()) => return Ok(true),
                Err(FrameDecoderError::ReadFrameHeaderError(ReadFrameHeaderError::SkipFrame {
                    length,
                    ..
                })) => {
                    let skipped =
                        io::copy(&mut (&mut self.source).take(length.into()), &mut io::sink())?;
                    if skipped != u64::from(length) {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "zstd skippable frame is cut short",
                        ));
                    }
                }
                Err(e) => return Err(invalid(e)),
            }
        }
    }
}

fn invalid(e: FrameDecoderError) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {e}"))
}

impl<R: BufRead> Read for ZstdReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            if !self.in_frame {
                if !self.next_frame()? {
                    return Ok(0);
                }
                self.in_frame = true;
            }
            while self.frame.can_collect() < buf.len() && !self.frame.is_finished() {
                let wanted = buf.len() - self.frame.can_collect();
                self.frame
                    .decode_blocks(&mut self.source, BlockDecodingStrategy::UptoBytes(wanted))
                    .map_err(invalid)?;
            }
            let n = self.frame.read(buf)?;
            if n > 0 {
                return Ok(n);
            }
            // Finished and drained: the input may hold another frame.
            self.in_frame = false;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ruzstd::encoding::{compress_to_vec, CompressionLevel};

    fn decode(data: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZstdReader::new(data).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn decodes_several_frames_and_skips_skippable_ones() {
        let a: Vec<u8> = (0..200_000u32).map(|i| (i % 251) as u8).collect();
        let b = b"second frame".to_vec();
        let mut data = compress_to_vec(a.as_slice(), CompressionLevel::Fastest);
        assert!(data.starts_with(&MAGIC));
        // A skippable frame: magic 0x184D2A5?, little-endian length, payload.
        data.extend_from_slice(&[0x50, 0x2a, 0x4d, 0x18, 3, 0, 0, 0, 9, 9, 9]);
        data.extend(compress_to_vec(
            b.as_slice(),
            CompressionLevel::Uncompressed,
        ));
        let mut want = a;
        want.extend_from_slice(&b);
        assert_eq!(decode(&data).unwrap(), want);
        assert_eq!(decode(&[]).unwrap(), Vec::<u8>::new());
    }

    #[test]
    fn garbage_and_truncation_are_errors() {
        assert!(decode(b"not zstd at all").is_err());
        let data = compress_to_vec(&[7u8; 100_000][..], CompressionLevel::Fastest);
        assert!(decode(&data[..data.len() / 2]).is_err());
    }
}
