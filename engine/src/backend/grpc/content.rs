//! Streaming content: Content.Read as a stream of chunks and Content.Write fed from a
//! stream, so save, load and import never hold a whole blob in the engine.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use berth_proto::containerd::services::content::v1 as pb;
use bytes::Bytes;
use futures::StreamExt;
use pb::WriteAction;

use super::{GrpcBackend, CHUNK};
use crate::backend::{BackendError, BackendResult, ChunkStream, UploadStream};

/// Where a streamed write goes: its ingest ref and the offset of its first byte.
pub(crate) struct Ingest {
    pub reference: String,
    pub offset: u64,
    /// Kept when the data stream breaks, for a later resume.
    pub resumable: bool,
}

/// How the request stream ended, seen by the caller once highd has answered.
#[derive(Default)]
enum Ending {
    #[default]
    Running,
    Committed,
    Failed(String),
}

struct Pump {
    data: UploadStream,
    pending: Bytes,
    reference: String,
    total: i64,
    expected: String,
    offset: i64,
    labels: Option<HashMap<String, String>>,
    ending: Arc<Mutex<Ending>>,
}

impl Pump {
    fn write(&mut self, action: WriteAction, data: Bytes) -> pb::WriteContentRequest {
        let msg = pb::WriteContentRequest {
            action: action as i32,
            r#ref: self.reference.clone(),
            total: self.total,
            expected: self.expected.clone(),
            offset: self.offset,
            data: data.to_vec(),
            labels: HashMap::new(),
        };
        self.offset += data.len() as i64;
        msg
    }

    fn end(&self, ending: Ending) {
        *self.ending.lock().unwrap_or_else(|e| e.into_inner()) = ending;
    }

    /// The next message: a chunk of data, the commit after the last one, or nothing
    /// (after the commit, or to stop without committing).
    async fn next(&mut self) -> Option<pb::WriteContentRequest> {
        loop {
            if !self.pending.is_empty() {
                let n = self.pending.len().min(CHUNK);
                let chunk = self.pending.split_to(n);
                return Some(self.write(WriteAction::Write, chunk));
            }
            let labels = self.labels.take()?;
            match self.data.next().await {
                Some(Ok(b)) => {
                    self.pending = b;
                    self.labels = Some(labels);
                }
                Some(Err(e)) => {
                    self.end(Ending::Failed(e.to_string()));
                    return None;
                }
                None if self.total > 0 && self.offset != self.total => {
                    self.end(Ending::Failed(format!(
                        "the data ended after {} of {} bytes",
                        self.offset, self.total
                    )));
                    return None;
                }
                None => {
                    self.end(Ending::Committed);
                    let mut msg = self.write(WriteAction::Commit, Bytes::new());
                    msg.labels = labels;
                    return Some(msg);
                }
            }
        }
    }
}

impl GrpcBackend {
    pub(super) async fn read_stream(&self, digest: &str) -> BackendResult<ChunkStream> {
        let req = pb::ReadContentRequest {
            digest: digest.into(),
            offset: 0,
            size: 0,
        };
        let stream = self
            .content()
            .read(req)
            .await
            .map_err(self.err("content read"))?
            .into_inner();
        let address = self.address.clone();
        Ok(Box::pin(stream.map(move |r| {
            r.map(|m| Bytes::from(m.data))
                .map_err(|s| super::status_err("content read", &address, s))
        })))
    }

    pub(super) async fn info_labels(&self, digest: &str) -> BackendResult<HashMap<String, String>> {
        let info = self
            .content()
            .info(pb::InfoRequest {
                digest: digest.into(),
            })
            .await
            .map_err(self.err("content info"))?
            .into_inner()
            .info
            .unwrap_or_default();
        Ok(info.labels.into_iter().collect())
    }

    pub(super) async fn set_label(
        &self,
        digest: &str,
        key: &str,
        value: &str,
    ) -> BackendResult<()> {
        let req = pb::UpdateRequest {
            info: Some(pb::Info {
                digest: digest.into(),
                labels: [(key.to_string(), value.to_string())].into_iter().collect(),
                ..Default::default()
            }),
            update_mask: Some(prost_types::FieldMask {
                paths: vec![format!("labels.{key}")],
            }),
        };
        self.content()
            .update(req)
            .await
            .map(|_| ())
            .map_err(self.err("content update"))
    }

    pub(super) async fn write_stream(
        &self,
        total: i64,
        expected: &str,
        data: UploadStream,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        // A fresh ref per write: two loads of the same blob never lock each other out,
        // and the loser's commit finds the blob there (AlreadyExists, fine).
        let ingest = Ingest {
            reference: format!(
                "berth-engine-stream-{}",
                hex::encode(rand::random::<[u8; 8]>())
            ),
            offset: 0,
            resumable: false,
        };
        self.ingest(ingest, total, expected, data, labels).await
    }

    /// Content.Status of an ingest: its offset, 0 when highd has none by that name.
    pub(super) async fn ingest_offset(&self, reference: &str) -> BackendResult<u64> {
        match self
            .content()
            .status(pb::StatusRequest {
                r#ref: reference.into(),
            })
            .await
        {
            Ok(r) => Ok(r
                .into_inner()
                .status
                .map_or(0, |s| u64::try_from(s.offset).unwrap_or(0))),
            Err(s) if s.code() == tonic::Code::NotFound => Ok(0),
            Err(s) => Err(self.err("content status")(s)),
        }
    }

    pub(super) async fn ingest(
        &self,
        ingest: Ingest,
        total: i64,
        expected: &str,
        data: UploadStream,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        if !expected.is_empty() {
            match self
                .content()
                .info(pb::InfoRequest {
                    digest: expected.into(),
                })
                .await
            {
                Ok(_) => return Ok(()),
                Err(s) if s.code() == tonic::Code::NotFound => {}
                Err(s) => return Err(self.err("content info")(s)),
            }
        }
        let Ingest {
            reference,
            offset,
            resumable,
        } = ingest;
        let ending = Arc::new(Mutex::new(Ending::Running));
        let pump = Pump {
            data,
            pending: Bytes::new(),
            reference: reference.clone(),
            total,
            expected: expected.into(),
            offset: i64::try_from(offset).unwrap_or(0),
            labels: Some(labels),
            ending: ending.clone(),
        };
        let requests =
            futures::stream::unfold(pump, |mut p| async move { p.next().await.map(|m| (m, p)) });
        let result = self.drive_write(requests).await;
        let ending = std::mem::take(&mut *ending.lock().unwrap_or_else(|e| e.into_inner()));
        let committing = matches!(ending, Ending::Committed);
        let failure = match (result, ending) {
            (Ok(()), Ending::Committed) => return Ok(()),
            (Err(BackendError::AlreadyExists { .. }), _) => return Ok(()),
            (Err(e), _) => e,
            (Ok(()), Ending::Failed(message)) => BackendError::Failed {
                op: "content write",
                message,
            },
            (Ok(()), Ending::Running) => BackendError::Failed {
                op: "content write",
                message: "highd ended the write before the commit".into(),
            },
        };
        // A resumable ingest keeps the bytes of a broken transfer (and one another writer
        // holds is not ours to remove); only data that failed verification goes.
        if resumable && !committing {
            return Err(failure);
        }
        // Nothing half-written stays in highd's ingest area.
        if let Err(e) = self
            .content()
            .abort(pb::AbortRequest {
                r#ref: reference.clone(),
            })
            .await
        {
            if e.code() != tonic::Code::NotFound {
                tracing::warn!(%reference, error = %e, "cannot abort content ingest");
            }
        }
        Err(failure)
    }

    async fn drive_write(
        &self,
        requests: impl futures::Stream<Item = pb::WriteContentRequest> + Send + 'static,
    ) -> BackendResult<()> {
        let mut responses = self
            .content()
            .write(requests)
            .await
            .map_err(self.err("content write"))?
            .into_inner();
        while responses
            .message()
            .await
            .map_err(self.err("content write"))?
            .is_some()
        {}
        Ok(())
    }
}
