//! One module per group of commands; shared output plumbing here.

pub mod containers;
pub mod images;
pub mod run;
pub mod version;

use std::io::Write;

use http_body_util::BodyExt;
use tokio::io::AsyncReadExt;

use crate::client::Hijacked;
use crate::demux::{Demuxer, StreamKind};
use crate::error::CliError;

/// Percent-encodes one path segment or query value.
pub fn enc(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

/// Where a chunk of container output goes.
#[derive(Debug, Clone, Copy)]
enum Sink {
    Stdout,
    Stderr,
}

/// Writes to our stdout/stderr. A closed pipe (`berth logs x | head`) is not an error:
/// returns `Ok(false)` so the caller stops reading.
fn emit(sink: Sink, data: &[u8]) -> Result<bool, CliError> {
    let result = match sink {
        Sink::Stdout => {
            let mut out = std::io::stdout().lock();
            out.write_all(data).and_then(|()| out.flush())
        }
        Sink::Stderr => {
            let mut err = std::io::stderr().lock();
            err.write_all(data).and_then(|()| err.flush())
        }
    };
    match result {
        Ok(()) => Ok(true),
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(false),
        Err(source) => Err(CliError::Output { source }),
    }
}

/// Writes a line to stdout (broken pipe tolerated).
pub fn print_out(text: &str) -> Result<(), CliError> {
    emit(Sink::Stdout, text.as_bytes()).map(|_| ())
}

/// Copies a container's output stream to our stdout/stderr until it ends. Without a TTY
/// the stream uses docker's 8-byte framing; with one it is raw stdout.
pub async fn pump(stream: Hijacked, tty: bool) -> Result<(), CliError> {
    let mut demux = Demuxer::new();
    let mut chunk = |data: &[u8]| -> Result<bool, CliError> {
        if tty {
            return emit(Sink::Stdout, data);
        }
        for frame in demux.push(data)? {
            let sink = match frame.kind {
                StreamKind::Stdout | StreamKind::Stdin => Sink::Stdout,
                StreamKind::Stderr | StreamKind::System => Sink::Stderr,
            };
            if !emit(sink, &frame.data)? {
                return Ok(false);
            }
        }
        Ok(true)
    };
    match stream {
        Hijacked::Upgraded(mut io) => {
            let mut buf = vec![0u8; 32 * 1024];
            loop {
                let n = io
                    .read(&mut buf)
                    .await
                    .map_err(|source| CliError::Stream { source })?;
                if n == 0 || !chunk(&buf[..n])? {
                    break;
                }
            }
        }
        Hijacked::Body(mut body) => {
            while let Some(frame) = body.frame().await {
                let frame = frame.map_err(|e| CliError::Stream {
                    source: std::io::Error::other(e),
                })?;
                if let Some(data) = frame.data_ref() {
                    if !chunk(data)? {
                        break;
                    }
                }
            }
        }
    }
    if tty {
        Ok(())
    } else {
        demux.finish()
    }
}
