//! Forwarding of the queries the engine does not answer itself to upstream resolvers:
//! UDP first, TCP when the UDP answer is truncated, each attempt with a timeout, servers
//! in order (dockerd's resolver does the same).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

/// Per attempt, as dockerd's `extIOTimeout`.
pub const TIMEOUT: Duration = Duration::from_secs(4);

/// Used when the host has no nameserver at all, as dockerd does.
const FALLBACK: [Ipv4Addr; 2] = [Ipv4Addr::new(8, 8, 8, 8), Ipv4Addr::new(8, 8, 4, 4)];

/// The nameservers of a resolv.conf, port 53. Loopback ones are kept: queries are
/// forwarded from the engine's own (the host's) network namespace, where a local stub
/// resolver such as systemd-resolved's 127.0.0.53 answers (dockerd ≥ 25 does the same
/// for host-loopback resolvers). None at all: Google's, like dockerd.
pub fn upstreams_from_resolv_conf(text: &str) -> Vec<SocketAddr> {
    let found: Vec<SocketAddr> = text
        .lines()
        .filter_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some("nameserver")).then(|| w.next()).flatten()
        })
        // A zone index (fe80::1%eth0) cannot be used from here.
        .filter_map(|a| a.parse::<IpAddr>().ok())
        .map(|ip| SocketAddr::new(ip, 53))
        .collect();
    if found.is_empty() {
        FALLBACK
            .iter()
            .map(|ip| SocketAddr::new(IpAddr::V4(*ip), 53))
            .collect()
    } else {
        found
    }
}

/// Parses `IP` or `IP:PORT` (`[V6]:PORT`) for `--dns-upstream`.
pub fn parse_upstream(s: &str) -> Option<SocketAddr> {
    s.parse::<SocketAddr>()
        .ok()
        .or_else(|| s.parse::<IpAddr>().ok().map(|ip| SocketAddr::new(ip, 53)))
}

/// Asks each server in turn; the first answer wins. `limit` is the most the client takes
/// over UDP (`None` for a TCP client, which takes anything): a UDP answer with TC set is
/// retried over TCP, and the TCP answer used if it fits.
pub async fn forward(
    query: &[u8],
    servers: &[SocketAddr],
    limit: Option<usize>,
) -> Option<Vec<u8>> {
    for server in servers {
        let got = match limit {
            Some(limit) => match udp(query, *server).await {
                Ok(ans) if truncated(&ans) => match tcp(query, *server).await {
                    Ok(full) if full.len() <= limit => Ok(full),
                    // The client retries over TCP itself after seeing TC.
                    _ => Ok(ans),
                },
                other => other,
            },
            None => tcp(query, *server).await,
        };
        match got {
            Ok(ans) => return Some(ans),
            Err(e) => tracing::debug!(%server, error = %e, "upstream DNS server did not answer"),
        }
    }
    None
}

fn truncated(msg: &[u8]) -> bool {
    msg.len() > 2 && msg[2] & 0x02 != 0
}

fn same_id(query: &[u8], ans: &[u8]) -> bool {
    ans.len() >= 12 && query.len() >= 2 && ans[..2] == query[..2]
}

async fn udp(query: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = match server {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (std::net::Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let sock = UdpSocket::bind(local).await?;
    // connect() makes the kernel drop datagrams from anyone but the server.
    sock.connect(server).await?;
    sock.send(query).await?;
    let mut buf = vec![0u8; 65535];
    let wait = async {
        loop {
            let n = sock.recv(&mut buf).await?;
            if same_id(query, &buf[..n]) {
                return Ok(buf[..n].to_vec());
            }
        }
    };
    timeout(TIMEOUT, wait).await.map_err(|_| timed_out())?
}

async fn tcp(query: &[u8], server: SocketAddr) -> std::io::Result<Vec<u8>> {
    let work = async {
        let mut s = TcpStream::connect(server).await?;
        let len = u16::try_from(query.len())
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::InvalidInput, "query too long"))?;
        let mut framed = len.to_be_bytes().to_vec();
        framed.extend_from_slice(query);
        s.write_all(&framed).await?;
        read_framed(&mut s).await
    };
    timeout(TIMEOUT, work).await.map_err(|_| timed_out())?
}

/// One length-prefixed DNS message of a TCP stream (RFC 1035 4.2.2).
pub async fn read_framed<R: AsyncReadExt + Unpin>(r: &mut R) -> std::io::Result<Vec<u8>> {
    let mut len = [0u8; 2];
    r.read_exact(&mut len).await?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    r.read_exact(&mut buf).await?;
    Ok(buf)
}

fn timed_out() -> std::io::Error {
    std::io::Error::new(std::io::ErrorKind::TimedOut, "no answer in time")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_keep_order_and_loopback_and_fall_back() {
        let got = upstreams_from_resolv_conf(
            "search x\nnameserver 127.0.0.53\nnameserver 10.0.0.1 # c\nnameserver ::1\n",
        );
        assert_eq!(
            got,
            vec![
                "127.0.0.53:53".parse().unwrap(),
                "10.0.0.1:53".parse().unwrap(),
                "[::1]:53".parse().unwrap()
            ]
        );
        assert_eq!(upstreams_from_resolv_conf("search x\n").len(), 2);
    }

    #[test]
    fn upstream_flag_parses_with_and_without_port() {
        assert_eq!(
            parse_upstream("10.1.2.3"),
            Some("10.1.2.3:53".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("127.0.0.1:5353"),
            Some("127.0.0.1:5353".parse().unwrap())
        );
        assert_eq!(
            parse_upstream("[::1]:54"),
            Some("[::1]:54".parse().unwrap())
        );
        assert_eq!(parse_upstream("nope"), None);
    }

    /// A loopback fake upstream: answers over UDP with TC set and fully over TCP.
    #[tokio::test]
    async fn truncated_udp_answers_are_retried_over_tcp() {
        // The kernel picks a free UDP port; the same TCP port may be taken: retry.
        let mut pair = None;
        for _ in 0..50 {
            let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
            let port = udp.local_addr().unwrap().port();
            if let Ok(tcp) = tokio::net::TcpListener::bind(("127.0.0.1", port)).await {
                pair = Some((udp, tcp, port));
                break;
            }
        }
        let (udp, tcp, port) = pair.expect("a port free for both UDP and TCP");
        let server: SocketAddr = ([127, 0, 0, 1], port).into();
        tokio::spawn(async move {
            let mut buf = [0u8; 512];
            loop {
                let (n, from) = udp.recv_from(&mut buf).await.unwrap();
                let mut ans = buf[..n].to_vec();
                ans[2] |= 0x82; // QR + TC
                udp.send_to(&ans, from).await.unwrap();
            }
        });
        tokio::spawn(async move {
            loop {
                let (mut s, _) = tcp.accept().await.unwrap();
                let q = read_framed(&mut s).await.unwrap();
                let mut ans = q.clone();
                ans[2] |= 0x80;
                ans.extend_from_slice(&[0u8; 100]);
                let mut out = u16::try_from(ans.len()).unwrap().to_be_bytes().to_vec();
                out.extend_from_slice(&ans);
                s.write_all(&out).await.unwrap();
            }
        });
        let query = [0xab, 0xcd, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0];
        let full = forward(&query, &[server], Some(512)).await.unwrap();
        assert_eq!(full.len(), 112);
        assert!(!truncated(&full));
        // Too big for the client: it gets the truncated answer and retries over TCP.
        let small = forward(&query, &[server], Some(50)).await.unwrap();
        assert!(truncated(&small));
        let over_tcp = forward(&query, &[server], None).await.unwrap();
        assert_eq!(over_tcp.len(), 112);
    }
}
