//! What the embedded DNS server says to one query: an answer from the container
//! records of the asker's networks, or "forward it", as dockerd's resolver decides.

use std::net::{IpAddr, Ipv4Addr};

use hickory_proto::op::{Message, MessageType, OpCode, ResponseCode};
use hickory_proto::rr::rdata::{A, PTR};
use hickory_proto::rr::{DNSClass, Name, RData, Record, RecordType};

use super::Records;

/// dockerd's TTL for the names it answers itself (libnetwork's `respTTL`).
pub const TTL: u32 = 600;

#[derive(Debug, PartialEq, Eq)]
pub enum Outcome {
    /// Send these bytes back.
    Reply(Vec<u8>),
    /// Not a name of ours: ask the upstream resolvers.
    Forward,
    /// Not even a DNS header: say nothing, as a resolver does with garbage.
    Drop,
}

/// Decides what `asker` (a container id) gets for the wire-format `query`.
pub fn answer(query: &[u8], records: &dyn Records, asker: &str) -> Outcome {
    let msg = match Message::from_vec(query) {
        Ok(m) => m,
        Err(_) if query.len() >= 12 => {
            let id = u16::from_be_bytes([query[0], query[1]]);
            return reply(Message::error_msg(id, OpCode::Query, ResponseCode::FormErr));
        }
        Err(_) => return Outcome::Drop,
    };
    if msg.message_type() != MessageType::Query {
        return Outcome::Drop;
    }
    if msg.op_code() != OpCode::Query {
        return reply(Message::error_msg(
            msg.id(),
            msg.op_code(),
            ResponseCode::NotImp,
        ));
    }
    let [q] = msg.queries() else {
        return reply(Message::error_msg(
            msg.id(),
            OpCode::Query,
            ResponseCode::FormErr,
        ));
    };
    if q.query_class() != DNSClass::IN {
        return Outcome::Forward;
    }
    let name = q.name();
    let answers: Vec<Record> = match q.query_type() {
        RecordType::A => match records.resolve_name(asker, &plain(name)) {
            Some(addrs) if !addrs.is_empty() => addrs
                .into_iter()
                .map(|a| Record::from_rdata(name.clone(), TTL, RData::A(A(a))))
                .collect(),
            _ => return Outcome::Forward,
        },
        // Containers have no IPv6 addresses yet: a known name has no AAAA, and saying
        // so (empty NOERROR, as dockerd does) keeps clients from asking upstream.
        RecordType::AAAA => match records.resolve_name(asker, &plain(name)) {
            Some(_) => Vec::new(),
            None => return Outcome::Forward,
        },
        RecordType::PTR => {
            let Some(addr) = arpa_v4(name) else {
                return Outcome::Forward;
            };
            let Some(target) = records.resolve_addr(asker, addr) else {
                return Outcome::Forward;
            };
            let Ok(target) = Name::from_ascii(format!("{}.", target.trim_end_matches('.'))) else {
                return Outcome::Forward;
            };
            vec![Record::from_rdata(
                name.clone(),
                TTL,
                RData::PTR(PTR(target)),
            )]
        }
        _ => return Outcome::Forward,
    };
    let mut resp = Message::new();
    resp.set_id(msg.id())
        .set_message_type(MessageType::Response)
        .set_op_code(OpCode::Query)
        .set_authoritative(true)
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true)
        .set_response_code(ResponseCode::NoError)
        .add_query(q.clone())
        .add_answers(answers);
    reply(resp)
}

/// A SERVFAIL for `query` (no upstream answered), or nothing if it cannot be parsed.
pub fn servfail(query: &[u8]) -> Option<Vec<u8>> {
    let msg = Message::from_vec(query).ok()?;
    let mut resp = Message::error_msg(msg.id(), msg.op_code(), ResponseCode::ServFail);
    resp.add_queries(msg.queries().iter().cloned())
        .set_recursion_desired(msg.recursion_desired())
        .set_recursion_available(true);
    resp.to_vec().ok()
}

/// The largest UDP answer the client takes: 512 bytes, or its EDNS payload size.
pub fn udp_limit(query: &[u8]) -> usize {
    Message::from_vec(query)
        .ok()
        .and_then(|m| m.extensions().as_ref().map(|e| e.max_payload()))
        .map_or(512, |p| usize::from(p.max(512)))
}

fn reply(msg: Message) -> Outcome {
    msg.to_vec().map_or(Outcome::Drop, Outcome::Reply)
}

/// The query name as the records know names: lowercase, no trailing dot.
fn plain(name: &Name) -> String {
    name.to_ascii().trim_end_matches('.').to_ascii_lowercase()
}

/// `4.3.2.1.in-addr.arpa.` → 1.2.3.4; anything else (IPv6, a partial name) → None.
fn arpa_v4(name: &Name) -> Option<Ipv4Addr> {
    let mut fq = name.clone();
    fq.set_fqdn(true);
    let net = fq.parse_arpa_name().ok()?;
    match net.addr() {
        IpAddr::V4(a) if net.prefix_len() == 32 => Some(a),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hickory_proto::op::{Edns, Query};

    /// `web` (alias `db`) at 10.0.0.2 is visible to container "c1" only.
    struct Fake;
    impl Records for Fake {
        fn resolve_name(&self, asker: &str, name: &str) -> Option<Vec<Ipv4Addr>> {
            (asker == "c1" && matches!(name, "web" | "db"))
                .then(|| vec![Ipv4Addr::new(10, 0, 0, 2)])
        }
        fn resolve_addr(&self, asker: &str, addr: Ipv4Addr) -> Option<String> {
            (asker == "c1" && addr == Ipv4Addr::new(10, 0, 0, 2)).then(|| "web.net1".into())
        }
    }

    fn query(name: &str, ty: RecordType) -> Vec<u8> {
        let mut m = Message::new();
        m.set_id(0x1234)
            .set_recursion_desired(true)
            .add_query(Query::query(Name::from_ascii(name).unwrap(), ty));
        m.to_vec().unwrap()
    }

    fn parsed(o: Outcome) -> Message {
        match o {
            Outcome::Reply(b) => Message::from_vec(&b).unwrap(),
            other => panic!("expected a reply, got {other:?}"),
        }
    }

    #[test]
    fn a_for_a_known_name_case_and_dot_insensitive() {
        let m = parsed(answer(&query("WEB.", RecordType::A), &Fake, "c1"));
        assert_eq!(m.id(), 0x1234);
        assert_eq!(m.message_type(), MessageType::Response);
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert_eq!(m.answers().len(), 1);
        assert_eq!(
            m.answers()[0].data(),
            &RData::A(A(Ipv4Addr::new(10, 0, 0, 2)))
        );
        assert_eq!(m.answers()[0].ttl(), TTL);
        assert!(m.recursion_desired());
        let m = parsed(answer(&query("db", RecordType::A), &Fake, "c1"));
        assert_eq!(m.answers().len(), 1);
    }

    #[test]
    fn unknown_names_and_other_askers_are_forwarded() {
        assert_eq!(
            answer(&query("example.com.", RecordType::A), &Fake, "c1"),
            Outcome::Forward
        );
        assert_eq!(
            answer(&query("web.", RecordType::A), &Fake, "c2"),
            Outcome::Forward
        );
        assert_eq!(
            answer(&query("web.", RecordType::MX), &Fake, "c1"),
            Outcome::Forward
        );
        assert_eq!(
            answer(&query("x.", RecordType::AAAA), &Fake, "c1"),
            Outcome::Forward
        );
    }

    #[test]
    fn aaaa_for_a_known_name_is_empty_noerror() {
        let m = parsed(answer(&query("web.", RecordType::AAAA), &Fake, "c1"));
        assert_eq!(m.response_code(), ResponseCode::NoError);
        assert!(m.answers().is_empty());
    }

    #[test]
    fn ptr_for_a_known_address() {
        let m = parsed(answer(
            &query("2.0.0.10.in-addr.arpa.", RecordType::PTR),
            &Fake,
            "c1",
        ));
        let want = Name::from_ascii("web.net1.").unwrap();
        assert_eq!(m.answers()[0].data(), &RData::PTR(PTR(want)));
        let other = query("3.0.0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(answer(&other, &Fake, "c1"), Outcome::Forward);
        let partial = query("0.10.in-addr.arpa.", RecordType::PTR);
        assert_eq!(answer(&partial, &Fake, "c1"), Outcome::Forward);
    }

    #[test]
    fn garbage_is_formerr_or_dropped() {
        assert_eq!(answer(b"abc", &Fake, "c1"), Outcome::Drop);
        let mut bad = query("web.", RecordType::A);
        bad.truncate(14);
        let m = parsed(answer(&bad, &Fake, "c1"));
        assert_eq!(m.response_code(), ResponseCode::FormErr);
        assert_eq!(m.id(), 0x1234);
    }

    #[test]
    fn servfail_and_udp_limit() {
        let q = query("example.com.", RecordType::A);
        let m = Message::from_vec(&servfail(&q).unwrap()).unwrap();
        assert_eq!(m.response_code(), ResponseCode::ServFail);
        assert_eq!(m.queries().len(), 1);
        assert_eq!(udp_limit(&q), 512);
        let mut m = Message::from_vec(&q).unwrap();
        let mut edns = Edns::new();
        edns.set_max_payload(1232);
        m.set_edns(edns);
        assert_eq!(udp_limit(&m.to_vec().unwrap()), 1232);
    }
}
