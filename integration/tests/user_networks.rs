//! User-defined bridge networks through the real docker CLI: create/ls/inspect/rm/prune
//! with dockerd's errors, containers on them (`--ip`, `--mac-address`,
//! `--network-alias`), isolation, `--internal`, connect/disconnect, and engine restarts.
//! Every network uses a bridge named after the stack (`bt<random>N`) and a free
//! 10.1-63.x.0/24 subnet; traffic only goes between the stack's own containers.

use std::path::Path;
use std::time::Duration;

use anyhow::{ensure, Context, Result};
use berth_integration::cmd::Output;
use berth_integration::http::request;
use berth_integration::prereq::Need;
use berth_integration::stack::Daemon;
use berth_integration::{wait_until, Stack};
use rand::Rng;
use serde_json::Value;

use crate::common::{container_id, expect_contains, inspect, Spec, DOCKER};
use crate::network::{bridge_ports, expect_engine_cleans_up, expect_no_endpoints, nft_table};

pub fn tests() -> Vec<Spec> {
    vec![
        Spec {
            name: "user_networks::create_ls_inspect_rm_prune",
            needs: DOCKER,
            run: create_ls_inspect_rm,
        },
        Spec {
            name: "user_networks::bad_input_leaves_nothing",
            needs: DOCKER,
            run: bad_input,
        },
        Spec {
            name: "user_networks::containers_with_ip_mac_and_alias",
            needs: DOCKER,
            run: containers_on_a_network,
        },
        Spec {
            name: "user_networks::isolation_and_internal",
            needs: DOCKER,
            run: isolation_and_internal,
        },
        Spec {
            name: "user_networks::connect_disconnect_running_and_created",
            needs: DOCKER,
            run: connect_disconnect,
        },
        Spec {
            name: "user_networks::engine_kill_keeps_networking_and_removes_leftovers",
            needs: DOCKER,
            run: engine_kill_and_leftovers,
        },
        Spec {
            name: "user_networks::compose_project_network",
            needs: &[Need::Root, Need::Busybox, Need::Docker, Need::Compose],
            run: compose_project_network,
        },
    ]
}

/// Subnets routed on the host now (from /proc/net/route: destination and mask, hex).
fn routed() -> Vec<(u32, u32)> {
    std::fs::read_to_string("/proc/net/route")
        .unwrap_or_default()
        .lines()
        .skip(1)
        .filter_map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let dst = u32::from_str_radix(f.get(1)?, 16).ok()?.swap_bytes();
            let mask = u32::from_str_radix(f.get(7)?, 16).ok()?.swap_bytes();
            Some((dst, mask))
        })
        .collect()
}

/// A random 10.1-63.x.0/24 no host route covers (stacks' default bridges use 10.64+),
/// as its first three octets, e.g. `10.7.200`.
pub(crate) fn free_subnet() -> String {
    let routes = routed();
    loop {
        let (a, b) = (
            rand::rng().random_range(1..=63u32),
            rand::rng().random_range(0..=255u32),
        );
        let net = (10 << 24) | (a << 16) | (b << 8);
        if !routes
            .iter()
            .any(|(dst, mask)| *mask != 0 && (net & mask) == (dst & mask))
        {
            return format!("10.{a}.{b}");
        }
    }
}

pub(crate) fn link_exists(name: &str) -> bool {
    Path::new("/sys/class/net").join(name).exists()
}

/// `docker network create` with the stack's bridge name `n` and a free subnet; returns
/// (network ID, subnet prefix like `10.7.200`, bridge name).
pub(crate) fn create_net(
    s: &Stack,
    name: &str,
    n: u8,
    extra: &[&str],
) -> Result<(String, String, String)> {
    let prefix = free_subnet();
    let bridge = s.net_bridge(n);
    let subnet = format!("{prefix}.0/24");
    let opt = format!("com.docker.network.bridge.name={bridge}");
    let mut args = vec!["network", "create", "--subnet", &subnet, "-o", &opt];
    args.extend_from_slice(extra);
    args.push(name);
    let out = s.docker(&args)?.ok()?;
    Ok((out.stdout.trim().to_string(), prefix, bridge))
}

fn net_inspect(s: &Stack, name: &str) -> Result<Value> {
    let out = s.docker(&["network", "inspect", name])?.ok()?;
    let v: Value = serde_json::from_str(&out.stdout)?;
    Ok(v[0].clone())
}

/// Nothing of a removed network is left: no bridge, no rule naming it.
pub(crate) fn expect_network_gone(s: &Stack, bridge: &str) -> Result<()> {
    ensure!(!link_exists(bridge), "bridge {bridge} left");
    let table = nft_table(&s.firewall_table).unwrap_or_default();
    ensure!(
        !table.contains(&format!("\"{bridge}\"")),
        "rules for {bridge} left:\n{table}"
    );
    Ok(())
}

fn create_ls_inspect_rm() -> Result<()> {
    let s = Stack::with_busybox()?;
    let prefix = free_subnet();
    let bridge = s.net_bridge(1);
    let (subnet, range, gw) = (
        format!("{prefix}.0/24"),
        format!("{prefix}.128/25"),
        format!("{prefix}.254"),
    );
    let opt = format!("com.docker.network.bridge.name={bridge}");
    let id = s
        .docker(&[
            "network",
            "create",
            "--subnet",
            &subnet,
            "--ip-range",
            &range,
            "--gateway",
            &gw,
            "--label",
            "env=prod",
            "--attachable",
            "-o",
            &opt,
            "front",
        ])?
        .ok()?
        .stdout
        .trim()
        .to_string();
    ensure!(id.len() == 64, "network create printed {id:?}");
    ensure!(link_exists(&bridge), "bridge {bridge} not made");
    let (_, _, back_bridge) = create_net(&s, "back", 2, &["--internal"])?;
    // ls: filters, -q, --format.
    let names = |args: &[&str]| -> Result<Vec<String>> {
        let mut full = vec!["network", "ls", "--format", "{{.Name}}"];
        full.extend_from_slice(args);
        let mut v: Vec<String> = s
            .docker(&full)?
            .ok()?
            .stdout
            .lines()
            .map(String::from)
            .collect();
        v.sort();
        Ok(v)
    };
    ensure!(
        names(&[])? == ["back", "bridge", "front", "host", "none"],
        "ls: {:?}",
        names(&[])?
    );
    ensure!(names(&["-f", "name=fro"])? == ["front"], "name filter");
    ensure!(
        names(&["-f", "label=env=prod"])? == ["front"],
        "label filter"
    );
    ensure!(
        names(&["-f", "type=custom"])? == ["back", "front"],
        "type filter"
    );
    ensure!(names(&["-f", "driver=null"])? == ["none"], "driver filter");
    ensure!(
        names(&["-f", &format!("id={}", &id[..12])])? == ["front"],
        "id filter"
    );
    let q = s
        .docker(&["network", "ls", "-q", "-f", "name=front"])?
        .ok()?;
    ensure!(q.stdout.trim() == &id[..12], "ls -q: {:?}", q.stdout);
    // inspect: dockerd's shape.
    let v = net_inspect(&s, "front")?;
    ensure!(
        v["Id"] == id.as_str() && v["Driver"] == "bridge",
        "inspect {v}"
    );
    let cfg = &v["IPAM"]["Config"][0];
    ensure!(
        cfg["Subnet"] == format!("{prefix}.0/24").as_str()
            && cfg["IPRange"] == format!("{prefix}.128/25").as_str()
            && cfg["Gateway"] == format!("{prefix}.254").as_str(),
        "IPAM {}",
        v["IPAM"]
    );
    ensure!(v["Labels"]["env"] == "prod", "labels {}", v["Labels"]);
    ensure!(
        v["Attachable"] == true && v["Internal"] == false,
        "flags {v}"
    );
    ensure!(
        v["Options"]["com.docker.network.bridge.name"] == bridge.as_str(),
        "options {}",
        v["Options"]
    );
    ensure!(
        net_inspect(&s, "back")?["Internal"] == true,
        "back not internal"
    );
    ensure!(
        net_inspect(&s, &id[..10])?["Name"] == "front",
        "inspect by ID prefix"
    );
    // A container on it: rm is refused with dockerd's message, the container is listed.
    let c = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            "c1",
            "--network",
            "front",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    let v = net_inspect(&s, "front")?;
    let ip = v["Containers"][&c]["IPv4Address"].as_str().unwrap_or("");
    ensure!(
        ip.starts_with(&format!("{prefix}."))
            && ip.ends_with("/24")
            && v["Containers"][&c]["Name"] == "c1",
        "containers {}",
        v["Containers"]
    );
    // The ip-range (upper half) is where dynamic addresses come from.
    let last: u8 = ip
        .trim_end_matches("/24")
        .rsplit('.')
        .next()
        .and_then(|o| o.parse().ok())
        .context("address")?;
    ensure!(last >= 128, "address {ip} outside --ip-range");
    let busy = s.docker(&["network", "rm", "front"])?;
    ensure!(busy.code != 0, "rm of a network in use worked");
    expect_contains(
        "network rm front",
        &busy.stderr,
        &format!("error while removing network: network front has active endpoints (name:\"c1\" id:\"{}\")", &c[..12]),
    )?;
    // prune keeps the used one, removes the unused one.
    let pruned = s.docker(&["network", "prune", "-f"])?.ok()?;
    expect_contains("network prune", &pruned.stdout, "back")?;
    ensure!(
        !pruned.stdout.contains("front"),
        "prune removed front: {}",
        pruned.stdout
    );
    expect_network_gone(&s, &back_bridge)?;
    s.docker(&["rm", "-f", &c])?.ok()?;
    s.docker(&["network", "rm", "front"])?.ok()?;
    expect_network_gone(&s, &bridge)?;
    let gone = s.docker(&["network", "inspect", "front"])?;
    expect_contains("inspect removed", &gone.stderr, "network front not found")?;
    ensure!(
        names(&[])? == ["bridge", "host", "none"],
        "ls after rm: {:?}",
        names(&[])?
    );
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

/// dockerd's errors, and nothing made: through the CLI where it sends the request, and
/// raw API requests for the checks the CLI already does itself.
fn bad_input() -> Result<()> {
    let s = Stack::with_busybox()?;
    let (_, prefix, bridge) = create_net(&s, "n1", 1, &[])?;
    let bridge2 = s.net_bridge(2);
    let opt2 = format!("com.docker.network.bridge.name={bridge2}");
    let subnet = format!("{prefix}.0/24");
    let dup = s.docker(&["network", "create", "-o", &opt2, "n1"])?;
    expect_contains(
        "duplicate",
        &dup.stderr,
        "network with name n1 already exists",
    )?;
    let overlap = s.docker(&["network", "create", "--subnet", &subnet, "-o", &opt2, "n2"])?;
    expect_contains(
        "overlap",
        &overlap.stderr,
        "invalid pool request: Pool overlaps with other one on this address space",
    )?;
    let predefined = s.docker(&["network", "create", "host"])?;
    expect_contains(
        "predefined",
        &predefined.stderr,
        "host is a pre-defined network and cannot be created",
    )?;
    let unknown = s.docker(&["network", "rm", "nope"])?;
    expect_contains("rm unknown", &unknown.stderr, "network nope not found")?;
    let run = s.docker(&["run", "--rm", "--network", "nope", "busybox", "true"])?;
    ensure!(run.code != 0, "run on an unknown network worked");
    expect_contains("run unknown", &run.stderr, "network nope not found")?;
    let bip_rm = s.docker(&["network", "rm", "bridge"])?;
    expect_contains(
        "rm bridge",
        &bip_rm.stderr,
        "bridge is a pre-defined network and cannot be removed",
    )?;
    // The daemon's own checks, as the API reports them (status and message).
    let raw = |body: &str| {
        request(
            &s.engine_sock(),
            "POST",
            "/v1.47/networks/create",
            body.as_bytes(),
        )
    };
    let other = free_subnet();
    for (body, status, msg) in [
        (
            format!(
                r#"{{"Name":"x","Options":{{"com.docker.network.bridge.name":"{bridge2}"}},"IPAM":{{"Config":[{{"Subnet":"{other}.0/24","Gateway":"10.0.0.1"}}]}}}}"#
            ),
            400,
            "no matching subnet for gateway 10.0.0.1".to_string(),
        ),
        (
            format!(
                r#"{{"Name":"x","Options":{{"com.docker.network.bridge.name":"{bridge2}"}},"IPAM":{{"Config":[{{"Subnet":"{other}.0/24","IPRange":"10.0.0.0/25"}}]}}}}"#
            ),
            400,
            "no matching subnet for range 10.0.0.0/25".to_string(),
        ),
        (
            format!(
                r#"{{"Name":"n1","Options":{{"com.docker.network.bridge.name":"{bridge2}"}}}}"#
            ),
            409,
            "network with name n1 already exists".to_string(),
        ),
        (
            format!(
                r#"{{"Name":"x","Options":{{"com.docker.network.bridge.name":"{bridge2}"}},"IPAM":{{"Config":[{{"Subnet":"{subnet}"}}]}}}}"#
            ),
            403,
            "Pool overlaps".to_string(),
        ),
        (
            r#"{"Name":"x","Driver":"overlay"}"#.to_string(),
            404,
            "plugin \"overlay\" not found".to_string(),
        ),
        (
            format!(r#"{{"Name":"x","Options":{{"com.docker.network.bridge.name":"{bridge}"}}}}"#),
            409,
            format!("interface {bridge} already exists"),
        ),
    ] {
        let r = raw(&body)?;
        let message: Value = serde_json::from_str(&r.body).unwrap_or_default();
        let message = message["message"].as_str().unwrap_or_default();
        ensure!(
            r.status == status && message.contains(&msg),
            "{body}: {} {}",
            r.status,
            r.body
        );
    }
    // --ip on the default bridge, and an address already taken.
    let ip_default = s.docker(&["run", "--rm", "--ip", "10.1.1.1", "busybox", "true"])?;
    expect_contains(
        "--ip on bridge",
        &ip_default.stderr,
        "user specified IP address is supported on user defined networks only",
    )?;
    let ip = format!("{prefix}.50");
    let a = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--network",
            "n1",
            "--ip",
            &ip,
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    let taken = s.docker(&[
        "run",
        "-d",
        "--network",
        "n1",
        "--ip",
        &ip,
        "busybox",
        "sleep",
        "1000",
    ])?;
    ensure!(taken.code != 0, "a taken --ip worked");
    expect_contains("taken ip", &taken.stderr, "Address already in use")?;
    let outside = s.docker(&[
        "run",
        "-d",
        "--network",
        "n1",
        "--ip",
        "10.0.0.9",
        "busybox",
        "true",
    ])?;
    expect_contains(
        "ip outside",
        &outside.stderr,
        "no configured subnet or ip-range contain the IP address 10.0.0.9",
    )?;
    let ps = s.docker(&["ps", "-aq"])?.ok()?;
    ensure!(ps.out().trim() == &a[..12], "containers left: {}", ps.out());
    ensure!(
        !link_exists(&bridge2),
        "bridge {bridge2} made by a failed create"
    );
    ensure!(
        bridge_ports_of(&bridge).len() == 1,
        "ports {:?}",
        bridge_ports_of(&bridge)
    );
    s.docker(&["rm", "-f", &a])?.ok()?;
    s.docker(&["network", "rm", "n1"])?.ok()?;
    expect_network_gone(&s, &bridge)?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

/// Interfaces plugged into the bridge `name`.
pub(crate) fn bridge_ports_of(name: &str) -> Vec<String> {
    std::fs::read_dir(Path::new("/sys/class/net").join(name).join("brif"))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default()
}

/// Fetches `GET /` from `ip:80` inside a new container on `net`; the body or an error.
pub(crate) fn fetch_from(s: &Stack, net: &str, ip: &str) -> Result<Output> {
    let cmd = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80");
    s.docker(&["run", "--rm", "--network", net, "busybox", "sh", "-c", &cmd])
}

fn containers_on_a_network() -> Result<()> {
    let s = Stack::with_busybox()?;
    let (_, prefix, bridge) = create_net(&s, "app", 1, &[])?;
    let ip = format!("{prefix}.77");
    let mac = "02:aa:bb:cc:dd:01";
    let web = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "app",
            "--ip",
            &ip,
            "--mac-address",
            mac,
            "--network-alias",
            "www",
            "--network-alias",
            "site",
            "busybox",
            "sh",
            "-c",
            &crate::network::httpd_args("web"),
        ])?
        .ok()?
        .stdout,
    )?;
    let addr = s
        .docker(&["exec", &web, "ip", "addr", "show", "eth0"])?
        .ok()?;
    expect_contains("ip addr", &addr.stdout, &format!("inet {ip}/24"))?;
    expect_contains("ip addr", &addr.stdout, mac)?;
    let route = s.docker(&["exec", &web, "ip", "route"])?.ok()?;
    expect_contains(
        "ip route",
        &route.stdout,
        &format!("default via {prefix}.1 dev eth0"),
    )?;
    let v = inspect(&s, &web)?;
    let n = &v["NetworkSettings"]["Networks"]["app"];
    ensure!(
        n["IPAddress"] == ip.as_str()
            && n["MacAddress"] == mac
            && n["Gateway"] == format!("{prefix}.1").as_str()
            && n["IPAMConfig"]["IPv4Address"] == ip.as_str(),
        "inspect networks {}",
        v["NetworkSettings"]["Networks"]
    );
    let aliases: Vec<&str> = n["Aliases"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    ensure!(aliases == ["www", "site"], "aliases {aliases:?}");
    let hosts = s.docker(&["exec", &web, "cat", "/etc/hosts"])?.ok()?;
    expect_contains(
        "/etc/hosts",
        &hosts.stdout,
        &format!("{ip}\t{}", &web[..12]),
    )?;
    // Another container on the network reaches it by address.
    let got = wait_until(
        "a container on app to fetch from web",
        Duration::from_secs(20),
        || {
            let out = fetch_from(&s, "app", &ip)?;
            Ok((out.code == 0 && out.stdout.contains("hello from web")).then_some(()))
        },
    );
    got?;
    ensure!(
        bridge_ports_of(&bridge).len() == 1,
        "ports {:?}",
        bridge_ports_of(&bridge)
    );
    s.docker(&["rm", "-f", &web])?.ok()?;
    wait_until(
        "app's bridge to have no ports",
        Duration::from_secs(10),
        || Ok(bridge_ports_of(&bridge).is_empty().then_some(())),
    )?;
    ensure!(bridge_ports(&s).is_empty(), "default bridge ports left");
    s.docker(&["network", "rm", "app"])?.ok()?;
    expect_network_gone(&s, &bridge)?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

/// Runs `GET /` against `ip:80` from inside the running container `c`.
fn fetch_in(s: &Stack, c: &str, ip: &str) -> Result<Output> {
    let cmd = format!("printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 {ip} 80");
    s.docker(&["exec", c, "sh", "-c", &cmd])
}

fn run_httpd(s: &Stack, name: &str, net: &str) -> Result<(String, String)> {
    let id = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            name,
            "--network",
            net,
            "busybox",
            "sh",
            "-c",
            &crate::network::httpd_args(name),
        ])?
        .ok()?
        .stdout,
    )?;
    let v = inspect(s, &id)?;
    let ip = v["NetworkSettings"]["Networks"][net]["IPAddress"]
        .as_str()
        .filter(|ip| !ip.is_empty())
        .with_context(|| format!("no address on {net}: {}", v["NetworkSettings"]))?
        .to_string();
    Ok((id, ip))
}

/// Waits until a container on `net` gets `hello from <name>` from `ip`.
fn wait_reaches(s: &Stack, net: &str, ip: &str, name: &str) -> Result<()> {
    wait_until(
        &format!("a container on {net} to reach {name} at {ip}"),
        Duration::from_secs(20),
        || {
            let out = fetch_from(s, net, ip)?;
            Ok((out.code == 0 && out.stdout.contains(&format!("hello from {name}"))).then_some(()))
        },
    )
}

fn isolation_and_internal() -> Result<()> {
    let s = Stack::with_busybox()?;
    let (_, _, br_a) = create_net(&s, "a", 1, &[])?;
    let (_, _, br_b) = create_net(&s, "b", 2, &[])?;
    let (_, prefix_i, br_i) = create_net(&s, "i", 3, &["--internal"])?;
    let (web, ip_a) = run_httpd(&s, "weba", "a")?;
    wait_reaches(&s, "a", &ip_a, "weba")?;
    // Another user network cannot reach it, nor can the default bridge.
    for net in ["b", "bridge"] {
        let out = fetch_from(&s, net, &ip_a)?;
        ensure!(
            !out.stdout.contains("hello from weba"),
            "a container on {net} reached a's web server"
        );
    }
    // Internal: its own members talk, nothing else is reachable, no default route.
    let (webi, ip_i) = run_httpd(&s, "webi", "i")?;
    wait_reaches(&s, "i", &ip_i, "webi")?;
    let out = fetch_from(&s, "i", &ip_a)?;
    ensure!(
        !out.stdout.contains("hello from weba"),
        "a container on internal i reached network a"
    );
    let route = s
        .docker(&["run", "--rm", "--network", "i", "busybox", "ip", "route"])?
        .ok()?;
    ensure!(
        !route.stdout.contains("default"),
        "internal network has a default route: {}",
        route.stdout
    );
    expect_contains("internal route", &route.stdout, &format!("{prefix_i}.0/24"))?;
    let table = nft_table(&s.firewall_table).unwrap_or_default();
    expect_contains(
        "nft table",
        &table,
        &format!("iifname \"{br_i}\" oifname != \"{br_i}\" drop"),
    )?;
    s.docker(&["rm", "-f", &web, &webi])?.ok()?;
    s.docker(&["network", "rm", "a", "b", "i"])?.ok()?;
    for br in [&br_a, &br_b, &br_i] {
        expect_network_gone(&s, br)?;
    }
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

fn connect_disconnect() -> Result<()> {
    let s = Stack::with_busybox()?;
    let (_, prefix_a, br_a) = create_net(&s, "a", 1, &[])?;
    let (_, _, br_b) = create_net(&s, "b", 2, &[])?;
    let (web, ip_a) = run_httpd(&s, "weba", "a")?;
    wait_reaches(&s, "a", &ip_a, "weba")?;
    let c = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            "cc",
            "--network",
            "b",
            "busybox",
            "sleep",
            "1000",
        ])?
        .ok()?
        .stdout,
    )?;
    let before = fetch_in(&s, "cc", &ip_a)?;
    ensure!(
        !before.stdout.contains("hello from weba"),
        "c reached a before connecting"
    );
    let ip_c = format!("{prefix_a}.99");
    s.docker(&[
        "network", "connect", "--ip", &ip_c, "--alias", "cee", "a", "cc",
    ])?
    .ok()?;
    let ifs = s.docker(&["exec", "cc", "ls", "/sys/class/net"])?.ok()?;
    let ifs: Vec<&str> = ifs.stdout.split_whitespace().collect();
    ensure!(
        ifs == ["eth0", "eth1", "lo"],
        "interfaces after connect: {ifs:?}"
    );
    let addr = s
        .docker(&["exec", "cc", "ip", "addr", "show", "eth1"])?
        .ok()?;
    expect_contains("eth1", &addr.stdout, &format!("inet {ip_c}/24"))?;
    wait_until(
        "c to reach weba after connect",
        Duration::from_secs(20),
        || {
            let out = fetch_in(&s, "cc", &ip_a)?;
            Ok((out.code == 0 && out.stdout.contains("hello from weba")).then_some(()))
        },
    )?;
    let hosts = s.docker(&["exec", "cc", "cat", "/etc/hosts"])?.ok()?;
    expect_contains("hosts after connect", &hosts.stdout, &format!("{ip_c}\t"))?;
    let v = inspect(&s, &c)?;
    let nets = &v["NetworkSettings"]["Networks"];
    ensure!(
        nets["a"]["IPAddress"] == ip_c.as_str()
            && nets["a"]["Aliases"][0] == "cee"
            && nets["b"].is_object(),
        "networks after connect: {nets}"
    );
    let again = s.docker(&["network", "connect", "a", "cc"])?;
    expect_contains(
        "connect twice",
        &again.stderr,
        "endpoint with name cc already exists in network a",
    )?;
    s.docker(&["network", "disconnect", "a", "cc"])?.ok()?;
    let ifs = s.docker(&["exec", "cc", "ls", "/sys/class/net"])?.ok()?;
    let ifs: Vec<&str> = ifs.stdout.split_whitespace().collect();
    ensure!(
        ifs == ["eth0", "lo"],
        "interfaces after disconnect: {ifs:?}"
    );
    let after = fetch_in(&s, "cc", &ip_a)?;
    ensure!(
        !after.stdout.contains("hello from weba"),
        "c still reaches a after disconnect"
    );
    let hosts = s.docker(&["exec", "cc", "cat", "/etc/hosts"])?.ok()?;
    ensure!(
        !hosts.stdout.contains(&format!("{ip_c}\t")),
        "hosts line left: {}",
        hosts.stdout
    );
    let twice = s.docker(&["network", "disconnect", "a", "cc"])?;
    expect_contains(
        "disconnect twice",
        &twice.stderr,
        "container cc is not connected to network a",
    )?;
    // A created (not started) container: connected before its first start.
    let d = container_id(
        &s.docker(&[
            "create",
            "--name",
            "dd",
            "--network",
            "b",
            "busybox",
            "sh",
            "-c",
            "ls /sys/class/net | tr '\\n' ' '; ip -4 addr show eth1",
        ])?
        .ok()?
        .stdout,
    )?;
    s.docker(&["network", "connect", "a", "dd"])?.ok()?;
    let out = s.docker(&["start", "-a", "dd"])?.ok()?;
    expect_contains("created container", &out.stdout, "eth0 eth1 lo")?;
    expect_contains(
        "created container",
        &out.stdout,
        &format!("inet {prefix_a}."),
    )?;
    // Modes without a namespace of their own are refused.
    let h = container_id(
        &s.docker(&["create", "--network", "host", "busybox", "true"])?
            .ok()?
            .stdout,
    )?;
    let refused = s.docker(&["network", "connect", "a", &h])?;
    expect_contains(
        "connect host container",
        &refused.stderr,
        "container sharing network namespace with another container or host cannot be connected to any other network",
    )?;
    let unknown = s.docker(&["network", "connect", "a", "nosuch"])?;
    expect_contains(
        "connect unknown",
        &unknown.stderr,
        "No such container: nosuch",
    )?;
    s.docker(&["rm", "-f", &web, &c, &d, &h])?.ok()?;
    s.docker(&["network", "rm", "a", "b"])?.ok()?;
    for br in [&br_a, &br_b] {
        expect_network_gone(&s, br)?;
    }
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

/// SIGKILL of the engine: running containers on user networks keep networking, and the
/// next start removes what a crash left (a veth nobody owns on a network's bridge, the
/// bridge of a network whose removal was cut short).
fn engine_kill_and_leftovers() -> Result<()> {
    let mut s = Stack::with_busybox()?;
    let (_, _, br_a) = create_net(&s, "a", 1, &[])?;
    let (_, _, br_gone) = create_net(&s, "gone", 2, &[])?;
    let web = container_id(
        &s.docker(&[
            "run",
            "-d",
            "--name",
            "web",
            "--network",
            "a",
            "-p",
            "127.0.0.1::80",
            "busybox",
            "sh",
            "-c",
            &crate::network::httpd_args("web"),
        ])?
        .ok()?
        .stdout,
    )?;
    let v = inspect(&s, &web)?;
    let port = crate::network::host_port(&v, "80/tcp")?;
    let ip = v["NetworkSettings"]["Networks"]["a"]["IPAddress"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    crate::network::wait_http(port, "hello from web")?;
    s.kill_daemon(Daemon::Engine)?;
    crate::network::wait_http(port, "hello from web")?;
    // A crash in the middle of `network rm gone`: the record is gone, the bridge is not.
    let state_path = s.dir.join("e").join("network").join("state.json");
    let mut state: Value = serde_json::from_slice(&std::fs::read(&state_path)?)?;
    let gone_id = state["networks"]
        .as_object()
        .and_then(|m| m.iter().find(|(_, n)| n["name"] == "gone"))
        .map(|(id, _)| id.clone())
        .context("network gone not in the state")?;
    state["networks"]
        .as_object_mut()
        .context("networks")?
        .remove(&gone_id);
    state["doomed_bridges"] = serde_json::json!([br_gone]);
    std::fs::write(&state_path, serde_json::to_vec(&state)?)?;
    // A veth on a's bridge that no endpoint owns (a crash between veth and record).
    let (stray, peer) = (s.net_bridge(7), s.net_bridge(8));
    let ip_cmd = |args: &[&str]| -> Result<()> {
        let st = std::process::Command::new("ip").args(args).status()?;
        ensure!(st.success(), "ip {args:?} failed");
        Ok(())
    };
    ip_cmd(&["link", "add", &stray, "type", "veth", "peer", "name", &peer])?;
    ip_cmd(&["link", "set", &stray, "master", &br_a])?;
    s.start_daemon(Daemon::Engine)?;
    ensure!(
        !link_exists(&stray) && !link_exists(&peer),
        "stray veth left"
    );
    expect_network_gone(&s, &br_gone)?;
    crate::network::wait_http(port, "hello from web")?;
    wait_reaches(&s, "a", &ip, "web")?;
    let ls = s
        .docker(&["network", "ls", "--format", "{{.Name}}"])?
        .ok()?;
    ensure!(!ls.stdout.lines().any(|l| l == "gone"), "gone still listed");
    s.docker(&["rm", "-f", &web])?.ok()?;
    s.docker(&["network", "rm", "a"])?.ok()?;
    expect_network_gone(&s, &br_a)?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}

/// docker-compose v1 creates a project network (docker-py sends `null` for unset
/// fields), connects both services to it, and `down` removes it again.
fn compose_project_network() -> Result<()> {
    let s = Stack::with_busybox()?;
    let prefix = free_subnet();
    let subnet = format!("{prefix}.0/24");
    let br = s.net_bridge(1);
    let file = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("compose")
        .join("network_ipam.yml");
    let compose = |args: &[&str]| -> Result<Output> {
        let mut c = std::process::Command::new(berth_integration::prereq::COMPOSE);
        c.arg("--no-ansi")
            .args(["-p", "proj", "-f"])
            .arg(&file)
            .args(args)
            .env("DOCKER_HOST", s.engine_host())
            .env("DOCKER_CONFIG", s.dir.join("dc"))
            .env("BR", &br)
            .env("SUBNET", &subnet)
            .env("COMPOSE_INTERACTIVE_NO_CLI", "1")
            .env_remove("DOCKER_API_VERSION")
            .env_remove("COMPOSE_FILE")
            .env_remove("COMPOSE_PROJECT_NAME");
        berth_integration::cmd::run(c, &s.dir, Duration::from_secs(120))
    };
    compose(&["up", "-d"])?.ok()?;
    let v = net_inspect(&s, "proj_default")?;
    ensure!(
        v["Labels"]["com.docker.compose.project"] == "proj"
            && v["IPAM"]["Config"][0]["Subnet"] == subnet.as_str(),
        "project network {v}"
    );
    let web_ip = v["Containers"]
        .as_object()
        .into_iter()
        .flatten()
        .find(|(_, c)| c["Name"] == "proj_web_1")
        .and_then(|(_, c)| c["IPv4Address"].as_str())
        .map(|a| a.trim_end_matches("/24").to_string())
        .with_context(|| format!("web not on proj_default: {}", v["Containers"]))?;
    wait_until(
        "client to reach web over the project network",
        Duration::from_secs(20),
        || {
            let out = fetch_in(&s, "proj_client_1", &web_ip)?;
            Ok((out.code == 0 && out.stdout.contains("compose-net-ok")).then_some(()))
        },
    )?;
    compose(&["down"])?.ok()?;
    expect_network_gone(&s, &br)?;
    expect_no_endpoints(&s)?;
    expect_engine_cleans_up(s)
}
