//! Root only: a real server in a persistent namespace of the test's own (a temp dir's
//! bind mount), queried from a thread inside it; the fake upstream listens on the
//! host's 127.0.0.1. Nothing outside the temp dir and loopback is touched.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hickory_proto::op::{Message, MessageType, Query, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{Name, RData, Record, RecordType};
use netlink_packet_route::link::LinkFlags;
use rtnetlink::LinkUnspec;

use super::{DnsServers, Records};
use crate::network::netns;

struct Fake;
impl Records for Fake {
    fn resolve_name(&self, asker: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
        (asker == "c1" && name == "web").then(|| vec![Ipv4Addr::new(10, 0, 0, 2)])
    }
    fn resolve_addr(&self, _: &str, _: Ipv4Addr) -> Option<String> {
        None
    }
}

fn query(name: &str) -> Vec<u8> {
    let mut m = Message::new();
    m.set_id(7)
        .set_recursion_desired(true)
        .add_query(Query::query(Name::from_ascii(name).unwrap(), RecordType::A));
    m.to_vec().unwrap()
}

fn first_a(answer: &[u8]) -> Option<Ipv4Addr> {
    let m = Message::from_vec(answer).unwrap();
    m.answers().iter().find_map(|r| match r.data() {
        RData::A(A(a)) => Some(*a),
        _ => None,
    })
}

/// Answers every query with 192.0.2.1 over UDP on the host's loopback.
fn fake_upstream() -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").unwrap();
    let addr = sock.local_addr().unwrap();
    std::thread::spawn(move || {
        let mut buf = [0u8; 512];
        while let Ok((n, from)) = sock.recv_from(&mut buf) {
            let mut m = Message::from_vec(&buf[..n]).unwrap();
            let name = m.queries()[0].name().clone();
            m.set_message_type(MessageType::Response)
                .set_response_code(ResponseCode::NoError)
                .add_answer(Record::from_rdata(
                    name,
                    5,
                    RData::A(A(Ipv4Addr::new(192, 0, 2, 1))),
                ));
            let _ = sock.send_to(&m.to_vec().unwrap(), from);
        }
    });
    addr
}

/// Runs `f` on a thread inside the namespace at `ns`.
fn inside<T: Send>(ns: &Path, f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            let file = std::fs::File::open(ns).unwrap();
            nix::sched::setns(&file, nix::sched::CloneFlags::CLONE_NEWNET).unwrap();
            f()
        })
        .join()
        .unwrap()
    })
}

fn udp_ask(name: &str) -> Vec<u8> {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s.send_to(&query(name), "127.0.0.11:53").unwrap();
    let mut buf = [0u8; 1500];
    let n = s.recv(&mut buf).unwrap();
    buf[..n].to_vec()
}

fn tcp_ask(name: &str) -> std::io::Result<Vec<u8>> {
    let mut s = TcpStream::connect("127.0.0.11:53")?;
    s.set_read_timeout(Some(Duration::from_secs(10)))?;
    let q = query(name);
    let mut out = u16::try_from(q.len()).unwrap().to_be_bytes().to_vec();
    out.extend_from_slice(&q);
    s.write_all(&out)?;
    let mut len = [0u8; 2];
    s.read_exact(&mut len)?;
    let mut buf = vec![0u8; usize::from(u16::from_be_bytes(len))];
    s.read_exact(&mut buf)?;
    Ok(buf)
}

fn lo_up(ns: PathBuf) {
    crate::network::netns::with_netlink(Some(ns), |h| {
        Box::pin(async move {
            let lo = crate::network::link::index_of(&h, "lo").await?.expect("lo");
            let mut up = LinkUnspec::new_with_index(lo).up().build();
            up.header.change_mask |= LinkFlags::Up;
            h.link().set(up).execute().await.expect("lo up");
            Ok(())
        })
    })
    .expect("netlink");
}

#[test]
fn serves_names_forwards_the_rest_and_closes_at_stop() {
    if !nix::unistd::geteuid().is_root() {
        eprintln!("skipped: needs root");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let ns = dir.path().join("ns");
    netns::create(&ns).expect("netns");
    let checks = std::panic::catch_unwind(|| {
        lo_up(ns.clone());
        let rt = tokio::runtime::Runtime::new().unwrap();
        let servers = DnsServers::new(Arc::new(Fake), vec![fake_upstream()]);
        rt.block_on(servers.start("c1", &ns, &[])).expect("start");
        assert!(servers.is_serving("c1"));
        let (web, up, web_tcp) = inside(&ns, || {
            (
                udp_ask("web."),
                udp_ask("up.test."),
                tcp_ask("web.").unwrap(),
            )
        });
        assert_eq!(first_a(&web), Some(Ipv4Addr::new(10, 0, 0, 2)));
        assert_eq!(first_a(&up), Some(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(first_a(&web_tcp), Some(Ipv4Addr::new(10, 0, 0, 2)));
        servers.stop("c1");
        assert!(!servers.is_serving("c1"));
        let deadline = Instant::now() + Duration::from_secs(10);
        while inside(&ns, || tcp_ask("web.")).is_ok() {
            assert!(Instant::now() < deadline, "still answering after stop");
            std::thread::yield_now();
        }
        // The port is free again: a restarted engine can bind it.
        rt.block_on(servers.start("c1", &ns, &[])).expect("restart");
        servers.stop("c1");
    });
    netns::remove(&ns).expect("remove netns");
    if let Err(p) = checks {
        std::panic::resume_unwind(p);
    }
}
