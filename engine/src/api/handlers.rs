//! One function per route: decode the body, call the daemon, shape dockerd's response.

use std::sync::Arc;

use bytes::Bytes;
use http::{header, HeaderValue, Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use serde_json::json;
use tokio::io::AsyncWriteExt;
use tokio::sync::mpsc;

use super::route::{self, decode_json, ImageCreate, Route};
use super::system;
use super::{
    channel_body, empty, error_response, json_response, streams, typed_response, ApiError, Body,
};
use crate::backend::Backend;
use crate::daemon::{self, Daemon, DaemonError, StdinSink};
use crate::stdcopy::{MULTIPLEXED_CONTENT_TYPE, RAW_CONTENT_TYPE};
use crate::types::{CreateRequest, ExecConfig, ExecStartConfig};

pub async fn handle<B: Backend>(daemon: Arc<Daemon<B>>, req: Request<Incoming>) -> Response<Body> {
    let method = req.method().clone();
    let path = req.uri().path().to_string();
    let result = match route::parse(&method, &path, req.uri().query()) {
        Ok(parsed) => dispatch(daemon, parsed.route, req).await,
        Err(e) => Err(e),
    };
    let mut resp = result.unwrap_or_else(|e| {
        if e.status.is_server_error() {
            tracing::error!(%method, %path, error = %e.message, "request failed");
        } else {
            tracing::debug!(%method, %path, status = %e.status, error = %e.message, "request refused");
        }
        error_response(&e)
    });
    let h = resp.headers_mut();
    h.insert("Api-Version", HeaderValue::from_static("1.50"));
    h.insert(
        header::SERVER,
        HeaderValue::from_static("Docker/28.0.0-berth (linux)"),
    );
    h.insert("Docker-Experimental", HeaderValue::from_static("false"));
    h.insert("Ostype", HeaderValue::from_static("linux"));
    resp
}

/// JSON request bodies are small; anything bigger is a mistake or an attack.
const JSON_BODY_LIMIT: usize = 16 << 20;
/// The API version from which dockerd ignores `KernelMemory` without a word.
const API_1_42: super::version::ApiVersion = super::version::ApiVersion {
    major: 1,
    minor: 42,
};
type UploadBody = crate::backend::UploadStream;

async fn read_limited(body: Incoming, limit: usize) -> Result<Bytes, ApiError> {
    http_body_util::Limited::new(body, limit)
        .collect()
        .await
        .map(|c| c.to_bytes())
        .map_err(|e| {
            if e.is::<http_body_util::LengthLimitError>() {
                ApiError::new(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("request body is larger than {limit} bytes"),
                )
            } else {
                ApiError::bad_request(format!("read request body: {e}"))
            }
        })
}

/// dockerd's `CheckForJSON`: a body must be declared as JSON (no header is fine only
/// without a body).
fn check_json(headers: &http::HeaderMap) -> Result<(), ApiError> {
    let ct = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let has_body = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .is_none_or(|l| l != "0");
    let media = ct.split(';').next().unwrap_or("").trim();
    if (ct.is_empty() && !has_body) || media.eq_ignore_ascii_case("application/json") {
        return Ok(());
    }
    Err(ApiError::bad_request(format!(
        "unsupported Content-Type header ({ct}): must be 'application/json'"
    )))
}

async fn body_bytes(req: Request<Incoming>) -> Result<Bytes, ApiError> {
    read_limited(req.into_body(), JSON_BODY_LIMIT).await
}

/// Runs a state-changing operation on its own task, so it completes even when the client
/// hangs up mid-request (hyper then drops the request future): half of a start or a
/// remove must never be left behind in highd.
async fn detached<B, T, F, Fut>(d: &Arc<Daemon<B>>, f: F) -> Result<T, ApiError>
where
    B: Backend,
    T: Send + 'static,
    F: FnOnce(Arc<Daemon<B>>) -> Fut,
    Fut: std::future::Future<Output = Result<T, DaemonError>> + Send + 'static,
{
    run_to_end(f(Arc::clone(d))).await?.map_err(ApiError::from)
}

/// Runs `fut` as a task of its own, so it finishes even when the client hangs up and
/// hyper drops the request future; a panic in it becomes a 500.
pub(super) async fn run_to_end<T, Fut>(fut: Fut) -> Result<T, ApiError>
where
    T: Send + 'static,
    Fut: std::future::Future<Output = T> + Send + 'static,
{
    tokio::spawn(fut).await.map_err(|e| {
        ApiError::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("operation aborted: {e}"),
        )
    })
}

fn log_error(e: crate::jsonlog::JsonLogError) -> ApiError {
    ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string())
}

fn no_content() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NO_CONTENT;
    r
}

fn not_modified() -> Response<Body> {
    let mut r = Response::new(empty());
    *r.status_mut() = StatusCode::NOT_MODIFIED;
    r
}

async fn dispatch<B: Backend>(
    d: Arc<Daemon<B>>,
    route: Route,
    req: Request<Incoming>,
) -> Result<Response<Body>, ApiError> {
    let r = match route {
        Route::Images(r) => return super::images_api::dispatch(d, r, req).await,
        Route::Archive(r) => return super::archive_api::dispatch(d, r, req).await,
        Route::Ping { head } => system::ping(head),
        Route::Version => json_response(StatusCode::OK, &system::version()),
        Route::Info => json_response(StatusCode::OK, &system::info(&d).await),
        Route::NetworkList { filters } => {
            json_response(StatusCode::OK, &super::networks::list(&d, &filters)?)
        }
        Route::NetworkCreate
        | Route::NetworkRemove { .. }
        | Route::NetworkPrune { .. }
        | Route::NetworkConnect { .. }
        | Route::NetworkDisconnect { .. } => {
            let body = body_bytes(req).await?;
            // Detached like `detached`: a half-made network or endpoint is never left
            // because the client hung up.
            run_to_end(super::networks::change(Arc::clone(&d), route, body)).await??
        }
        Route::NetworkInspect { id } => {
            json_response(StatusCode::OK, &super::networks::inspect(&d, &id)?)
        }
        Route::ImageCreate(ImageCreate::Pull { image, tag }) => {
            return crate::registry::api::pull_response(d, &image, &tag, req.headers()).await;
        }
        Route::ImagePush { name, tag } => {
            return crate::registry::api::push_response(d, &name, &tag, req.headers()).await;
        }
        Route::Auth => return crate::registry::api::login(&body_bytes(req).await?).await,
        Route::Events {
            since,
            until,
            filters,
        } => {
            use crate::events_api as ev;
            let bad = |e: ev::EventsError| ApiError::bad_request(e.to_string());
            let filters = ev::EventFilters::parse(&filters).map_err(bad)?;
            let since = ev::parse_time(&since).map_err(bad)?;
            let until = ev::parse_time(&until).map_err(bad)?;
            typed_response(
                channel_body(ev::stream(&d.event_log, since, until, filters)),
                "application/json",
            )
        }
        Route::ImageCreate(ImageCreate::Import {
            src,
            repo,
            tag,
            message,
            changes,
        }) => {
            let changes = match crate::build::meta::parse_changes(&changes) {
                Ok(c) => c,
                Err(e) => {
                    // Read the upload to its end first: answering while the client still
                    // sends would show it a broken pipe instead of the error.
                    if src == "-" {
                        let mut rest = super::images_api::upload(req.into_body());
                        while let Some(Ok(_)) = futures::StreamExt::next(&mut rest).await {}
                    }
                    return Err(ApiError::bad_request(e.to_string()));
                }
            };
            let body: UploadBody = if src == "-" {
                Box::pin(super::images_api::upload(req.into_body()))
            } else {
                super::images_api::download_upload(&src, &d.config.exec_root)
                    .await
                    .map_err(|e| ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?
            };
            let id = detached(&d, move |d| async move {
                d.import_image_with(&repo, &tag, body, &message, &changes)
                    .await
            })
            .await?;
            json_response(StatusCode::OK, &json!({ "status": id }))
        }
        Route::ImageTag { name, repo, tag } => {
            detached(
                &d,
                move |d| async move { d.tag_image(&name, &repo, &tag).await },
            )
            .await?;
            let mut r = Response::new(empty());
            *r.status_mut() = StatusCode::CREATED;
            r
        }
        Route::ImageRemove { name, force } => {
            let gone = detached(
                &d,
                move |d| async move { d.remove_image(&name, force).await },
            )
            .await?;
            let list: Vec<_> = gone
                .into_iter()
                .map(|g| match g {
                    daemon::ImageDeleted::Untagged(n) => json!({ "Untagged": n }),
                    daemon::ImageDeleted::Deleted(id) => json!({ "Deleted": id }),
                })
                .collect();
            json_response(StatusCode::OK, &json!(list))
        }
        Route::ContainerPrune { filters } => {
            let (f, _) = super::filters::PruneFilters::parse(
                &filters,
                &["label", "label!", "until"],
                |_, _| Ok(()),
            )?;
            let ids = detached(&d, move |d| async move {
                d.prune_containers(move |c| f.selects(&c.config.labels, Some(c.created)))
                    .await
            })
            .await?;
            json_response(
                StatusCode::OK,
                &json!({"ContainersDeleted": ids, "SpaceReclaimed": 0}),
            )
        }
        Route::ImageInspect { name } => {
            let img = d.image_with_names(&name).await?;
            let mut v = daemon::image_inspect(&img);
            v["Parent"] = json!(d.image_parent(&img.id).await);
            json_response(StatusCode::OK, &v)
        }
        Route::ContainerCreate { name } => {
            check_json(req.headers())?;
            let (version, _) = super::version::split_version(req.uri().path())?;
            let mut body: CreateRequest = decode_json(&body_bytes(req).await?)?;
            // dockerd ignores StartInterval from clients older than API 1.44.
            if version
                < (super::version::ApiVersion {
                    major: 1,
                    minor: 44,
                })
            {
                crate::daemon::health_api::drop_start_interval(&mut body.config.extra);
            }
            let warnings =
                daemon::discard_kernel_memory(&mut body.host_config.extra, version < API_1_42);
            let id = detached(&d, move |d| async move {
                d.create_container(name.as_deref(), body).await
            })
            .await?;
            json_response(
                StatusCode::CREATED,
                &json!({"Id": id, "Warnings": warnings}),
            )
        }
        Route::ContainerList {
            all,
            limit,
            filters,
        } => {
            let all = all || filters.has_status();
            let now = chrono::Utc::now();
            let everything = d.store.list();
            let link_names = crate::network::links::names_by_target(&everything);
            let mut recs: Vec<_> = everything
                .into_iter()
                .filter(|r| (all || r.state.is_up()) && filters.matches(r))
                .collect();
            recs.sort_by_key(|r| std::cmp::Reverse(r.created));
            if let Some(l) = limit {
                recs.truncate(l);
            }
            let list: Vec<_> = recs
                .iter()
                .map(|r| {
                    let mut v = daemon::container_summary(r, now);
                    crate::network::links::add_names(&mut v, &link_names);
                    v
                })
                .collect();
            json_response(StatusCode::OK, &json!(list))
        }
        Route::ContainerInspect { id } => {
            let rec = d.container(&id)?;
            let mut v = daemon::container_inspect(&rec);
            v["NetworkSettings"] = d.network_settings(&rec.id, &rec.host_config.network_mode);
            json_response(StatusCode::OK, &v)
        }
        Route::ContainerStart { id } => {
            if detached(&d, move |d| async move { d.start_container(&id).await }).await? {
                no_content()
            } else {
                not_modified()
            }
        }
        Route::ContainerRestart {
            id,
            timeout,
            signal,
        } => {
            detached(&d, move |d| async move {
                d.restart_container(&id, timeout, signal.as_deref()).await
            })
            .await?;
            no_content()
        }
        Route::ContainerStop {
            id,
            timeout,
            signal,
        } => {
            if detached(&d, move |d| async move {
                d.stop_container(&id, timeout, signal.as_deref()).await
            })
            .await?
            {
                no_content()
            } else {
                not_modified()
            }
        }
        Route::ContainerKill { id, signal } => {
            detached(&d, move |d| async move {
                d.kill_container(&id, signal.as_deref()).await
            })
            .await?;
            no_content()
        }
        Route::ContainerPause { id } => {
            detached(&d, move |d| async move { d.pause_container(&id).await }).await?;
            no_content()
        }
        Route::ContainerUnpause { id } => {
            detached(&d, move |d| async move { d.unpause_container(&id).await }).await?;
            no_content()
        }
        Route::ContainerRename { id, name } => {
            detached(
                &d,
                move |d| async move { d.rename_container(&id, &name).await },
            )
            .await?;
            no_content()
        }
        Route::ContainerUpdate { id } => {
            check_json(req.headers())?;
            let (version, _) = super::version::split_version(req.uri().path())?;
            let mut body: serde_json::Map<String, serde_json::Value> =
                decode_json(&body_bytes(req).await?)?;
            let mut kmem = daemon::discard_kernel_memory(&mut body, version < API_1_42);
            let update = daemon::UpdateRequest::from_map(&body)
                .map_err(|e| ApiError::bad_request(format!("invalid JSON: {e}")))?;
            let warnings = detached(
                &d,
                move |d| async move { d.update_container(&id, update).await },
            )
            .await?;
            kmem.extend(warnings);
            json_response(StatusCode::OK, &json!({ "Warnings": kmem }))
        }
        Route::ContainerRemove { id, force, volumes } => {
            detached(&d, move |d| async move {
                d.remove_container(&id, force, volumes).await
            })
            .await?;
            no_content()
        }
        Route::VolumeList { filters } => {
            json_response(StatusCode::OK, &super::volumes::list(&d, &filters)?)
        }
        Route::VolumeCreate => {
            check_json(req.headers())?;
            let opts: crate::volumes::CreateOptions = decode_json(&body_bytes(req).await?)?;
            let (v, _) = d.volumes.create(opts).map_err(DaemonError::from)?;
            json_response(StatusCode::CREATED, &d.volumes.view(&v, false))
        }
        Route::VolumeInspect { name } => {
            let v = d.volumes.get(&name).map_err(DaemonError::from)?;
            json_response(StatusCode::OK, &d.volumes.view(&v, false))
        }
        Route::VolumeRemove { name, force } => {
            d.volumes.remove(&name, force).map_err(DaemonError::from)?;
            no_content()
        }
        Route::VolumePrune {
            filters,
            anonymous_only,
        } => json_response(
            StatusCode::OK,
            &super::volumes::prune(&d, &filters, anonymous_only)?,
        ),
        Route::SystemDf {
            types,
            before_1_42,
            before_1_44,
        } => json_response(
            StatusCode::OK,
            &super::system_df::df(&d, &types, before_1_42, before_1_44).await?,
        ),
        Route::ContainerWait { id, condition } => {
            // Headers go out at once (the CLI waits for them before starting); the body
            // follows when the condition holds.
            let id = d.container(&id)?.id;
            let (tx, rx) = mpsc::channel(1);
            let daemon = Arc::clone(&d);
            tokio::spawn(async move {
                let Ok(wait) = daemon.wait_container(&id, condition) else {
                    return;
                };
                let out = wait.await;
                let body = format!(
                    "{}\n",
                    json!({"StatusCode": out.status_code, "Error": null})
                );
                let _ = tx.send(Bytes::from(body)).await;
            });
            typed_response(channel_body(rx), "application/json")
        }
        Route::ContainerAttach { id, opts } => {
            let rec = d.container(&id)?;
            let keys = daemon::parse_detach_keys(&opts.detach_keys)?;
            // Like dockerd, stdin is attached only to containers created with OpenStdin.
            let stdin = if opts.stdin && rec.config.open_stdin {
                let watch = rec.config.tty.then(|| daemon::DetachWatch::new(keys));
                Some(d.attach_stdin(&rec.id, rec.config.stdin_once, watch)?)
            } else {
                None
            };
            let rx = streams::attach(Arc::clone(&d), &rec, opts).map_err(log_error)?;
            hijack(req, rx, stdin, rec.config.tty)
        }
        Route::ContainerLogs { id, opts } => {
            let rec = d.container(&id)?;
            let rx = streams::logs(Arc::clone(&d), &rec, opts).map_err(log_error)?;
            typed_response(channel_body(rx), stream_type(rec.config.tty))
        }
        Route::ContainerResize { id, height, width } => {
            d.resize_container(&id, height, width).await?;
            Response::new(empty())
        }
        Route::ExecResize { id, height, width } => {
            d.resize_exec(&id, height, width).await?;
            Response::new(empty())
        }
        Route::ContainerTop { id, ps_args } => {
            json_response(StatusCode::OK, &json!(d.top(&id, &ps_args).await?))
        }
        Route::ContainerStats {
            id,
            stream,
            one_shot,
        } => {
            let rx = d.container_stats(&id, stream, one_shot)?;
            typed_response(channel_body(rx), "application/json")
        }
        Route::ExecCreate { id } => {
            check_json(req.headers())?;
            let cfg: ExecConfig = decode_json(&body_bytes(req).await?)?;
            let exec_id = d.create_exec(&id, cfg)?;
            json_response(StatusCode::CREATED, &json!({ "Id": exec_id }))
        }
        Route::ExecStart { id } => {
            let mut req = req;
            let on_upgrade = hyper::upgrade::on(&mut req);
            let (parts, body) = req.into_parts();
            let bytes = read_limited(body, JSON_BODY_LIMIT).await?;
            let cfg: ExecStartConfig = decode_json(&bytes)?;
            if cfg.detach {
                detached(&d, move |d| async move { d.start_exec(&id, true).await }).await?;
                return Ok(no_content());
            }
            // dockerd hijacks first and starts the process after: a client that reads the
            // response head through a buffer and then the stream from the raw socket
            // (docker-py) loses output that arrived together with the head.
            d.exec_startable(&id)?;
            let tty = d.exec(&id)?.config.tty;
            let start = async move {
                match d.start_exec(&id, false).await? {
                    Some(streams) => Ok(streams),
                    None => Err(DaemonError::NotRunning { id }),
                }
            };
            hijack_parts(&parts.headers, on_upgrade, start, tty)
        }
        Route::ExecInspect { id } => {
            let e = d.exec(&id)?;
            let pid = if e.running { e.pid } else { 0 };
            json_response(
                StatusCode::OK,
                &json!({
                    "ID": e.id, "Running": e.running, "ExitCode": e.exit_code,
                    "ContainerID": e.container_id, "Pid": pid,
                    "OpenStdin": false, "OpenStdout": e.config.attach_stdout,
                    "OpenStderr": e.config.attach_stderr, "CanRemove": false, "DetachKeys": "",
                    "ProcessConfig": {"tty": e.config.tty, "entrypoint": e.config.cmd.as_slice().first(),
                                      "arguments": e.config.cmd.as_slice().get(1..).unwrap_or(&[]),
                                      "privileged": e.config.privileged, "user": e.config.user},
                }),
            )
        }
    };
    Ok(r)
}

fn hijack(
    mut req: Request<Incoming>,
    rx: mpsc::Receiver<Bytes>,
    stdin: Option<StdinSink>,
    raw: bool,
) -> Response<Body> {
    let on_upgrade = hyper::upgrade::on(&mut req);
    hijack_parts(
        req.headers(),
        on_upgrade,
        async move { Ok((rx, stdin)) },
        raw,
    )
}

/// A terminal's output is one raw stream; anything else is multiplexed.
fn stream_type(raw: bool) -> &'static str {
    if raw {
        RAW_CONTENT_TYPE
    } else {
        MULTIPLEXED_CONTENT_TYPE
    }
}

/// Copies a terminal's input into the process until the client's input ends or it types
/// the detach keys; the process's stdin stays open either way (dockerd's `copyEscapable`).
async fn copy_terminal_input<R: tokio::io::AsyncRead + Unpin>(
    rd: &mut R,
    fifo: &mut tokio::net::unix::pipe::Sender,
    watch: &mut daemon::DetachWatch,
) {
    use tokio::io::AsyncReadExt;
    let mut buf = vec![0u8; 4096];
    loop {
        let n = match rd.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        let (out, detached) = watch.feed(&buf[..n]);
        if !out.is_empty() && fifo.write_all(&out).await.is_err() {
            return;
        }
        if detached {
            tracing::debug!("attach detached by the detach keys");
            return;
        }
    }
}

/// Answers a stream request the way dockerd hijacks it: `101 UPGRADED` with the raw
/// stream on the connection when the client asked for an upgrade, else a streamed 200.
/// `start` runs once the response head is on its way; an error it returns is written into
/// the stream as text, as dockerd does once a connection is hijacked. `raw`: a terminal's
/// stream (no frames).
fn hijack_parts<F>(
    headers: &http::HeaderMap,
    on_upgrade: hyper::upgrade::OnUpgrade,
    start: F,
    raw: bool,
) -> Response<Body>
where
    F: std::future::Future<
            Output = Result<(mpsc::Receiver<Bytes>, Option<StdinSink>), DaemonError>,
        > + Send
        + 'static,
{
    if !headers.contains_key(header::UPGRADE) {
        let (tx, body_rx) = mpsc::channel(64);
        tokio::spawn(async move {
            match start.await {
                Ok((mut rx, _stdin)) => {
                    while let Some(chunk) = rx.recv().await {
                        if tx.send(chunk).await.is_err() {
                            break;
                        }
                    }
                }
                Err(e) => {
                    let _ = tx.send(Bytes::from(format!("{e}\r\n"))).await;
                }
            }
        });
        return typed_response(channel_body(body_rx), stream_type(raw));
    }
    tokio::spawn(async move {
        let upgraded = match on_upgrade.await {
            Ok(u) => u,
            Err(e) => {
                tracing::debug!(error = %e, "upgrade failed");
                return;
            }
        };
        let (mut rd, mut wr) = tokio::io::split(hyper_util::rt::TokioIo::new(upgraded));
        let (mut rx, stdin) = match start.await {
            Ok(streams) => streams,
            Err(e) => {
                let _ = wr.write_all(format!("{e}\r\n").as_bytes()).await;
                let _ = wr.shutdown().await;
                return;
            }
        };
        // The client's input goes to the process until the client half-closes; then its
        // stdin is closed so it sees EOF. A terminal's input ending ends the attach.
        let input_over = Arc::new(tokio::sync::Notify::new());
        let input = stdin.map(|sink| {
            let input_over = Arc::clone(&input_over);
            let StdinSink {
                mut fifo,
                close,
                detach,
            } = sink;
            tokio::spawn(async move {
                if let Some(mut watch) = detach {
                    copy_terminal_input(&mut rd, &mut fifo, &mut watch).await;
                    input_over.notify_one();
                    return;
                }
                if let Err(e) = tokio::io::copy(&mut rd, &mut fifo).await {
                    tracing::debug!(error = %e, "copying attach input ended");
                }
                match close {
                    Some(close) => close().await,
                    // The process's stdin stays open: the attach is what ends.
                    None => input_over.notify_one(),
                }
                drop(fifo);
            })
        });
        loop {
            tokio::select! {
                chunk = rx.recv() => match chunk {
                    Some(chunk) => {
                        if wr.write_all(&chunk).await.is_err() {
                            break;
                        }
                    }
                    None => break,
                },
                () = input_over.notified() => break,
            }
        }
        let _ = wr.flush().await;
        let _ = wr.shutdown().await;
        // The output is over (the process exited): input has nowhere to go.
        if let Some(task) = input {
            task.abort();
        }
    });
    let mut r = typed_response(empty(), stream_type(raw));
    *r.status_mut() = StatusCode::SWITCHING_PROTOCOLS;
    let h = r.headers_mut();
    h.insert(header::CONNECTION, HeaderValue::from_static("Upgrade"));
    h.insert(header::UPGRADE, HeaderValue::from_static("tcp"));
    r
}
