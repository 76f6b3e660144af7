//! The diff service's applier: unpacks a layer from the content store onto snapshot mounts.
//!
//! The layer (tar, or gzip- or zstd-compressed tar: detected by magic bytes, checked against
//! the media type) is applied
//! directly to the writable directory behind the mounts: the source of a bind mount, or the
//! upper dir of an overlay mount (whose lower dirs are consulted for the merged view). The
//! result is described by the digest and size of the uncompressed tar (the diff ID).

mod apply;
mod create;
mod resolve;
mod service;

pub use service::DiffService;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};

use berth_fsutil::zstd::{ZstdReader, MAGIC as ZSTD_MAGIC};
use sha2::{Digest, Sha256};

use crate::content::{ContentStore, Descriptor};
use crate::db::StoreError;
use crate::snapshots::Mount;
use resolve::Layers;

/// Media type of the applied (uncompressed) layer, as containerd reports it.
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];

/// Hashes and counts everything read or written through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R> Hashing<R> {
    fn new(inner: R) -> Hashing<R> {
        Hashing {
            inner,
            hash: Sha256::new(),
            size: 0,
        }
    }

    fn digest(&self) -> String {
        format!("sha256:{}", hex::encode(self.hash.clone().finalize()))
    }
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

impl<W: Write> Write for Hashing<W> {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> std::io::Result<()> {
        self.inner.flush()
    }
}

/// Appends to an ingest.
struct IngestSink(crate::content::Writer);

impl Write for IngestSink {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let at = self.0.offset();
        self.0.write_at(at, buf).map_err(std::io::Error::other)?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Label containerd puts on a compressed layer: the digest of its uncompressed tar.
pub const UNCOMPRESSED_LABEL: &str = "containerd.io/uncompressed";
/// Media type of Diff's output unless the request names one.
pub const MEDIA_TYPE_LAYER_GZIP: &str = "application/vnd.oci.image.layer.v1.tar+gzip";

/// Applies layers from a content store.
#[derive(Debug, Clone)]
pub struct Applier {
    content: ContentStore,
}

fn option<'a>(m: &'a Mount, key: &str) -> Option<&'a str> {
    m.options
        .iter()
        .find_map(|o| o.strip_prefix(key)?.strip_prefix('='))
}

/// Where to write for `mounts` (one writable bind or overlay mount).
fn target(mounts: &[Mount]) -> Result<Layers, StoreError> {
    let describe = || format!("{mounts:?}");
    let [m] = mounts else {
        return Err(StoreError::invalid(
            "mounts",
            describe(),
            "expected exactly one mount",
        ));
    };
    match m.kind.as_str() {
        "bind" | "rbind" => {
            if m.options.iter().any(|o| o == "ro") {
                return Err(StoreError::invalid(
                    "mounts",
                    describe(),
                    "mount is read-only",
                ));
            }
            Ok(Layers {
                upper: PathBuf::from(&m.source),
                lowers: Vec::new(),
                overlay: false,
            })
        }
        "overlay" => {
            let upper = option(m, "upperdir").ok_or_else(|| {
                StoreError::invalid(
                    "mounts",
                    describe(),
                    "overlay mount has no upperdir (read-only)",
                )
            })?;
            let lowers = option(m, "lowerdir")
                .map(|l| l.split(':').map(PathBuf::from).collect())
                .unwrap_or_default();
            Ok(Layers {
                upper: PathBuf::from(upper),
                lowers,
                overlay: true,
            })
        }
        other => Err(StoreError::invalid(
            "mount type",
            other,
            "layers can be applied to bind and overlay mounts only",
        )),
    }
}

impl Applier {
    pub fn new(content: ContentStore) -> Applier {
        Applier { content }
    }

    /// Flushes the filesystem holding the mounts' writable directory (Apply's `sync_fs`), so
    /// the unpacked files survive a power loss before the client commits the snapshot.
    pub fn sync_fs(&self, mounts: &[Mount]) -> Result<(), StoreError> {
        let layers = target(mounts)?;
        let dir =
            std::fs::File::open(&layers.upper).map_err(StoreError::io("open", &layers.upper))?;
        nix::unistd::syncfs(&dir).map_err(StoreError::sys("syncfs", &layers.upper))
    }

    /// containerd's Diff.Apply: returns the applied layer's descriptor (digest = diff ID).
    pub fn apply(
        &self,
        ns: &str,
        desc: &Descriptor,
        mounts: &[Mount],
    ) -> Result<Descriptor, StoreError> {
        let layers = target(mounts)?;
        if !layers.upper.is_dir() {
            return Err(StoreError::not_found(
                "mount source directory",
                layers.upper.display().to_string(),
            ));
        }
        let (file, size) = self.content.open_blob(ns, &desc.digest)?;
        if desc.size > 0 && u64::try_from(desc.size).ok() != Some(size) {
            return Err(StoreError::invalid(
                "descriptor size",
                desc.size.to_string(),
                "does not match the stored blob",
            ));
        }
        let layer_err = |source| StoreError::Layer {
            digest: desc.digest.clone(),
            source,
        };
        let mut buf = BufReader::new(file);
        let head = buf.fill_buf().map_err(layer_err)?.to_vec();
        let gzip = head.starts_with(GZIP_MAGIC);
        let zstd = head.starts_with(&ZSTD_MAGIC);
        let mismatch = if desc.media_type.ends_with("gzip") && !gzip {
            Some("media type says gzip but the blob is not gzip-compressed")
        } else if desc.media_type.ends_with("zstd") && !zstd {
            Some("media type says zstd but the blob is not zstd-compressed")
        } else {
            None
        };
        if let Some(reason) = mismatch {
            return Err(StoreError::invalid("layer", desc.digest.clone(), reason));
        }
        let plain: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(buf))
        } else if zstd {
            Box::new(ZstdReader::new(buf))
        } else {
            Box::new(buf)
        };
        let mut hashing = Hashing::new(plain);
        apply::apply_tar(&layers, &mut hashing).map_err(|e| match e {
            StoreError::Layer { source, .. } => layer_err(source),
            other => other,
        })?;
        // The diff ID covers the whole tar, including the end-of-archive padding.
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(layer_err)?;
        tracing::debug!(digest = %desc.digest, target = %layers.upper.display(), "applied layer");
        Ok(Descriptor {
            media_type: MEDIA_TYPE_LAYER.to_string(),
            digest: hashing.digest(),
            size: i64::try_from(hashing.size).unwrap_or(i64::MAX),
            annotations: Default::default(),
        })
    }
}

/// The directory trees a Diff request compares: `(lower, upper, upper is an overlay upper)`.
fn diff_dirs(
    left: &[Mount],
    right: &[Mount],
) -> Result<(Option<PathBuf>, PathBuf, bool), StoreError> {
    let unsupported = || {
        StoreError::invalid(
            "diff mounts",
            format!("{left:?} -> {right:?}"),
            "supported: an overlay with upperdir, or bind mounts (lower may be empty)",
        )
    };
    match right {
        [m] if m.kind == "overlay" => {
            // The upper dir holds exactly the changes over its lower dirs, which are what
            // the client passes as `left`.
            let upper = option(m, "upperdir").ok_or_else(unsupported)?;
            Ok((None, PathBuf::from(upper), true))
        }
        [m] if m.kind == "bind" || m.kind == "rbind" => {
            let lower = match left {
                [] => None,
                [l] if l.kind == "bind" || l.kind == "rbind" => Some(PathBuf::from(&l.source)),
                _ => return Err(unsupported()),
            };
            Ok((lower, PathBuf::from(&m.source), false))
        }
        _ => Err(unsupported()),
    }
}

static DIFF_REFS: AtomicU64 = AtomicU64::new(0);

impl Applier {
    /// containerd's Diff.Diff: writes the changes from `left` to `right` as a layer into the
    /// content store (gzip unless `media_type` names a plain tar) and returns its descriptor.
    pub fn diff(
        &self,
        ns: &str,
        left: &[Mount],
        right: &[Mount],
        media_type: &str,
        reference: &str,
        mut labels: BTreeMap<String, String>,
    ) -> Result<Descriptor, StoreError> {
        let media_type = if media_type.is_empty() {
            MEDIA_TYPE_LAYER_GZIP
        } else {
            media_type
        };
        let gzip = match media_type {
            MEDIA_TYPE_LAYER_GZIP | "application/vnd.docker.image.rootfs.diff.tar.gzip" => true,
            MEDIA_TYPE_LAYER | "application/vnd.docker.image.rootfs.diff.tar" => false,
            other => {
                return Err(StoreError::invalid(
                    "diff media type",
                    other,
                    "only tar and tar+gzip layers can be created",
                ))
            }
        };
        let (lower, upper, overlay) = diff_dirs(left, right)?;
        let changes = if overlay {
            create::overlay_changes(&upper)?
        } else {
            create::compare_changes(lower.as_deref(), &upper)?
        };
        let reference = if reference.is_empty() {
            let n = DIFF_REFS.fetch_add(1, Ordering::Relaxed);
            format!(
                "berth-diff-{}-{}-{n}",
                std::process::id(),
                chrono::Utc::now().timestamp_nanos_opt().unwrap_or(0)
            )
        } else {
            reference.to_string()
        };
        let writer = self.content.writer(ns, &reference, 0, "")?;
        let out = Hashing::new(IngestSink(writer));
        let write_err = |source| StoreError::Io {
            op: "write layer",
            path: upper.clone(),
            source,
        };
        let (diff_id, out) = if gzip {
            let mut tar = Hashing::new(flate2::write::GzEncoder::new(
                out,
                flate2::Compression::default(),
            ));
            create::write_tar(&upper, &changes, &mut tar)?;
            let diff_id = tar.digest();
            (diff_id, tar.inner.finish().map_err(write_err)?)
        } else {
            let mut out = out;
            create::write_tar(&upper, &changes, &mut out)?;
            (out.digest(), out)
        };
        let (digest, size) = (out.digest(), out.size);
        if gzip {
            labels.insert(UNCOMPRESSED_LABEL.to_string(), diff_id);
        }
        match out.inner.0.commit(size, &digest, labels) {
            // The same layer was made before: containerd answers with it too.
            Ok(_) | Err(StoreError::AlreadyExists { .. }) => {}
            Err(e) => return Err(e),
        }
        Ok(Descriptor {
            media_type: media_type.to_string(),
            digest,
            size: i64::try_from(size).unwrap_or(i64::MAX),
            annotations: BTreeMap::new(),
        })
    }
}

#[cfg(test)]
mod tests;
