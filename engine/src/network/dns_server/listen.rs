//! The sockets of one container's DNS server: bound inside its network namespace by a
//! thread of their own, then served from the engine's runtime (a socket stays in the
//! namespace it was created in, whichever thread later uses it).

use std::fs::File;
use std::net::{SocketAddr, SocketAddrV4};
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use nix::sched::CloneFlags;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream, UdpSocket};
use tokio::sync::Semaphore;

use super::answer::{self, Outcome};
use super::{forward, DnsServerError, Records, ADDRESS};

/// Queries (or TCP connections) in flight per container; more are dropped, as a busy
/// resolver does (dockerd's limit is 1024 per container).
pub const MAX_CONCURRENT: usize = 256;
/// An idle TCP client is disconnected after this (RFC 7766 suggests seconds).
const TCP_IDLE: Duration = Duration::from_secs(10);

pub struct Context {
    pub asker: String,
    pub records: Arc<dyn Records>,
    pub upstreams: Vec<SocketAddr>,
    pub permits: Arc<Semaphore>,
}

/// Binds UDP and TCP 127.0.0.11:53 in the namespace at `netns`. setns(2) moves only the
/// calling thread, so a fresh thread does it and ends: never a pooled runtime thread,
/// which would stay in the container's namespace.
pub async fn bind_in(netns: &Path) -> Result<(UdpSocket, TcpListener), DnsServerError> {
    let path = netns.to_path_buf();
    let (tx, rx) = tokio::sync::oneshot::channel();
    std::thread::Builder::new()
        .name("dns-bind".into())
        .spawn(move || {
            let _ = tx.send(bind_here(&path));
        })
        .map_err(|source| DnsServerError::Netns {
            op: "spawn a thread to join",
            path: netns.to_path_buf(),
            source,
        })?;
    let (udp, tcp) = rx.await.map_err(|_| DnsServerError::ThreadDied)??;
    let wrap = |proto| {
        let path = netns.to_path_buf();
        move |source| DnsServerError::Bind {
            proto,
            path,
            source,
        }
    };
    let udp = UdpSocket::from_std(udp).map_err(wrap("udp"))?;
    let tcp = TcpListener::from_std(tcp).map_err(wrap("tcp"))?;
    Ok((udp, tcp))
}

fn bind_here(path: &Path) -> Result<(std::net::UdpSocket, std::net::TcpListener), DnsServerError> {
    let ns = |op| {
        let path = path.to_path_buf();
        move |source| DnsServerError::Netns { op, path, source }
    };
    let file = File::open(path).map_err(ns("open"))?;
    nix::sched::setns(&file, CloneFlags::CLONE_NEWNET).map_err(|e| ns("join")(e.into()))?;
    let addr = SocketAddrV4::new(ADDRESS, 53);
    let bind = |proto| {
        let path = path.to_path_buf();
        move |source| DnsServerError::Bind {
            proto,
            path,
            source,
        }
    };
    let udp = std::net::UdpSocket::bind(addr).map_err(bind("udp"))?;
    udp.set_nonblocking(true).map_err(bind("udp"))?;
    let tcp = std::net::TcpListener::bind(addr).map_err(bind("tcp"))?;
    tcp.set_nonblocking(true).map_err(bind("tcp"))?;
    Ok((udp, tcp))
}

/// Answers or forwards `query`; `limit` is the client's UDP size (`None` over TCP).
async fn respond(query: &[u8], ctx: &Context, limit: Option<usize>) -> Option<Vec<u8>> {
    match answer::answer(query, ctx.records.as_ref(), &ctx.asker) {
        Outcome::Reply(r) => Some(r),
        Outcome::Drop => None,
        Outcome::Forward => match forward::forward(query, &ctx.upstreams, limit).await {
            Some(r) => Some(r),
            None => answer::servfail(query),
        },
    }
}

pub async fn serve_udp(sock: UdpSocket, ctx: Arc<Context>) {
    let sock = Arc::new(sock);
    let mut buf = vec![0u8; 65535];
    loop {
        let (n, from) = match sock.recv_from(&mut buf).await {
            Ok(x) => x,
            Err(e) => {
                tracing::debug!(asker = %ctx.asker, error = %e, "embedded DNS: udp receive");
                continue;
            }
        };
        let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
            continue;
        };
        let query = buf[..n].to_vec();
        let (sock, ctx) = (sock.clone(), ctx.clone());
        tokio::spawn(async move {
            let limit = answer::udp_limit(&query);
            if let Some(r) = respond(&query, &ctx, Some(limit)).await {
                let _ = sock.send_to(&r, from).await;
            }
            drop(permit);
        });
    }
}

pub async fn serve_tcp(listener: TcpListener, ctx: Arc<Context>) {
    loop {
        let stream = match listener.accept().await {
            Ok((s, _)) => s,
            Err(e) => {
                // Out of fds or memory: back off instead of spinning on the error.
                tracing::debug!(asker = %ctx.asker, error = %e, "embedded DNS: tcp accept");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let Ok(permit) = ctx.permits.clone().try_acquire_owned() else {
            continue;
        };
        let ctx = ctx.clone();
        tokio::spawn(async move {
            serve_conn(stream, &ctx).await;
            drop(permit);
        });
    }
}

async fn serve_conn(mut s: TcpStream, ctx: &Context) {
    loop {
        let query = match tokio::time::timeout(TCP_IDLE, forward::read_framed(&mut s)).await {
            Ok(Ok(q)) => q,
            _ => return,
        };
        let Some(r) = respond(&query, ctx, None).await else {
            return;
        };
        let Ok(len) = u16::try_from(r.len()) else {
            return;
        };
        let mut out = len.to_be_bytes().to_vec();
        out.extend_from_slice(&r);
        if s.write_all(&out).await.is_err() {
            return;
        }
    }
}
