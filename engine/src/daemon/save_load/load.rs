//! `docker load` from a stream: a blocking thread walks the tar as it arrives
//! ([`load_tar`]) while this side writes each file into highd's content store as it comes
//! (verified against the digest its path names). manifest.json or index.json may come
//! before or after the blobs, so the images are resolved at the end, from the documents
//! and from small blobs (configs, OCI manifests) read back from the store.

use std::collections::{HashMap, HashSet};

use futures::Stream;
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use super::load_tar::{self, Event, FileInfo, DOCUMENT_LIMIT};
use super::stream_io::ChannelReader;
use super::{blob_path, invalid, ArchiveError};
use crate::backend::{Backend, Descriptor};
use crate::daemon::{Daemon, DaemonError, DaemonResult};
use crate::refs::Reference;
use crate::types::ImageConfig;

/// What the archive held, once read.
#[derive(Default)]
struct Contents {
    documents: HashMap<String, Vec<u8>>,
    files: HashMap<String, FileInfo>,
    links: HashMap<String, String>,
    /// Files whose digest is not the one their `blobs/sha256/<hex>` name says: not stored.
    unstored: HashSet<String>,
}

/// One image to create: config path, layer paths, names.
type Wanted = (String, Vec<String>, Vec<String>);

impl Contents {
    fn file(&self, path: &str) -> DaemonResult<&FileInfo> {
        let mut p = load_tar::normalize(path);
        // A few hops at most; a loop of links is a broken archive.
        for _ in 0..8 {
            if let Some(f) = self.files.get(&p) {
                return Ok(f);
            }
            match self.links.get(&p) {
                Some(t) => p = t.clone(),
                None => break,
            }
        }
        Err(DaemonError::Archive(ArchiveError::Missing {
            path: path.into(),
        }))
    }

    /// A file that must be in the store: one whose name digest did not match was not
    /// stored.
    fn stored(&self, path: &str) -> DaemonResult<&FileInfo> {
        let f = self.file(path)?;
        let name = load_tar::normalize(path);
        if self.unstored.contains(&name) {
            return Err(invalid(format!(
                "{name} has digest {}, its name says {}",
                f.digest,
                load_tar::digest_of_path(&name).unwrap_or_default()
            )));
        }
        Ok(f)
    }
}

impl<B: Backend> Daemon<B> {
    /// `POST /images/load` from the request body as it arrives: returns dockerd's lines
    /// (`Loaded image: busybox:latest`).
    pub async fn load_stream<S>(&self, body: S) -> DaemonResult<Vec<String>>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + 'static,
    {
        self.leased("load", async {
            let contents = self.ingest_archive(body).await?;
            self.create_loaded(&contents).await
        })
        .await
    }

    /// Reads the whole archive into the content store; keeps only what it learnt.
    async fn ingest_archive<S>(&self, body: S) -> DaemonResult<Contents>
    where
        S: Stream<Item = std::io::Result<bytes::Bytes>> + Send + Unpin + 'static,
    {
        let reader = ChannelReader::spawn(body);
        let (tx, mut rx) = mpsc::channel(8);
        let walker = tokio::task::spawn_blocking(move || {
            let mut reader = reader;
            let walked = load_tar::walk(&mut reader, &tx);
            drop(tx);
            // Read the upload to its end, so the client gets the answer (an error)
            // instead of a broken pipe.
            let _ = std::io::copy(&mut reader, &mut std::io::sink());
            walked
        });
        let mut contents = Contents::default();
        let result = async {
            while let Some(ev) = rx.recv().await {
                match ev {
                    Event::Document { path, data } => {
                        contents.documents.insert(path, data);
                    }
                    Event::Link { path, target } => {
                        contents.links.insert(path, target);
                    }
                    Event::Begin {
                        path,
                        size,
                        expected,
                    } => {
                        let info = self.store_file(&path, size, &expected, &mut rx).await?;
                        if !expected.is_empty() && info.digest != expected {
                            contents.unstored.insert(path.clone());
                        }
                        contents.files.insert(path, info);
                    }
                    Event::Data(_) | Event::End(_) => {
                        return Err(invalid("archive reader out of step"));
                    }
                }
            }
            Ok(())
        }
        .await;
        // Stop the walker (its sends fail) before waiting for it.
        drop(rx);
        let walked = walker
            .await
            .map_err(|e| invalid(format!("archive reader: {e}")))?;
        // The walker's error says why the stream stopped; ours may only echo it.
        walked?;
        result?;
        Ok(contents)
    }

    /// Streams one file's events into the content store.
    async fn store_file(
        &self,
        path: &str,
        size: u64,
        expected: &str,
        rx: &mut mpsc::Receiver<Event>,
    ) -> DaemonResult<FileInfo> {
        let (chunk_tx, chunk_rx) = mpsc::channel::<std::io::Result<bytes::Bytes>>(4);
        let total = i64::try_from(size).map_err(|_| invalid(format!("{path}: size {size}")))?;
        let write = self.backend.content_write_stream(
            total,
            expected,
            Box::pin(ReceiverStream::new(chunk_rx)),
            HashMap::new(),
        );
        let forward = async move {
            let mut chunk_tx = Some(chunk_tx);
            loop {
                match rx.recv().await {
                    Some(Event::Data(b)) => {
                        if let Some(t) = &chunk_tx {
                            // The writer stops reading when the blob is already stored.
                            if t.send(Ok(b)).await.is_err() {
                                chunk_tx = None;
                            }
                        }
                    }
                    Some(Event::End(info)) => return Ok(info),
                    _ => {
                        if let Some(t) = chunk_tx {
                            let _ = t
                                .send(Err(std::io::Error::other("the archive ended early")))
                                .await;
                        }
                        return Err(invalid(format!("{path}: the archive ended early")));
                    }
                }
            }
        };
        let (written, info) = tokio::join!(write, forward);
        let info = info?;
        // highd refused a blob that is not what its name says, so nothing of it is kept;
        // the caller decides what that means (dockerd reports a layer's diff ID first).
        if expected.is_empty() || info.digest == expected {
            written?;
        }
        Ok(info)
    }

    /// A small JSON document of the archive: kept whole, or read back from the store.
    async fn document(&self, contents: &Contents, path: &str) -> DaemonResult<Vec<u8>> {
        if let Some(d) = contents.documents.get(&load_tar::normalize(path)) {
            return Ok(d.clone());
        }
        let f = contents.stored(path)?;
        if f.size > DOCUMENT_LIMIT {
            return Err(invalid(format!(
                "{path} is {} bytes, too big for a config or manifest",
                f.size
            )));
        }
        Ok(self.backend.content_read(&f.digest).await?)
    }

    async fn wanted(&self, contents: &Contents) -> DaemonResult<Vec<Wanted>> {
        let mut wanted = Vec::new();
        if let Some(m) = contents.documents.get("manifest.json") {
            let list: Vec<Value> =
                serde_json::from_slice(m).map_err(|e| invalid(format!("manifest.json: {e}")))?;
            let strs = |v: &Value| -> Vec<String> {
                v.as_array()
                    .map(|a| {
                        a.iter()
                            .filter_map(|x| x.as_str().map(String::from))
                            .collect()
                    })
                    .unwrap_or_default()
            };
            for e in list {
                let config = e["Config"].as_str().unwrap_or("").to_string();
                wanted.push((config, strs(&e["Layers"]), strs(&e["RepoTags"])));
            }
            return Ok(wanted);
        }
        let Some(i) = contents.documents.get("index.json") else {
            return Err(invalid("neither manifest.json nor index.json found"));
        };
        let index: Value =
            serde_json::from_slice(i).map_err(|e| invalid(format!("index.json: {e}")))?;
        let mut queue: Vec<Value> = index["manifests"].as_array().cloned().unwrap_or_default();
        while let Some(desc) = queue.pop() {
            let digest = desc["digest"].as_str().unwrap_or("");
            let m: Value =
                serde_json::from_slice(&self.document(contents, &blob_path(digest)).await?)
                    .map_err(|e| invalid(format!("manifest {digest}: {e}")))?;
            if let Some(children) = m["manifests"].as_array() {
                // An index: the entry for this platform (or the first).
                let arch = crate::build::exec::Img::scratch().config.architecture;
                let pick = children
                    .iter()
                    .find(|c| c["platform"]["architecture"] == arch.as_str())
                    .or_else(|| children.first());
                if let Some(c) = pick {
                    let mut c = c.clone();
                    c["annotations"] = desc["annotations"].clone();
                    queue.push(c);
                }
                continue;
            }
            let name = desc["annotations"]["io.containerd.image.name"]
                .as_str()
                .or_else(|| desc["annotations"]["org.opencontainers.image.ref.name"].as_str())
                .filter(|n| Reference::parse(n).is_ok())
                .map(|n| vec![n.to_string()])
                .unwrap_or_default();
            let mut layers = Vec::new();
            for l in m["layers"].as_array().into_iter().flatten() {
                layers.push(blob_path(l["digest"].as_str().unwrap_or("")));
            }
            let config = blob_path(m["config"]["digest"].as_str().unwrap_or(""));
            wanted.push((config, layers, name));
        }
        Ok(wanted)
    }

    /// Creates (unpacks and names) every image the archive's documents describe.
    async fn create_loaded(&self, contents: &Contents) -> DaemonResult<Vec<String>> {
        let mut out = Vec::new();
        for (config_path, layer_paths, names) in self.wanted(contents).await? {
            let config_bytes = self.document(contents, &config_path).await?;
            let config: ImageConfig = serde_json::from_slice(&config_bytes)
                .map_err(|e| invalid(format!("{config_path}: {e}")))?;
            if config.rootfs.diff_ids.len() != layer_paths.len() {
                return Err(DaemonError::Archive(ArchiveError::LayerCount {
                    layers: layer_paths.len(),
                    diff_ids: config.rootfs.diff_ids.len(),
                }));
            }
            let mut layers = Vec::new();
            for (index, (path, expected)) in
                layer_paths.iter().zip(&config.rootfs.diff_ids).enumerate()
            {
                let f = contents.file(path)?;
                let Some(media_type) = f.compression.layer_media_type() else {
                    return Err(DaemonError::Archive(ArchiveError::LayerCompression {
                        path: path.clone(),
                        compression: f.compression.name(),
                    }));
                };
                let Some(actual) = &f.diff_id else {
                    return Err(invalid(format!(
                        "{path}: not a valid {} stream",
                        f.compression.name()
                    )));
                };
                if actual != expected {
                    return Err(DaemonError::Archive(ArchiveError::DiffId {
                        index,
                        actual: actual.clone(),
                        expected: expected.clone(),
                    }));
                }
                contents.stored(path)?;
                if let Some(size) = f.unpacked {
                    self.record_layer_size(&f.digest, size).await;
                }
                layers.push(Descriptor {
                    media_type: media_type.into(),
                    digest: f.digest.clone(),
                    size: f.size as i64,
                    annotations: HashMap::new(),
                });
            }
            let diff_ids = config.rootfs.diff_ids.clone();
            let stored = self
                .write_image_raw(config_bytes, &diff_ids, &layers)
                .await?;
            let mut full = Vec::new();
            for n in &names {
                full.push(Reference::parse(n)?.with_default_tag());
            }
            let full_names: Vec<String> = full.iter().map(ToString::to_string).collect();
            self.name_new_image(&stored, &full_names).await?;
            if full.is_empty() {
                out.push(format!("Loaded image ID: {}", stored.id));
            }
            for r in full {
                self.event_log.image("load", &stored.id, &r.familiar());
                out.push(format!("Loaded image: {}", r.familiar()));
            }
        }
        Ok(out)
    }
}
