//! Blocking readers that let load and import parse an upload as it arrives: the request
//! body as a `Read` (fed by an async pump), and a reader that hashes and hands on every
//! raw byte while the decompressed side is hashed for the diff ID.

use std::io::{self, BufRead, BufReader, Read, Write};

use bytes::{Bytes, BytesMut};
use futures::{Stream, StreamExt};
use sha2::{Digest, Sha256};
use tokio::sync::mpsc;

/// Chunks handed on at a time: well under highd's message limit.
pub const CHUNK: usize = 1 << 20;

/// An async byte stream read from a blocking thread. The stream is pumped by a task on
/// the runtime through a small channel, so at most a few chunks wait in memory.
pub struct ChannelReader {
    rx: mpsc::Receiver<io::Result<Bytes>>,
    current: Bytes,
}

impl ChannelReader {
    /// Must be called inside the runtime (it spawns the pump).
    pub fn spawn<S>(mut body: S) -> ChannelReader
    where
        S: Stream<Item = io::Result<Bytes>> + Send + Unpin + 'static,
    {
        let (tx, rx) = mpsc::channel(16);
        tokio::spawn(async move {
            while let Some(item) = body.next().await {
                let stop = item.is_err();
                if tx.send(item).await.is_err() || stop {
                    break;
                }
            }
        });
        ChannelReader {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChannelReader {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(item) => self.current = item?,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        buf[..n].copy_from_slice(&self.current.split_to(n));
        Ok(n)
    }
}

/// Reads through to `inner`, hashing every byte and handing it to `sink` in chunks of
/// up to [`CHUNK`]; [`Tee::finish`] hands on the last chunk.
pub struct Tee<R, F> {
    inner: R,
    sink: F,
    hash: Sha256,
    size: u64,
    pending: BytesMut,
}

impl<R: Read, F: FnMut(Bytes) -> io::Result<()>> Tee<R, F> {
    pub fn new(inner: R, sink: F) -> Self {
        Tee {
            inner,
            sink,
            hash: Sha256::new(),
            size: 0,
            pending: BytesMut::new(),
        }
    }

    /// Flushes the last chunk; returns the digest and size of everything read.
    pub fn finish(mut self) -> io::Result<(String, u64)> {
        if !self.pending.is_empty() {
            (self.sink)(self.pending.split().freeze())?;
        }
        Ok((
            format!("sha256:{}", hex::encode(self.hash.finalize())),
            self.size,
        ))
    }
}

impl<R: Read, F: FnMut(Bytes) -> io::Result<()>> Read for Tee<R, F> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        self.pending.extend_from_slice(&buf[..n]);
        if self.pending.len() >= CHUNK {
            (self.sink)(self.pending.split().freeze())?;
        }
        Ok(n)
    }
}

/// A sha256 of what is written.
#[derive(Default)]
pub struct HashWriter(Sha256);

impl HashWriter {
    pub fn digest(self) -> String {
        format!("sha256:{}", hex::encode(self.0.finalize()))
    }
}

impl Write for HashWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0.update(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// How a blob is compressed, from its magic bytes: the formats dockerd's
/// DecompressStream tells apart (moby pkg/archive), plus zstd layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Compression {
    None,
    Gzip,
    Bzip2,
    Xz,
    Zstd,
}

/// An xz block whose dictionary needs more than this is refused instead of allocated
/// (`xz -9` needs 64 MiB; an archive must not make the engine allocate gigabytes).
const XZ_MEM_LIMIT_KIB: u32 = 256 << 10;

impl Compression {
    pub fn detect(head: &[u8]) -> Compression {
        if head.starts_with(&[0x1f, 0x8b]) {
            Compression::Gzip
        } else if head.starts_with(b"BZh") {
            Compression::Bzip2
        } else if head.starts_with(&[0xfd, b'7', b'z', b'X', b'Z', 0x00]) {
            Compression::Xz
        } else if head.starts_with(&berth_fsutil::zstd::MAGIC) {
            Compression::Zstd
        } else {
            Compression::None
        }
    }

    /// The layer media type for a blob compressed this way; `None` for bzip2 and xz,
    /// which no image spec has a layer type for (highd could not apply such a layer).
    pub fn layer_media_type(self) -> Option<&'static str> {
        match self {
            Compression::None => Some(crate::daemon::MEDIA_LAYER_TAR),
            Compression::Gzip => Some("application/vnd.docker.image.rootfs.diff.tar.gzip"),
            Compression::Zstd => Some("application/vnd.oci.image.layer.v1.tar+zstd"),
            Compression::Bzip2 | Compression::Xz => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "uncompressed",
            Compression::Gzip => "gzip",
            Compression::Bzip2 => "bzip2",
            Compression::Xz => "xz",
            Compression::Zstd => "zstd",
        }
    }
}

/// Peeks at the first bytes of `r` (without consuming them) to tell its compression.
pub fn sniff<R: BufRead>(r: &mut R) -> io::Result<Compression> {
    // One fill_buf may return fewer bytes than the magic; a tar's first block is 512.
    let head = r.fill_buf()?;
    Ok(Compression::detect(head))
}

/// `r` decompressed as `c` says. Concatenated gzip, bzip2 and xz streams are read as
/// one, as their command-line tools do.
pub fn decompressed<'a, R: BufRead + 'a>(r: R, c: Compression) -> Box<dyn Read + 'a> {
    match c {
        Compression::None => Box::new(r),
        Compression::Gzip => Box::new(flate2::bufread::MultiGzDecoder::new(r)),
        Compression::Bzip2 => Box::new(bzip2::bufread::MultiBzDecoder::new(r)),
        Compression::Xz => Box::new(lzma_rust2::XzReader::new_mem_limit(
            r,
            true,
            XZ_MEM_LIMIT_KIB,
        )),
        Compression::Zstd => Box::new(berth_fsutil::zstd::ZstdReader::new(r)),
    }
}

/// The unpacked size of a layer tar as dockerd's overlay2 layer store records it: the
/// size of the layer's directory once applied (moby's directory.Size), so each file's
/// bytes, a symlink's target length (its lstat size), and 0 for directories, hard links
/// (counted once, as their first name) and whiteouts. Reads up to the tar's end marker.
pub fn tar_size(r: impl Read) -> io::Result<i64> {
    let mut archive = tar::Archive::new(r);
    let mut total: i64 = 0;
    for entry in archive.entries()? {
        let entry = entry?;
        let size = if entry.header().entry_type().is_symlink() {
            entry.link_name_bytes().map_or(0, |l| l.len() as u64)
        } else {
            entry.size()
        };
        total = total.saturating_add(i64::try_from(size).unwrap_or(i64::MAX));
    }
    Ok(total)
}

/// Reads through, hashing what passes when it has a hasher.
struct Hashing<'a, R> {
    inner: R,
    hash: Option<&'a mut HashWriter>,
}

impl<R: Read> Read for Hashing<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let n = self.inner.read(buf)?;
        if let Some(h) = self.hash.as_deref_mut() {
            h.write_all(&buf[..n])?;
        }
        Ok(n)
    }
}

/// What reading a whole blob found out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BlobFacts {
    pub compression: Compression,
    /// The digest of the uncompressed bytes, for compressed blobs that decompress
    /// (the caller has the raw digest, which is the diff ID of an uncompressed blob).
    pub diff_id: Option<String>,
    /// [`tar_size`] when the (decompressed) blob is a tar.
    pub unpacked: Option<i64>,
}

/// Reads a whole blob through `tee`: tells its compression, diff ID and unpacked size.
/// The caller reads the raw digest from the tee.
pub fn hash_blob<R: Read>(tee: R) -> io::Result<BlobFacts> {
    let mut raw = BufReader::with_capacity(64 << 10, tee);
    let compression = sniff(&mut raw)?;
    let mut hash = HashWriter::default();
    let (decoded, unpacked) = {
        let mut plain = Hashing {
            inner: decompressed(&mut raw, compression),
            // The raw digest already is an uncompressed blob's diff ID.
            hash: (compression != Compression::None).then_some(&mut hash),
        };
        // A config or manifest is no tar: it just has no unpacked size.
        let unpacked = tar_size(&mut plain).ok();
        // What follows the tar (its end padding, or a blob that is no tar) is part of
        // the uncompressed bytes too.
        let decoded = match io::copy(&mut plain, &mut io::sink()) {
            Ok(_) => true,
            // Reading an uncompressed blob fails only when the upload does.
            Err(e) if compression == Compression::None => return Err(e),
            Err(_) => false,
        };
        (decoded, unpacked)
    };
    // What follows the compressed stream (or what failed to decompress) still belongs
    // to the blob.
    io::copy(&mut raw, &mut io::sink())?;
    let diff_id = (compression != Compression::None && decoded).then(|| hash.digest());
    Ok(BlobFacts {
        compression,
        diff_id,
        unpacked: if decoded { unpacked } else { None },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tee_hands_on_every_byte_and_hashes_the_compressed_and_plain_sides() {
        let plain = vec![7u8; 3 * CHUNK + 5];
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&plain).unwrap();
        let gz = gz.finish().unwrap();
        let mut got = Vec::new();
        let tee = Tee::new(gz.as_slice(), |b: Bytes| {
            got.extend_from_slice(&b);
            Ok(())
        });
        let mut tee = tee;
        let facts = hash_blob(&mut tee).unwrap();
        let (digest, size) = tee.finish().unwrap();
        assert_eq!(facts.compression, Compression::Gzip);
        assert_eq!(facts.diff_id, Some(crate::daemon::sha256_digest(&plain)));
        // Seven-filled bytes are no tar.
        assert_eq!(facts.unpacked, None);
        assert_eq!(digest, crate::daemon::sha256_digest(&gz));
        assert_eq!(size, gz.len() as u64);
        assert_eq!(got, gz);
    }
    fn read_all(data: &[u8]) -> (Compression, Vec<u8>) {
        let mut r = BufReader::new(data);
        let c = sniff(&mut r).unwrap();
        let mut out = Vec::new();
        decompressed(r, c).read_to_end(&mut out).unwrap();
        (c, out)
    }

    #[test]
    fn bzip2_and_xz_are_told_by_magic_and_decoded_as_the_tools_write_them() {
        // `printf 'hello xz\n' | xz -c`, as xz 5.4 writes it (CRC64 check).
        let xz = [
            0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00, 0x00, 0x04, 0xe6, 0xd6, 0xb4, 0x46, 0x02, 0x00,
            0x21, 0x01, 0x16, 0x00, 0x00, 0x00, 0x74, 0x2f, 0xe5, 0xa3, 0x01, 0x00, 0x08, 0x68,
            0x65, 0x6c, 0x6c, 0x6f, 0x20, 0x78, 0x7a, 0x0a, 0x00, 0x00, 0x00, 0x00, 0xc1, 0x49,
            0x3a, 0xfa, 0x63, 0x52, 0x14, 0x5a, 0x00, 0x01, 0x21, 0x09, 0x6c, 0x18, 0xc5, 0xd5,
            0x1f, 0xb6, 0xf3, 0x7d, 0x01, 0x00, 0x00, 0x00, 0x00, 0x04, 0x59, 0x5a,
        ];
        assert_eq!(read_all(&xz), (Compression::Xz, b"hello xz\n".to_vec()));
        // Two concatenated streams read as one, as `xz -d` does.
        let twice = [&xz[..], &xz[..]].concat();
        assert_eq!(read_all(&twice).1, b"hello xz\nhello xz\n".to_vec());
        let mut bz = bzip2::write::BzEncoder::new(Vec::new(), bzip2::Compression::fast());
        bz.write_all(b"hello bzip2\n").unwrap();
        let bz = bz.finish().unwrap();
        assert_eq!(
            read_all(&bz),
            (Compression::Bzip2, b"hello bzip2\n".to_vec())
        );
        assert_eq!(Compression::Bzip2.layer_media_type(), None);
        assert_eq!(read_all(b"plain").1, b"plain".to_vec());
        let mut broken = xz.to_vec();
        broken[30] ^= 0xff;
        let mut r = BufReader::new(&broken[..]);
        let c = sniff(&mut r).unwrap();
        assert!(decompressed(r, c).read_to_end(&mut Vec::new()).is_err());
    }

    #[test]
    fn a_layer_blob_tells_its_unpacked_size_plain_or_compressed() {
        let mut b = tar::Builder::new(Vec::new());
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(tar::EntryType::Directory);
        h.set_size(0);
        b.append_data(&mut h, "d", io::empty()).unwrap();
        let mut h = tar::Header::new_gnu();
        h.set_size(1000);
        b.append_data(&mut h, "d/f", &[b'x'; 1000][..]).unwrap();
        let tar = b.into_inner().unwrap();
        let facts = hash_blob(&tar[..]).unwrap();
        assert_eq!(
            (facts.compression, facts.diff_id),
            (Compression::None, None)
        );
        assert_eq!(facts.unpacked, Some(1000));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
        gz.write_all(&tar).unwrap();
        let facts = hash_blob(&gz.finish().unwrap()[..]).unwrap();
        assert_eq!(facts.diff_id, Some(crate::daemon::sha256_digest(&tar)));
        assert_eq!(facts.unpacked, Some(1000));
        assert_eq!(hash_blob(&b"{\"config\": 1}"[..]).unwrap().unpacked, None);
    }
}
