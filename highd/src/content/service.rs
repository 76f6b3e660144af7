//! `containerd.services.content.v1.Content` over the [`ContentStore`].

use std::collections::BTreeMap;
use std::io::{Read, Seek, SeekFrom};
use std::sync::Arc;

use berth_proto::containerd::services::content::v1 as pb;
use pb::content_server::Content;
use pb::WriteAction;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

use super::{ContentStore, Info, IngestStatus, Writer};
use crate::db::filter::Filter;
use crate::db::{self, blocking, StoreError};
use crate::gc::Gc;

/// Bytes per Read response (containerd streams 1 MiB chunks).
const CHUNK: usize = 1 << 20;
/// Infos per List response (containerd batches 100).
const BATCH: usize = 100;

/// The content service.
#[derive(Clone, Debug)]
pub struct ContentService {
    store: ContentStore,
    gc: Arc<Gc>,
    events: db::Publisher,
}

impl ContentService {
    pub fn new(store: ContentStore, gc: Arc<Gc>, events: db::Publisher) -> ContentService {
        ContentService { store, gc, events }
    }
}

fn i64_of(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn info_to_pb(i: Info) -> pb::Info {
    pb::Info {
        digest: i.digest,
        size: i64_of(i.size),
        created_at: Some(db::timestamp(i.created_at)),
        updated_at: Some(db::timestamp(i.updated_at)),
        labels: i.labels.into_iter().collect(),
    }
}

fn status_to_pb(s: IngestStatus) -> pb::Status {
    pb::Status {
        started_at: Some(db::timestamp(s.started_at)),
        updated_at: Some(db::timestamp(s.updated_at)),
        r#ref: s.reference,
        offset: i64_of(s.offset),
        total: i64_of(s.total),
        expected: s.expected,
    }
}

fn u64_arg(what: &'static str, v: i64) -> Result<u64, StoreError> {
    u64::try_from(v).map_err(|_| StoreError::invalid(what, v.to_string(), "must not be negative"))
}

type Sender<T> = mpsc::Sender<Result<T, Status>>;

/// Runs one Write stream to its end (commit, error or client hang-up).
async fn write_loop(
    store: ContentStore,
    ns: String,
    lease: Option<String>,
    mut input: Streaming<pb::WriteContentRequest>,
    tx: &Sender<pb::WriteContentResponse>,
) -> Result<(), Status> {
    let Some(first) = input.message().await? else {
        return Ok(());
    };
    if first.r#ref.is_empty() {
        return Err(
            StoreError::invalid("ref", "", "the first write message must name a ref").into(),
        );
    }
    if let Some(lease) = &lease {
        crate::leases::check(store.db(), &ns, lease)?;
    }
    let (s, n, r, total, expected) = (
        store.clone(),
        ns.clone(),
        first.r#ref.clone(),
        first.total,
        first.expected.clone(),
    );
    let mut writer: Writer =
        blocking(move || s.writer(&n, &r, u64_arg("total", total)?, &expected)).await?;
    let mut next = Some(first);
    while let Some(req) = next.take() {
        let action = WriteAction::try_from(req.action).map_err(|_| {
            StoreError::invalid(
                "write action",
                req.action.to_string(),
                "expected STAT, WRITE or COMMIT",
            )
        })?;
        let (w, result) = tokio::task::spawn_blocking(move || {
            let mut w = writer;
            let r = step(&mut w, &req, action);
            (w, r.map(|resp| (resp, req)))
        })
        .await
        .map_err(StoreError::from)?;
        writer = w;
        let (mut resp, req) = result?;
        if action == WriteAction::Commit {
            let labels: BTreeMap<String, String> = req.labels.into_iter().collect();
            let (total, expected) = (u64_arg("total", req.total)?, req.expected);
            let digest = blocking(move || writer.commit(total, &expected, labels)).await?;
            if let Some(lease) = lease {
                let res = crate::leases::Resource {
                    id: digest.clone(),
                    kind: "content".into(),
                };
                crate::leases::change_resource(store.db(), &ns, &lease, res, true)?;
            }
            resp.digest = digest;
            // The client stops listening after the commit answer.
            let _ = tx.send(Ok(resp)).await;
            return Ok(());
        }
        if tx.send(Ok(resp)).await.is_err() {
            return Ok(());
        }
        next = input.message().await?;
    }
    Ok(())
}

/// Applies one STAT or WRITE (or the data part of a COMMIT) message.
fn step(
    w: &mut Writer,
    req: &pb::WriteContentRequest,
    action: WriteAction,
) -> Result<pb::WriteContentResponse, StoreError> {
    w.set_total(u64_arg("total", req.total)?)?;
    w.set_expected(&req.expected)?;
    if action != WriteAction::Stat && !req.data.is_empty() {
        w.write_at(u64_arg("offset", req.offset)?, &req.data)?;
    }
    let st = w.status()?;
    Ok(pb::WriteContentResponse {
        action: action as i32,
        started_at: Some(db::timestamp(st.started_at)),
        updated_at: Some(db::timestamp(st.updated_at)),
        offset: i64_of(st.offset),
        total: i64_of(st.total),
        digest: String::new(),
    })
}

fn read_loop(
    store: &ContentStore,
    ns: &str,
    req: &pb::ReadContentRequest,
    tx: &Sender<pb::ReadContentResponse>,
) -> Result<(), StoreError> {
    let (mut f, total) = store.open_blob(ns, &req.digest)?;
    let offset = u64_arg("offset", req.offset)?;
    if offset > total {
        return Err(StoreError::invalid(
            "read offset",
            req.offset.to_string(),
            "beyond the end of the blob",
        ));
    }
    let size = u64_arg("size", req.size)?;
    let mut left = if size == 0 {
        total - offset
    } else {
        size.min(total - offset)
    };
    let path = store.blob_path(&req.digest)?;
    f.seek(SeekFrom::Start(offset))
        .map_err(StoreError::io("seek blob", &path))?;
    let mut at = offset;
    while left > 0 {
        let mut buf = vec![0u8; usize::try_from(left).unwrap_or(CHUNK).min(CHUNK)];
        let n = f
            .read(&mut buf)
            .map_err(StoreError::io("read blob", &path))?;
        if n == 0 {
            break;
        }
        buf.truncate(n);
        let msg = pb::ReadContentResponse {
            offset: i64_of(at),
            data: buf,
        };
        if tx.blocking_send(Ok(msg)).is_err() {
            break;
        }
        at += n as u64;
        left -= n as u64;
    }
    Ok(())
}

#[tonic::async_trait]
impl Content for ContentService {
    async fn info(
        &self,
        req: Request<pb::InfoRequest>,
    ) -> Result<Response<pb::InfoResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let info = self.store.info(&ns, &req.into_inner().digest)?;
        Ok(Response::new(pb::InfoResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    async fn update(
        &self,
        req: Request<pb::UpdateRequest>,
    ) -> Result<Response<pb::UpdateResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        let i = req.info.unwrap_or_default();
        let new = Info {
            digest: i.digest,
            size: 0,
            labels: i.labels.into_iter().collect(),
            created_at: db::from_timestamp(None),
            updated_at: db::from_timestamp(None),
        };
        let info = self
            .store
            .update(&ns, &new, &db::mask_paths(req.update_mask))?;
        Ok(Response::new(pb::UpdateResponse {
            info: Some(info_to_pb(info)),
        }))
    }

    type ListStream =
        tokio_stream::Iter<std::vec::IntoIter<Result<pb::ListContentResponse, Status>>>;

    async fn list(
        &self,
        req: Request<pb::ListContentRequest>,
    ) -> Result<Response<Self::ListStream>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let filter = Filter::parse(&req.into_inner().filters)?;
        let infos: Vec<pb::Info> = self
            .store
            .list(&ns, &filter)?
            .into_iter()
            .map(info_to_pb)
            .collect();
        let batches: Vec<_> = infos
            .chunks(BATCH)
            .map(|c| Ok(pb::ListContentResponse { info: c.to_vec() }))
            .collect();
        Ok(Response::new(tokio_stream::iter(batches)))
    }

    async fn delete(&self, req: Request<pb::DeleteContentRequest>) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let digest = req.into_inner().digest;
        let (store, n, d) = (self.store.clone(), ns.clone(), digest.clone());
        blocking(move || store.delete(&n, &d)).await?;
        let event = berth_proto::containerd::events::ContentDelete { digest };
        self.events.emit(&ns, event);
        self.gc.after_delete(false).await?;
        Ok(Response::new(()))
    }

    type ReadStream = ReceiverStream<Result<pb::ReadContentResponse, Status>>;

    async fn read(
        &self,
        req: Request<pb::ReadContentRequest>,
    ) -> Result<Response<Self::ReadStream>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let req = req.into_inner();
        // Fail before streaming when the blob is not there, so the client gets a plain error.
        self.store.info(&ns, &req.digest)?;
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        tokio::task::spawn_blocking(move || {
            if let Err(e) = read_loop(&store, &ns, &req, &tx) {
                let _ = tx.blocking_send(Err(e.into()));
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn status(
        &self,
        req: Request<pb::StatusRequest>,
    ) -> Result<Response<pb::StatusResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let st = self.store.status(&ns, &req.into_inner().r#ref)?;
        Ok(Response::new(pb::StatusResponse {
            status: Some(status_to_pb(st)),
        }))
    }

    async fn list_statuses(
        &self,
        req: Request<pb::ListStatusesRequest>,
    ) -> Result<Response<pb::ListStatusesResponse>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let filter = Filter::parse(&req.into_inner().filters)?;
        let statuses = self.store.list_statuses(&ns, &filter)?;
        Ok(Response::new(pb::ListStatusesResponse {
            statuses: statuses.into_iter().map(status_to_pb).collect(),
        }))
    }

    type WriteStream = ReceiverStream<Result<pb::WriteContentResponse, Status>>;

    async fn write(
        &self,
        req: Request<Streaming<pb::WriteContentRequest>>,
    ) -> Result<Response<Self::WriteStream>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        let lease = crate::leases::from_request(&req);
        let input = req.into_inner();
        let (tx, rx) = mpsc::channel(4);
        let store = self.store.clone();
        tokio::spawn(async move {
            if let Err(status) = write_loop(store, ns, lease, input, &tx).await {
                let _ = tx.send(Err(status)).await;
            }
        });
        Ok(Response::new(ReceiverStream::new(rx)))
    }

    async fn abort(&self, req: Request<pb::AbortRequest>) -> Result<Response<()>, Status> {
        let ns = berth_proto::namespace_from_request(&req)?;
        self.store.abort(&ns, &req.into_inner().r#ref)?;
        Ok(Response::new(()))
    }
}
