//! The blocking half of `docker import`: the uploaded rootfs tar (plain, gzip or zstd;
//! bzip2 and xz are decompressed first) goes on to the content store as it is read, while
//! it is checked to be a tar and hashed on both sides (digest of the blob, diff ID of the
//! tar inside).

use std::io::{self, BufReader, Read};

use std::collections::HashMap;

use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::stream_io::{
    decompressed, sniff, tar_size, ChannelReader, Compression, HashWriter, Tee,
};
use crate::backend::Backend;
use crate::daemon::{Daemon, DaemonResult, ImportError};

impl<B: Backend> Daemon<B> {
    /// Streams `body` into highd as one layer blob; returns what it turned out to be.
    /// On any failure the ingest is aborted and the rest of `body` is read and dropped,
    /// so an uploading client gets the error instead of a broken pipe.
    pub(crate) async fn import_layer<S>(&self, body: S) -> DaemonResult<ImportedLayer>
    where
        S: futures::Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let mut body = ChannelReader::spawn(body);
        let (tx, rx) = mpsc::channel::<io::Result<Bytes>>(4);
        let reader = tokio::task::spawn_blocking(move || {
            let r = import_layer(&mut body, |b| {
                tx.blocking_send(Ok(b))
                    .map_err(|_| io::Error::other("the content write ended"))
            });
            if let Err(e) = &r {
                let _ = tx.blocking_send(Err(io::Error::other(e.to_string())));
            }
            let _ = io::copy(&mut body, &mut io::sink());
            // A write that failed first has the error worth reporting.
            (r, tx.is_closed())
        });
        let written = self
            .backend
            .content_write_stream(0, "", Box::pin(ReceiverStream::new(rx)), HashMap::new())
            .await;
        let (read, write_ended) = reader.await.map_err(|e| ImportError::NotTar {
            source: io::Error::other(e.to_string()),
        })?;
        match (read, written) {
            (Ok(layer), Ok(())) => Ok(layer),
            (Err(_), Err(w)) if write_ended => Err(w.into()),
            (Err(e), _) => Err(e.into()),
            (Ok(_), Err(w)) => Err(w.into()),
        }
    }
}

/// The layer blob an import wrote.
#[derive(Debug, Clone)]
pub struct ImportedLayer {
    pub digest: String,
    pub size: u64,
    pub diff_id: String,
    pub compression: Compression,
    /// Its unpacked size (see [`tar_size`]).
    pub unpacked: i64,
}

/// Hashes what is read through it and remembers whether the source failed (a broken
/// compressed stream, as opposed to a tar that does not parse).
struct Hashing<'a, R> {
    inner: R,
    hash: &'a mut HashWriter,
    failed: bool,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf).inspect_err(|_| self.failed = true)?;
        io::Write::write_all(self.hash, &buf[..n])?;
        Ok(n)
    }
}

/// Remembers whether reading failed: the bzip2 or xz stream, not the tar inside it.
struct Watched<R> {
    inner: R,
    failed: bool,
}

impl<R: Read> Read for Watched<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.inner.read(buf).inspect_err(|_| self.failed = true)
    }
}

/// Reads `body` to its end, handing every chunk of the layer it stores to `sink`: the
/// upload as it came (plain, gzip or zstd), or for bzip2 and xz, which no layer media
/// type allows, what they decompress to (dockerd stores every import decompressed).
pub fn import_layer<F>(body: impl Read, sink: F) -> Result<ImportedLayer, ImportError>
where
    F: FnMut(Bytes) -> io::Result<()>,
{
    let mut body = BufReader::with_capacity(64 << 10, body);
    let c = sniff(&mut body).map_err(|source| ImportError::NotTar { source })?;
    if c.layer_media_type().is_some() {
        return store_layer(body, sink);
    }
    let mut decoded = Watched {
        inner: decompressed(body, c),
        failed: false,
    };
    match store_layer(&mut decoded, sink) {
        Err(ImportError::NotTar { source }) if decoded.failed => {
            Err(ImportError::Decompress { source })
        }
        other => other,
    }
}

/// Stores `body` as it is read, checking it is a (plain, gzip or zstd) tar.
fn store_layer<F>(body: impl Read, sink: F) -> Result<ImportedLayer, ImportError>
where
    F: FnMut(Bytes) -> io::Result<()>,
{
    let mut tee = Tee::new(body, sink);
    let mut hash = HashWriter::default();
    let (compression, unpacked) = {
        let mut raw = BufReader::with_capacity(64 << 10, &mut tee);
        let c = sniff(&mut raw).map_err(|source| ImportError::NotTar { source })?;
        let mut plain = Hashing {
            inner: decompressed(&mut raw, c),
            hash: &mut hash,
            failed: false,
        };
        let checked = tar_size(&mut plain).and_then(|size| {
            // The tar's end blocks and any padding after them are part of the layer.
            io::copy(&mut plain, &mut io::sink()).map(|_| size)
        });
        let unpacked = match checked {
            Ok(size) => size,
            Err(source) => {
                return Err(if plain.failed && c != Compression::None {
                    ImportError::Decompress { source }
                } else {
                    ImportError::NotTar { source }
                });
            }
        };
        drop(plain);
        io::copy(&mut raw, &mut io::sink()).map_err(|source| ImportError::NotTar { source })?;
        (c, unpacked)
    };
    let (digest, size) = tee
        .finish()
        .map_err(|source| ImportError::NotTar { source })?;
    Ok(ImportedLayer {
        digest,
        size,
        diff_id: hash.digest(),
        compression,
        unpacked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_gzip_tar_is_hashed_on_both_sides_and_garbage_is_refused() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(3);
        b.append_data(&mut h, "f", &b"abc"[..]).unwrap();
        let plain = b.into_inner().unwrap();
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        io::Write::write_all(&mut gz, &plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut sent = Vec::new();
        let l = import_layer(gz.as_slice(), |c| {
            sent.extend_from_slice(&c);
            Ok(())
        })
        .unwrap();
        assert_eq!(sent, gz);
        assert_eq!(l.compression, Compression::Gzip);
        assert_eq!(l.digest, crate::daemon::sha256_digest(&gz));
        assert_eq!(l.diff_id, crate::daemon::sha256_digest(&plain));
        let bad = import_layer(&b"not a tar archive, not even close to one"[..], |_| Ok(()));
        assert!(matches!(bad, Err(ImportError::NotTar { .. })), "{bad:?}");
    }

    #[test]
    fn a_bzip2_tar_is_stored_decompressed_and_a_broken_one_is_a_decompress_error() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_ustar();
        h.set_size(5);
        b.append_data(&mut h, "f", &b"hello"[..]).unwrap();
        let plain = b.into_inner().unwrap();
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        io::Write::write_all(&mut bz, &plain).unwrap();
        let bz = bz.finish().unwrap();
        let mut sent = Vec::new();
        let l = import_layer(bz.as_slice(), |c| {
            sent.extend_from_slice(&c);
            Ok(())
        })
        .unwrap();
        assert_eq!(sent, plain);
        assert_eq!(l.compression, Compression::None);
        assert_eq!(l.digest, crate::daemon::sha256_digest(&plain));
        assert_eq!(l.diff_id, l.digest);
        assert_eq!(l.unpacked, 5);
        let mut broken = bz.clone();
        let mid = broken.len() / 2;
        broken[mid] ^= 0xff;
        let bad = import_layer(broken.as_slice(), |_| Ok(()));
        assert!(
            matches!(bad, Err(ImportError::Decompress { .. })),
            "{bad:?}"
        );
    }
}
