//! The diff service's applier: unpacks a layer from the content store onto snapshot mounts.
//!
//! The layer (tar, or gzip-compressed tar: detected by media type and magic bytes) is applied
//! directly to the writable directory behind the mounts: the source of a bind mount, or the
//! upper dir of an overlay mount (whose lower dirs are consulted for the merged view). The
//! result is described by the digest and size of the uncompressed tar (the diff ID).

mod apply;
mod resolve;
mod service;

pub use service::DiffService;

use std::io::{BufRead, BufReader, Read};
use std::path::PathBuf;

use sha2::{Digest, Sha256};

use crate::content::{ContentStore, Descriptor};
use crate::db::StoreError;
use crate::snapshots::Mount;
use resolve::Layers;

/// Media type of the applied (uncompressed) layer, as containerd reports it.
pub const MEDIA_TYPE_LAYER: &str = "application/vnd.oci.image.layer.v1.tar";

const GZIP_MAGIC: &[u8] = &[0x1f, 0x8b];
const ZSTD_MAGIC: &[u8] = &[0x28, 0xb5, 0x2f, 0xfd];

/// Hashes and counts everything read through it.
struct Hashing<R> {
    inner: R,
    hash: Sha256,
    size: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hash.update(&buf[..n]);
        self.size += n as u64;
        Ok(n)
    }
}

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
        if head.starts_with(ZSTD_MAGIC) || desc.media_type.ends_with("zstd") {
            return Err(StoreError::Unimplemented {
                what: "applying zstd-compressed layers",
            });
        }
        let gzip = head.starts_with(GZIP_MAGIC);
        if desc.media_type.ends_with("gzip") && !gzip {
            return Err(StoreError::invalid(
                "layer",
                desc.digest.clone(),
                "media type says gzip but the blob is not gzip-compressed",
            ));
        }
        let plain: Box<dyn Read> = if gzip {
            Box::new(flate2::read::MultiGzDecoder::new(buf))
        } else {
            Box::new(buf)
        };
        let mut hashing = Hashing {
            inner: plain,
            hash: Sha256::new(),
            size: 0,
        };
        apply::apply_tar(&layers, &mut hashing).map_err(|e| match e {
            StoreError::Layer { source, .. } => layer_err(source),
            other => other,
        })?;
        // The diff ID covers the whole tar, including the end-of-archive padding.
        std::io::copy(&mut hashing, &mut std::io::sink()).map_err(layer_err)?;
        tracing::debug!(digest = %desc.digest, target = %layers.upper.display(), "applied layer");
        Ok(Descriptor {
            media_type: MEDIA_TYPE_LAYER.to_string(),
            digest: format!("sha256:{}", hex::encode(hashing.hash.finalize())),
            size: i64::try_from(hashing.size).unwrap_or(i64::MAX),
            annotations: Default::default(),
        })
    }
}

#[cfg(test)]
mod tests;
