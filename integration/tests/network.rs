//! Container networking on the default bridge (each stack has its own `bt<random>0`
//! bridge, 10.x.y.0/24 subnet and nftables table): published TCP and UDP ports reached
//! from the host's loopback, container to container by IP, `none` and `host`, and leak
//! checks (bridge ports, netns files, DNAT rules, bridge and table after the engine stops).
//! Traffic only ever goes between the host's loopback and the stack's own containers.

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddrV4, TcpListener, TcpStream, UdpSocket};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, ensure, Context, Result};
use berth_integration::stack::Daemon;
use berth_integration::{wait_until, Stack};
use serde_json::Value;

use crate::common::{container_id, expect_contains, inspect, Spec, DOCKER};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "network::published_tcp_port_from_localhost",
            needs: DOCKER,
            run: published_tcp,
        },
        Spec {
            name: "network::hairpin_container_reaches_its_own_published_port",
            needs: DOCKER,
            run: hairpin,
        },
        Spec {
            name: "network::published_udp_port_reaches_the_container",
            needs: DOCKER,
            run: published_udp,
        },
        Spec {
            name: "network::container_to_container_by_ip",
            needs: DOCKER,
            run: container_to_container,
        },
        Spec {
            name: "network::none_host_and_container_modes",
            needs: DOCKER,
            run: none_and_host,
        },
        Spec {
            name: "network::host_port_in_use_leaves_nothing",
            needs: DOCKER,
            run: port_in_use,
        },
        Spec {
            name: "network::engine_kill_keeps_published_port",
            needs: DOCKER,
            run: engine_kill_keeps_port,
        },
        Spec {
            name: "network::ls_and_inspect_builtin_networks",
            needs: DOCKER,
            run: ls_and_inspect,
        },
        Spec {
            name: "network::restart_removes_endpoints_without_a_container",
            needs: DOCKER,
            run: restart_removes_orphans,
        },
    ]
}

/// A web server on port 80 answering "hello from <name>".
pub(crate) fn httpd_args(name: &str) -> String {
    format!(
        "mkdir -p /www && echo hello from {name} > /www/index.html && exec httpd -f -p 80 -h /www"
    )
}

/// `GET /` from `port` on 127.0.0.1, or the error.
pub(crate) fn http_get(port: u16) -> Result<String> {
    let addr = SocketAddrV4::new(Ipv4Addr::LOCALHOST, port);
    let mut s = TcpStream::connect_timeout(&addr.into(), Duration::from_secs(2))?;
    s.set_read_timeout(Some(Duration::from_secs(5)))?;
    s.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut body = String::new();
    s.read_to_string(&mut body)?;
    Ok(body)
}

/// Polls until `GET /` on `port` answers with `want` in the body.
pub(crate) fn wait_http(port: u16, want: &str) -> Result<()> {
    wait_until(
        &format!("127.0.0.1:{port} to serve {want:?}"),
        Duration::from_secs(20),
        || Ok(http_get(port).ok().filter(|b| b.contains(want)).map(|_| ())),
    )
}

/// The host port published for `key` (e.g. `80/tcp`) according to inspect.
pub(crate) fn host_port(v: &Value, key: &str) -> Result<u16> {
    let p = &v["NetworkSettings"]["Ports"][key][0]["HostPort"];
    p.as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no host port for {key} in {}", v["NetworkSettings"]))
}

pub(crate) fn container_ip(v: &Value) -> Result<Ipv4Addr> {
    v["NetworkSettings"]["IPAddress"]
        .as_str()
        .and_then(|s| s.parse().ok())
        .with_context(|| format!("no IPAddress in {}", v["NetworkSettings"]))
}

/// Interfaces plugged into the stack's bridge.
pub(crate) fn bridge_ports(s: &Stack) -> Vec<String> {
    std::fs::read_dir(Path::new("/sys/class/net").join(&s.bridge).join("brif"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn netns_files(s: &Stack) -> Vec<String> {
    std::fs::read_dir(s.dir.join("ex").join("netns"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

pub(crate) fn nft_table(name: &str) -> Option<String> {
    let out = Command::new("nft")
        .args(["list", "table", "ip", name])
        .output()
        .ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
}

/// After every container is gone: no veth on the bridge, no netns file, no DNAT rule.
pub(crate) fn expect_no_endpoints(s: &Stack) -> Result<()> {
    wait_until(
        "the bridge to have no ports",
        Duration::from_secs(10),
        || Ok(bridge_ports(s).is_empty().then_some(())),
    )?;
    ensure!(
        netns_files(s).is_empty(),
        "netns files left: {:?}",
        netns_files(s)
    );
    let table = nft_table(&s.firewall_table).unwrap_or_default();
    ensure!(!table.contains("dnat to"), "DNAT rules left:\n{table}");
    Ok(())
}

/// Stops the stack's engine cleanly and checks that its bridge and table went with it.
pub(crate) fn expect_engine_cleans_up(mut s: Stack) -> Result<()> {
    s.stop_daemon(Daemon::Engine, nix::sys::signal::Signal::SIGTERM)?;
    ensure!(
        !Path::new("/sys/class/net").join(&s.bridge).exists(),
        "bridge {} left after the engine stopped",
        s.bridge
    );
    ensure!(
        nft_table(&s.firewall_table).is_none(),
        "nft table {} left after the engine stopped",
        s.firewall_table
    );
    Ok(())
}

/// A port nothing listens on right now (the kernel's pick, released again).
pub(crate) fn free_port() -> Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn published_tcp() -> Result<()> {
    let s = Stack::with_busybox()?;
    let fixed = free_port()?;
    let spec = format!("127.0.0.1:{fixed}:80");
    let a = container_id(
        &s.docker(&[
            "run",
            "-d",
            "-p",
            &spec,
            "busybox",
            "sh",
            "-c",
            &httpd_args("a"),
        ])?
        .ok()?
        .stdout,
    )?;
    wait_http(fixed, "hello from a")?;
    // The namespace and its veth outlive a stop, so a restarted container keeps its
    // address and its published port.
    let ip = container_ip(&inspect(&s, &a)?)?;
    s.docker(&["restart", "-t", "1", &a])?.ok()?;
    wait_http(fixed, "hello from a")?;
    ensure!(
        container_ip(&inspect(&s, &a)?)? == ip,
        "address changed across restart"
    );
    // A host port picked by the engine (`-p 127.0.0.1::80`), read back from inspect.
    let b = container_id(
        &s.docker(&[
            "run",
            "-d",
            "-p",
            "127.0.0.1::80",
            "busybox",
            "sh",
            "-c",
            &httpd_args("b"),
        ])?
        .ok()?
        .stdout,
    )?;
    let v = inspect(&s, &b)?;
    let picked = host_port(&v, "80/tcp")?;
    ensure!(picked != fixed, "two containers got host port {picked}");
    wait_http(picked, "hello from b")?;
    ensure!(
        v["NetworkSettings"]["Networks"]["bridge"]["Gateway"]
            .as_str()
            .is_some_and(|g| s.bip.starts_with(&format!("{g}/"))),
        "gateway is not the stack's bridge address {}: {}",
        s.bip,
        v["NetworkSettings"]
    );
    ensure!(
        bridge_ports(&s).len() == 2,
        "bridge ports {:?}",
        bridge_ports(&s)
    );
    s.docker(&["rm", "-f", &a, &b])?.ok()?;
    expect_no_endpoints(&s)?;
    ensure!(
        http_get(fixed).is_err(),
        "port {fixed} still answers after rm"
    );
    expect_engine_cleans_up(s)
}

/// busybox has no UDP server, so delivery is proven by the container's kernel: a
/// datagram to a closed port bumps `Udp: NoPorts` in the container's own /proc/net/snmp
/// and comes back as ICMP port-unreachable, which a connected socket reports as refused.
fn published_udp() -> Result<()> {
    let s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "-p",
            "127.0.0.1::5353/udp",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    let port = host_port(&inspect(&s, &id)?, "5353/udp")?;
    let no_ports = || -> Result<u64> {
        let out = s.docker(&["exec", &id, "cat", "/proc/net/snmp"])?.ok()?;
        let mut udp = out.stdout.lines().filter(|l| l.starts_with("Udp:"));
        let (names, values) = (udp.next().unwrap_or(""), udp.next().unwrap_or(""));
        let i = names
            .split_whitespace()
            .position(|n| n == "NoPorts")
            .context("no NoPorts column")?;
        Ok(values
            .split_whitespace()
            .nth(i)
            .context("short Udp line")?
            .parse()?)
    };
    let before = no_ports()?;
    let sock = UdpSocket::bind("127.0.0.1:0")?;
    sock.connect(SocketAddrV4::new(Ipv4Addr::LOCALHOST, port))?;
    sock.set_read_timeout(Some(Duration::from_millis(500)))?;
    wait_until(
        "a datagram to the published UDP port to be refused by the container",
        Duration::from_secs(20),
        || {
            sock.send(b"ping")?;
            let mut buf = [0u8; 16];
            Ok(match sock.recv(&mut buf) {
                Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused => Some(()),
                _ => None,
            })
        },
    )?;
    let after = no_ports()?;
    ensure!(after > before, "container Udp NoPorts {before} -> {after}");
    s.docker(&["rm", "-f", &id])?.ok()?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

fn container_to_container() -> Result<()> {
    let s = Stack::with_busybox()?;
    let web = container_id(
        &s.docker(&["run", "-d", "busybox", "sh", "-c", &httpd_args("web")])?
            .ok()?
            .stdout,
    )?;
    let ip = container_ip(&inspect(&s, &web)?)?;
    // busybox nc, not wget: this static busybox's wget crashes without the host's libs.
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc {ip} 80");
    let out = wait_until(
        "a second container to fetch from the first",
        Duration::from_secs(20),
        || {
            let out = s.docker(&["run", "--rm", "busybox", "sh", "-c", &fetch])?;
            Ok((out.code == 0).then_some(out.stdout))
        },
    )?;
    expect_contains("wget output", &out, "hello from web")?;
    s.docker(&["rm", "-f", &web])?.ok()?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

fn none_and_host() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ls = |mode: &str| -> Result<String> {
        let out = s
            .docker(&[
                "run",
                "--rm",
                "--network",
                mode,
                "busybox",
                "ls",
                "/sys/class/net",
            ])?
            .ok()?;
        Ok(out.stdout.split_whitespace().collect::<Vec<_>>().join(" "))
    };
    let none = ls("none")?;
    ensure!(none == "lo", "--network none interfaces: {none:?}");
    let bridge = ls("bridge")?;
    ensure!(
        bridge == "eth0 lo",
        "--network bridge interfaces: {bridge:?}"
    );
    // The hostname maps to the container's own address on the stack's subnet.
    let hosts = s
        .docker(&[
            "run",
            "--rm",
            "busybox",
            "sh",
            "-c",
            "grep -w \"$(hostname)\" /etc/hosts",
        ])?
        .ok()?
        .stdout;
    let prefix = s.bip.rsplit_once('.').map_or("", |(p, _)| p);
    ensure!(
        hosts.starts_with(&format!("{prefix}.")),
        "hostname line {hosts:?} is not on {}",
        s.bip
    );
    let host = ls("host")?;
    ensure!(
        host.split(' ').any(|i| i == s.bridge),
        "--network host does not see the host's {}: {host:?}",
        s.bridge
    );
    // container:<name> shares the other container's namespace: its loopback and eth0.
    let web = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            "web",
            "busybox",
            "sh",
            "-c",
            &httpd_args("web"),
        ])?
        .ok()?
        .stdout,
    )?;
    let fetch = "printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc 127.0.0.1 80";
    let got = wait_until(
        "a container:web sidecar to reach web on 127.0.0.1",
        Duration::from_secs(20),
        || {
            let out = s.docker(&[
                "run",
                "--rm",
                "--network",
                "container:web",
                "busybox",
                "sh",
                "-c",
                fetch,
            ])?;
            Ok((out.code == 0 && out.stdout.contains("hello from web")).then_some(()))
        },
    );
    got?;
    let shared = ls("container:web")?;
    ensure!(shared == "eth0 lo", "container:web interfaces: {shared:?}");
    let bad = s.docker(&[
        "run",
        "--rm",
        "--network",
        "container:nope",
        "busybox",
        "true",
    ])?;
    ensure!(bad.code != 0, "container:nope worked");
    expect_contains("container:nope", &bad.stderr, "No such container: nope")?;
    s.docker(&["rm", "-f", &web])?.ok()?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

fn port_in_use() -> Result<()> {
    let s = Stack::with_busybox()?;
    let held = TcpListener::bind("127.0.0.1:0")?;
    let port = held.local_addr()?.port();
    let spec = format!("127.0.0.1:{port}:80");
    let out = s.docker(&["run", "-d", "-p", &spec, "busybox", "sleep", "1000"])?;
    ensure!(
        out.code != 0,
        "run with a busy host port succeeded: {}",
        out.stdout
    );
    expect_contains(
        "docker run stderr",
        &out.stderr,
        "port is already allocated",
    )?;
    let ps = s.docker(&["ps", "-aq"])?.ok()?;
    ensure!(ps.out().is_empty(), "a container was left: {}", ps.out());
    expect_no_endpoints(&s)?;
    drop(held);
    expect_engine_cleans_up(s)
}

fn engine_kill_keeps_port() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "-p",
            "127.0.0.1::80",
            "busybox",
            "sh",
            "-c",
            &httpd_args("k"),
        ])?
        .ok()?
        .stdout,
    )?;
    let port = host_port(&inspect(&s, &id)?, "80/tcp")?;
    wait_http(port, "hello from k")?;
    s.kill_daemon(Daemon::Engine)?;
    // The rules live in the kernel, not in the engine.
    wait_http(port, "hello from k")?;
    s.start_daemon(Daemon::Engine)?;
    wait_http(port, "hello from k")?;
    let v = inspect(&s, &id)?;
    if host_port(&v, "80/tcp")? != port {
        bail!(
            "published port changed across the restart: {}",
            v["NetworkSettings"]
        );
    }
    s.docker(&["rm", "-f", &id])?.ok()?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

/// A crash between "endpoint made" and "container record written" leaves an endpoint with
/// no container; the next start removes its veth, netns and rules. Simulated by deleting
/// the record while the engine is down.
fn restart_removes_orphans() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "-p",
            "127.0.0.1::80",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    ensure!(
        bridge_ports(&s).len() == 1,
        "bridge ports {:?}",
        bridge_ports(&s)
    );
    ensure!(
        netns_files(&s) == [id.clone()],
        "netns files {:?}",
        netns_files(&s)
    );
    s.kill_daemon(Daemon::Engine)?;
    std::fs::remove_dir_all(s.dir.join("e").join("containers").join(&id))?;
    s.start_daemon(Daemon::Engine)?;
    expect_no_endpoints(&s)
}

fn ls_and_inspect() -> Result<()> {
    let s = Stack::with_busybox()?;
    let ls = s
        .docker(&["network", "ls", "--format", "{{.Name}} {{.Driver}}"])?
        .ok()?;
    let mut names: Vec<&str> = ls.stdout.lines().collect();
    names.sort_unstable();
    ensure!(
        names == ["bridge bridge", "host host", "none null"],
        "network ls: {names:?}"
    );
    let id = container_id(
        &s.docker(&["run", "-d", "--name", "web", "busybox", "sleep", "1000"])?
            .ok()?
            .stdout,
    )?;
    let out = s.docker(&["network", "inspect", "bridge"])?.ok()?;
    let v: Value = serde_json::from_str(&out.stdout)?;
    let net = &v[0];
    let subnet = net["IPAM"]["Config"][0]["Subnet"].as_str().unwrap_or("");
    let want = s.bip.replace(".1/24", ".0/24");
    ensure!(subnet == want, "subnet {subnet:?}, want {want:?}");
    ensure!(
        net["Options"]["com.docker.network.bridge.name"] == s.bridge.as_str(),
        "options {}",
        net["Options"]
    );
    ensure!(
        net["Containers"][&id]["Name"] == "web",
        "containers {}",
        net["Containers"]
    );
    let ip = container_ip(&inspect(&s, &id)?)?;
    ensure!(
        net["Containers"][&id]["IPv4Address"] == format!("{ip}/24").as_str(),
        "containers {}",
        net["Containers"]
    );
    let bad = s.docker(&["network", "inspect", "nope"])?;
    ensure!(bad.code != 0, "inspect of an unknown network worked");
    expect_contains(
        "network inspect nope",
        &bad.stderr,
        "network nope not found",
    )?;
    s.docker(&["rm", "-f", &id])?.ok()?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

/// A container reaching its own published port through the host's address on its bridge:
/// the DNATed packet goes back out the port it came in by (hairpin mode), and is
/// masqueraded so the reply returns through the host.
fn hairpin() -> Result<()> {
    let s = Stack::with_busybox()?;
    let port = free_port()?;
    let spec = format!("{port}:80");
    let a = container_id(
        &s.docker(&[
            "run",
            "-d",
            "-p",
            &spec,
            "busybox",
            "sh",
            "-c",
            &httpd_args("self"),
        ])?
        .ok()?
        .stdout,
    )?;
    wait_http(port, "hello from self")?;
    let gateway = inspect(&s, &a)?["NetworkSettings"]["Gateway"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    ensure!(!gateway.is_empty(), "no gateway in inspect");
    let fetch = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 {gateway} {port}");
    let out = s.docker(&["exec", &a, "sh", "-c", &fetch])?.ok()?;
    expect_contains(
        "container → own published port",
        &out.stdout,
        "hello from self",
    )?;
    s.docker(&["rm", "-f", &a])?.ok()?;
    Ok(())
}
