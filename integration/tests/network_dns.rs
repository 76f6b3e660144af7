//! The embedded DNS server of user-defined networks through the real docker CLI and
//! busybox's nslookup/ping: names, aliases and short ids (A), reverse lookups (PTR),
//! isolation between networks, forwarding to an upstream, the default bridge's
//! host-style resolv.conf, network connect/disconnect of a running container, sockets
//! reopened after an engine SIGKILL and closed at stop.
//! The upstream is a fake DNS server of the test's own on the host's 127.0.0.1 (the
//! engine forwards from its own namespace), passed with the hidden `--dns-upstream`.

use std::net::{Ipv4Addr, TcpStream, UdpSocket};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::{wait_until, Stack};
use hickory_proto::op::{Message, MessageType, ResponseCode};
use hickory_proto::rr::rdata::A;
use hickory_proto::rr::{RData, Record, RecordType};

use crate::common::{expect_contains, inspect, Spec, DOCKER};
use crate::network::{expect_engine_cleans_up, expect_no_endpoints};
use crate::user_networks::create_net;

pub fn tests() -> Vec<Spec> {
    vec![Spec {
        name: "network_dns::names_aliases_ptr_isolation_forwarding_connect_restart",
        needs: DOCKER,
        run: embedded_dns,
    }]
}

/// The address the fake upstream gives `upstream.test`.
const UPSTREAM_ANSWER: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 7);

/// A fake upstream resolver on 127.0.0.1: `upstream.test` is 192.0.2.7, everything else
/// NXDOMAIN; it records the names it was asked. Stops when dropped.
struct FakeUpstream {
    port: u16,
    asked: Arc<Mutex<Vec<String>>>,
    stop: Arc<AtomicBool>,
}

impl FakeUpstream {
    fn start() -> Result<Self> {
        let sock = UdpSocket::bind("127.0.0.1:0")?;
        sock.set_read_timeout(Some(Duration::from_millis(200)))?;
        let port = sock.local_addr()?.port();
        let asked = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (a, st) = (asked.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !st.load(Ordering::Relaxed) {
                let Ok((n, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                let Ok(mut m) = Message::from_vec(&buf[..n]) else {
                    continue;
                };
                let Some(q) = m.queries().first().cloned() else {
                    continue;
                };
                let name = q.name().to_ascii().to_ascii_lowercase();
                a.lock().unwrap().push(name.clone());
                m.set_message_type(MessageType::Response)
                    .set_recursion_available(true);
                if name == "upstream.test." && q.query_type() == RecordType::A {
                    let rec = Record::from_rdata(q.name().clone(), 5, RData::A(A(UPSTREAM_ANSWER)));
                    m.add_answer(rec);
                } else if name != "upstream.test." {
                    m.set_response_code(ResponseCode::NXDomain);
                }
                if let Ok(bytes) = m.to_vec() {
                    let _ = sock.send_to(&bytes, from);
                }
            }
        });
        Ok(Self { port, asked, stop })
    }

    fn was_asked(&self, name: &str) -> bool {
        self.asked.lock().unwrap().iter().any(|n| n == name)
    }
}

impl Drop for FakeUpstream {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Whether something accepts TCP on 127.0.0.11:53 inside the namespace at `netns`.
fn dns_listening(netns: &str) -> Result<bool> {
    let netns = netns.to_string();
    std::thread::spawn(move || -> Result<bool> {
        let f = std::fs::File::open(&netns).with_context(|| format!("open {netns}"))?;
        nix::sched::setns(&f, nix::sched::CloneFlags::CLONE_NEWNET).context("setns")?;
        Ok(TcpStream::connect_timeout(&"127.0.0.11:53".parse()?, Duration::from_secs(2)).is_ok())
    })
    .join()
    .map_err(|_| anyhow::anyhow!("setns thread panicked"))?
}

fn embedded_dns() -> Result<()> {
    let up = FakeUpstream::start()?;
    let s = Stack::with_busybox_args(vec![
        "--dns-upstream".into(),
        format!("127.0.0.1:{}", up.port),
    ])?;
    create_net(&s, "dnsnet", 1, &[])?;
    create_net(&s, "othernet", 2, &[])?;
    let run = |args: &[&str]| -> Result<String> {
        let mut full = vec!["run", "-d"];
        full.extend_from_slice(args);
        full.extend_from_slice(&["busybox", "sleep", "300"]);
        Ok(s.docker(&full)?.ok()?.stdout.trim().to_string())
    };
    let web_id = run(&[
        "--name",
        "web",
        "--network",
        "dnsnet",
        "--network-alias",
        "webalias",
    ])?;
    run(&["--name", "hidden", "--network", "othernet"])?;
    let web = inspect(&s, "web")?;
    let web_ip = web["NetworkSettings"]["Networks"]["dnsnet"]["IPAddress"]
        .as_str()
        .context("web's address on dnsnet")?
        .to_string();
    let hidden = inspect(&s, "hidden")?;
    let hidden_ip = hidden["NetworkSettings"]["Networks"]["othernet"]["IPAddress"]
        .as_str()
        .context("hidden's address on othernet")?
        .to_string();

    let script = format!(
        "cat /etc/resolv.conf; echo ==A; nslookup web; echo ==ALIAS; nslookup webalias; \
         echo ==ID; nslookup {short}; echo ==PING; ping -c1 -W5 web; echo ==PTR; \
         nslookup {web_ip}; echo ==HIDDEN; nslookup hidden; echo ==UP; nslookup upstream.test; \
         echo ==END",
        short = &web_id[..12]
    );
    let out = s
        .docker(&[
            "run",
            "--rm",
            "--network",
            "dnsnet",
            "busybox",
            "sh",
            "-c",
            &script,
        ])?
        .stdout;
    let section = |name: &str| -> String {
        let start = out.find(&format!("=={name}\n")).map_or(out.len(), |i| i);
        let rest = &out[start..];
        let end = rest[3..].find("\n==").map_or(rest.len(), |i| i + 3);
        rest[..end].to_string()
    };
    let resolv = &out[..out.find("==A\n").unwrap_or(out.len())];
    expect_contains(
        "resolv.conf on a user network",
        resolv,
        "nameserver 127.0.0.11\n",
    )?;
    expect_contains("resolv.conf options", resolv, "ndots:0")?;
    ensure!(
        resolv.matches("nameserver").count() == 1,
        "only the embedded server:\n{resolv}"
    );
    expect_contains(
        "A for the name",
        &section("A"),
        &format!("Address: {web_ip}"),
    )?;
    expect_contains(
        "A for the alias",
        &section("ALIAS"),
        &format!("Address: {web_ip}"),
    )?;
    expect_contains(
        "A for the short id",
        &section("ID"),
        &format!("Address: {web_ip}"),
    )?;
    expect_contains("ping by name", &section("PING"), "1 packets received")?;
    expect_contains("PTR", &section("PTR"), "name = web.dnsnet")?;
    let hid = section("HIDDEN");
    ensure!(
        !hid.contains(&hidden_ip),
        "a container on another network resolved:\n{hid}"
    );
    expect_contains(
        "forwarded A",
        &section("UP"),
        &format!("Address: {UPSTREAM_ANSWER}"),
    )?;
    ensure!(
        up.was_asked("upstream.test."),
        "the upstream never saw the forwarded query: {:?}",
        up.asked.lock().unwrap()
    );

    // The default bridge keeps the host-style resolv.conf, as with dockerd.
    let plain = s
        .docker(&["run", "--rm", "busybox", "cat", "/etc/resolv.conf"])?
        .ok()?
        .stdout;
    ensure!(
        !plain.contains("127.0.0.11"),
        "default bridge got the embedded server:\n{plain}"
    );

    // `network connect` of a running default-bridge container opens its server (asked
    // explicitly: its resolv.conf stays the host-style one it was created with), and
    // `disconnect` closes it.
    run(&["--name", "late"])?;
    let late_ns = inspect(&s, "late")?["NetworkSettings"]["SandboxKey"]
        .as_str()
        .context("late's SandboxKey")?
        .to_string();
    ensure!(!dns_listening(&late_ns)?, "DNS on the default bridge");
    s.docker(&["network", "connect", "dnsnet", "late"])?.ok()?;
    let via = s
        .docker(&["exec", "late", "nslookup", "webalias", "127.0.0.11"])?
        .stdout;
    expect_contains("A after connect", &via, &format!("Address: {web_ip}"))?;
    s.docker(&["network", "disconnect", "dnsnet", "late"])?
        .ok()?;
    ensure!(
        !dns_listening(&late_ns)?,
        "DNS still listening after disconnect"
    );

    // An engine killed and restarted reopens the sockets of running containers.
    let netns = web["NetworkSettings"]["SandboxKey"]
        .as_str()
        .context("web's SandboxKey")?
        .to_string();
    let mut s = s;
    s.kill_daemon(Daemon::Engine)?;
    ensure!(
        !dns_listening(&netns)?,
        "DNS still answering with the engine dead"
    );
    s.start_daemon(Daemon::Engine)?;
    wait_until(
        "web's DNS server to reopen",
        Duration::from_secs(20),
        || Ok(dns_listening(&netns)?.then_some(())),
    )?;
    let again = s.docker(&["exec", "web", "nslookup", "webalias"])?.stdout;
    expect_contains(
        "A after an engine restart",
        &again,
        &format!("Address: {web_ip}"),
    )?;

    // Stopping the container closes them.
    s.docker(&["stop", "-t", "1", "web"])?.ok()?;
    ensure!(!dns_listening(&netns)?, "DNS still listening after stop");

    s.docker(&["rm", "-f", "web", "hidden", "late"])?.ok()?;
    s.docker(&["network", "rm", "dnsnet", "othernet"])?.ok()?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}
