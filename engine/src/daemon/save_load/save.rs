//! `docker save`: the archive is planned first (every image resolved, every size known
//! from the descriptors), so errors are plain HTTP errors and the response can carry its
//! exact Content-Length; then it is streamed blob by blob from highd. A failure mid-way
//! ends the body short of that length, and the client sees a cut connection, never a
//! complete-looking tar.

use std::collections::{BTreeMap, HashSet};

use bytes::Bytes;
use futures::StreamExt;
use serde_json::json;
use tokio::sync::mpsc;

use super::{blob_path, ArchiveError};
use crate::backend::Backend;
use crate::daemon::{Daemon, DaemonError, DaemonResult};
use crate::refs::Reference;

const BLOCK: u64 = 512;

/// One file of the archive: bytes in hand (JSON documents) or a blob to stream.
#[derive(Debug)]
enum Entry {
    File {
        path: String,
        data: Vec<u8>,
    },
    Blob {
        path: String,
        digest: String,
        size: u64,
    },
}

impl Entry {
    fn path_size(&self) -> (&str, u64) {
        match self {
            Entry::File { path, data } => (path, data.len() as u64),
            Entry::Blob { path, size, .. } => (path, *size),
        }
    }
}

/// A `docker save` archive, resolved but not read yet.
#[derive(Debug)]
pub struct SavePlan {
    entries: Vec<Entry>,
}

fn padding(size: u64) -> u64 {
    (BLOCK - size % BLOCK) % BLOCK
}

fn write_err(message: impl Into<String>) -> DaemonError {
    DaemonError::Archive(ArchiveError::Write {
        source: std::io::Error::other(message.into()),
    })
}

fn header(path: &str, size: u64) -> DaemonResult<Bytes> {
    let mut h = tar::Header::new_ustar();
    h.set_path(path)
        .map_err(|source| DaemonError::Archive(ArchiveError::Write { source }))?;
    h.set_size(size);
    h.set_mode(0o644);
    h.set_mtime(0);
    h.set_entry_type(tar::EntryType::Regular);
    h.set_cksum();
    Ok(Bytes::copy_from_slice(h.as_bytes()))
}

impl SavePlan {
    /// The archive's exact size in bytes: a header and padded data per file, and the two
    /// zero blocks that end a tar.
    pub fn len(&self) -> u64 {
        let files: u64 = self
            .entries
            .iter()
            .map(|e| {
                let (_, size) = e.path_size();
                BLOCK + size + padding(size)
            })
            .sum();
        files + 2 * BLOCK
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    fn add_json(&mut self, path: &str, value: &serde_json::Value) {
        self.entries.push(Entry::File {
            path: path.into(),
            data: value.to_string().into_bytes(),
        });
    }
}

/// Sends `data`, failing when the client has gone.
async fn send(tx: &mpsc::Sender<Bytes>, data: Bytes) -> DaemonResult<()> {
    tx.send(data)
        .await
        .map_err(|_| write_err("the client closed the connection"))
}

impl<B: Backend> Daemon<B> {
    /// Resolves `refs` into the archive's entries: a docker-archive (manifest.json,
    /// repositories) that is also an OCI image layout (index.json, oci-layout), as
    /// dockerd 25+ writes it.
    pub async fn save_plan(&self, refs: &[String]) -> DaemonResult<SavePlan> {
        let mut plan = SavePlan {
            entries: Vec::new(),
        };
        let mut written: HashSet<String> = HashSet::new();
        let mut manifests = Vec::new();
        let mut index = Vec::new();
        let mut repositories: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        for r in refs {
            let img = self.image(r).await?;
            // A name saves that tag; an ID saves the image without names, like dockerd.
            let tag = Reference::parse(r)
                .ok()
                .map(Reference::with_default_tag)
                .filter(|p| img.names.contains(&p.to_string()));
            // The manifest and config are small documents: read now, so their sizes
            // are known (the config's is not in the image view).
            for d in [&img.target.digest, &img.id] {
                if written.insert(d.clone()) {
                    let data = self.backend.content_read(d).await?;
                    plan.entries.push(Entry::File {
                        path: blob_path(d),
                        data,
                    });
                }
            }
            for l in &img.layers {
                if written.insert(l.digest.clone()) {
                    let size = u64::try_from(l.size).map_err(|_| {
                        write_err(format!("layer {} has size {}", l.digest, l.size))
                    })?;
                    plan.entries.push(Entry::Blob {
                        path: blob_path(&l.digest),
                        digest: l.digest.clone(),
                        size,
                    });
                }
            }
            let layers: Vec<String> = img.layers.iter().map(|l| blob_path(&l.digest)).collect();
            let repo_tags: Vec<String> = tag.iter().map(Reference::familiar).collect();
            manifests.push(json!({
                "Config": blob_path(&img.id),
                "RepoTags": repo_tags,
                "Layers": layers,
            }));
            let mut entry = json!({
                "mediaType": img.target.media_type,
                "digest": img.target.digest,
                "size": img.target.size,
            });
            if let Some(t) = &tag {
                entry["annotations"] = json!({
                    "io.containerd.image.name": t.to_string(),
                    "org.opencontainers.image.ref.name": t.tag.clone().unwrap_or_default(),
                });
                if let Some(top) = img.layers.last() {
                    let fam = t.familiar();
                    let repo = fam.rsplit_once(':').map_or(fam.as_str(), |(n, _)| n);
                    repositories.entry(repo.to_string()).or_default().insert(
                        t.tag.clone().unwrap_or_default(),
                        top.digest.trim_start_matches("sha256:").to_string(),
                    );
                }
            }
            index.push(entry);
        }
        plan.add_json("oci-layout", &json!({"imageLayoutVersion": "1.0.0"}));
        plan.add_json(
            "index.json",
            &json!({
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.index.v1+json",
                "manifests": index,
            }),
        );
        plan.add_json("manifest.json", &json!(manifests));
        if !repositories.is_empty() {
            plan.add_json("repositories", &json!(repositories));
        }
        Ok(plan)
    }

    /// Writes the archive of `plan` into `tx`, one blob at a time: the engine holds at
    /// most the channel's chunks plus one chunk from highd.
    pub async fn save_stream(&self, plan: SavePlan, tx: mpsc::Sender<Bytes>) -> DaemonResult<()> {
        let zeros = Bytes::from_static(&[0u8; BLOCK as usize]);
        for entry in plan.entries {
            let (path, size) = entry.path_size();
            send(&tx, header(path, size)?).await?;
            match entry {
                Entry::File { data, .. } => send(&tx, Bytes::from(data)).await?,
                Entry::Blob { digest, size, .. } => {
                    let mut chunks = self.backend.content_read_stream(&digest).await?;
                    let mut sent = 0u64;
                    while let Some(chunk) = chunks.next().await {
                        let chunk = chunk?;
                        sent += chunk.len() as u64;
                        if sent > size {
                            break;
                        }
                        send(&tx, chunk).await?;
                    }
                    if sent != size {
                        return Err(write_err(format!(
                            "blob {digest} has {sent} bytes in the content store, its descriptor says {size}"
                        )));
                    }
                }
            }
            let pad = padding(size) as usize;
            if pad > 0 {
                send(&tx, zeros.slice(..pad)).await?;
            }
        }
        send(&tx, zeros.clone()).await?;
        send(&tx, zeros).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn planned_length_matches_what_tar_writes() {
        let plan = SavePlan {
            entries: vec![
                Entry::File {
                    path: "a".into(),
                    data: vec![1; 700],
                },
                Entry::File {
                    path: "b".into(),
                    data: vec![],
                },
                Entry::File {
                    path: "c".into(),
                    data: vec![2; 1024],
                },
            ],
        };
        let mut b = tar::Builder::new(Vec::new());
        for (p, n) in [("a", 700), ("b", 0), ("c", 1024)] {
            let mut h = tar::Header::new_ustar();
            h.set_size(n as u64);
            b.append_data(&mut h, p, vec![0u8; n].as_slice()).unwrap();
        }
        assert_eq!(plan.len(), b.into_inner().unwrap().len() as u64);
    }
}
