//! Pulls from an in-process fake registry on 127.0.0.1 (Bearer token auth behind Basic
//! credentials) into the fake highd.

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::Arc;

use http::{Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper_util::rt::TokioIo;
use serde_json::json;

use super::*;
use crate::daemon::tests::{env, tar_with};

struct Fake {
    manifest: Bytes,
    blobs: HashMap<String, Bytes>,
}

fn reply(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    r
}

fn handle(f: &Fake, port: u16, req: &Request<Incoming>) -> Response<Full<Bytes>> {
    let path = req.uri().path();
    let auth = req
        .headers()
        .get(http::header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if path == "/token" {
        // base64("u:p")
        return if auth == "Basic dTpw"
            && req
                .uri()
                .query()
                .unwrap_or("")
                .contains("scope=repository%3Aapp%3Apull")
        {
            reply(StatusCode::OK, Bytes::from(r#"{"token":"tok"}"#))
        } else {
            reply(StatusCode::UNAUTHORIZED, Bytes::new())
        };
    }
    if auth != "Bearer tok" {
        let mut r = reply(StatusCode::UNAUTHORIZED, Bytes::new());
        let challenge = format!(
            r#"Bearer realm="http://127.0.0.1:{port}/token",service="fake",scope="repository:app:pull""#
        );
        r.headers_mut()
            .insert(http::header::WWW_AUTHENTICATE, challenge.parse().unwrap());
        return r;
    }
    if path == "/v2/app/manifests/latest" {
        let mut r = reply(StatusCode::OK, f.manifest.clone());
        r.headers_mut().insert(
            http::header::CONTENT_TYPE,
            manifest::OCI_MANIFEST.parse().unwrap(),
        );
        return r;
    }
    match path
        .strip_prefix("/v2/app/blobs/")
        .and_then(|d| f.blobs.get(d))
    {
        Some(b) => reply(StatusCode::OK, b.clone()),
        None => reply(StatusCode::NOT_FOUND, Bytes::new()),
    }
}

/// Serves `fake` on a loopback port until the test's runtime ends; returns the port.
async fn serve(fake: Fake) -> u16 {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let fake = Arc::new(fake);
    tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                return;
            };
            let fake = Arc::clone(&fake);
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let r = handle(&fake, port, &req);
                    async move { Ok::<_, Infallible>(r) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    port
}

/// An image of one gzip layer; `corrupt` serves other bytes for the layer.
fn image(corrupt: bool) -> Fake {
    let tar = tar_with(&[("bin/sh", b"x"), ("etc/passwd", b"root:x:0:0::/:/bin/sh\n")]);
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    std::io::Write::write_all(&mut gz, &tar).unwrap();
    let layer = gz.finish().unwrap();
    let config = json!({"architecture": "amd64", "os": "linux",
                        "rootfs": {"type": "layers", "diff_ids": [manifest::sha256(&tar)]}})
    .to_string();
    let man = json!({"schemaVersion": 2, "mediaType": manifest::OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json",
                   "digest": manifest::sha256(config.as_bytes()), "size": config.len()},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip",
                    "digest": manifest::sha256(&layer), "size": layer.len()}]})
    .to_string();
    let mut served = layer.clone();
    if corrupt {
        let mid = served.len() / 2;
        served[mid] ^= 0xff;
    }
    Fake {
        manifest: Bytes::from(man),
        blobs: HashMap::from([
            (manifest::sha256(config.as_bytes()), Bytes::from(config)),
            (manifest::sha256(&layer), Bytes::from(served)),
        ]),
    }
}

fn opts(port: u16, creds: bool) -> PullOptions {
    PullOptions {
        reference: Reference::parse(&format!("127.0.0.1:{port}/app:latest")).unwrap(),
        creds: creds.then(|| Credentials {
            username: "u".into(),
            password: "p".into(),
            ..Default::default()
        }),
    }
}

async fn run(
    d: &Daemon<crate::backend::fake::FakeBackend>,
    o: PullOptions,
) -> (Result<String, RegistryError>, Vec<Value>) {
    let (tx, mut rx) = mpsc::channel(256);
    let r = pull(d, o, &tx).await;
    drop(tx);
    let mut lines = Vec::new();
    while let Some(v) = rx.recv().await {
        lines.push(v);
    }
    (r, lines)
}

#[tokio::test]
async fn bearer_token_pull_names_and_unpacks_the_image() {
    let e = env().await;
    let port = serve(image(false)).await;
    let (r, lines) = run(&e.daemon, opts(port, true)).await;
    let digest = r.unwrap();
    let name = format!("127.0.0.1:{port}/app:latest");
    let img = e.daemon.backend.image_get(&name).await.unwrap();
    assert_eq!(img.target.digest, digest);
    let view = e.daemon.image(&name).await.unwrap();
    assert!(e
        .daemon
        .backend
        .snapshot_exists(&view.chain_id())
        .await
        .unwrap());
    let statuses: Vec<&str> = lines.iter().filter_map(|l| l["status"].as_str()).collect();
    assert!(statuses.contains(&"Pull complete"), "{statuses:?}");
    assert_eq!(
        statuses.last().copied(),
        Some(format!("Status: Downloaded newer image for {name}").as_str())
    );
    // Anonymous: the registry's 401 becomes dockerd's access-denied message.
    let (r, _) = run(&e.daemon, opts(port, false)).await;
    assert!(
        matches!(r, Err(RegistryError::AccessDenied { .. })),
        "{r:?}"
    );
}

#[tokio::test]
async fn bad_layer_or_garbage_manifest_leave_no_image() {
    let e = env().await;
    let port = serve(image(true)).await;
    let (r, _) = run(&e.daemon, opts(port, true)).await;
    assert!(
        matches!(r, Err(RegistryError::DigestMismatch { .. })),
        "{r:?}"
    );
    let name = format!("127.0.0.1:{port}/app:latest");
    assert!(e
        .daemon
        .backend
        .image_get(&name)
        .await
        .unwrap_err()
        .is_not_found());

    let mut garbage = image(false);
    garbage.manifest = Bytes::from_static(b"{not a manifest");
    let port = serve(garbage).await;
    let (r, lines) = run(&e.daemon, opts(port, true)).await;
    let err = r.unwrap_err();
    assert!(err.to_string().starts_with("decode manifest"), "{err}");
    assert!(
        lines.is_empty(),
        "progress before the manifest was understood: {lines:?}"
    );
    let name = format!("127.0.0.1:{port}/app:latest");
    assert!(e
        .daemon
        .backend
        .image_get(&name)
        .await
        .unwrap_err()
        .is_not_found());
}
