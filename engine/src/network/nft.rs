//! NAT for the engine's bridges through one nftables table the engine owns entirely
//! (`ip <prefix>`). Every change rewrites the whole table in one `nft -f` transaction, so
//! the rules are always all old or all new, and nothing outside the table is touched.
//!
//! Published ports are DNAT rules for every local address (`fib daddr type local`), in
//! prerouting (traffic from elsewhere) and output (traffic from the host itself, 127.0.0.1
//! included). Traffic from 127.0.0.0/8 into a bridge is masqueraded and the bridge gets
//! `route_localnet=1`: that is what makes localhost reach a container without a userland
//! proxy (dockerd's `--userland-proxy=false` mode).

use std::io::Write;
use std::net::Ipv4Addr;
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::ipam::Ipv4Net;
use super::NetworkError;

/// One bridge's part of the ruleset.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BridgeRules {
    pub bridge: String,
    pub subnet: Ipv4Net,
    /// Masquerade traffic leaving through other interfaces (dockerd's ip-masq).
    pub masquerade: bool,
    /// `--internal`: nothing is forwarded between this bridge and any other interface.
    pub internal: bool,
}

/// One published port: `host_ip:host_port` → `addr:port` over `proto`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PortRule {
    pub proto: String,
    pub host_ip: Ipv4Addr,
    pub host_port: u16,
    pub addr: Ipv4Addr,
    pub port: u16,
}

/// The full table: deleted and recreated in the same transaction (the empty `table`
/// line first makes the delete valid when the table does not exist yet).
pub fn render(table: &str, bridges: &[BridgeRules], ports: &[PortRule]) -> String {
    let mut s = format!("table ip {table} {{}}\ndelete table ip {table}\ntable ip {table} {{\n");
    s.push_str("  chain ports {\n");
    for p in ports {
        let dst = if p.host_ip.is_unspecified() {
            String::new()
        } else {
            format!("ip daddr {} ", p.host_ip)
        };
        s.push_str(&format!(
            "    {dst}{} dport {} dnat to {}:{}\n",
            p.proto, p.host_port, p.addr, p.port
        ));
    }
    s.push_str("  }\n");
    s.push_str(
        "  chain prerouting {\n    type nat hook prerouting priority dstnat; policy accept;\n    fib daddr type local jump ports\n  }\n",
    );
    s.push_str(
        "  chain output {\n    type nat hook output priority -100; policy accept;\n    fib daddr type local jump ports\n  }\n",
    );
    s.push_str(
        "  chain postrouting {\n    type nat hook postrouting priority srcnat; policy accept;\n",
    );
    for b in bridges {
        let (br, net) = (&b.bridge, b.subnet.network());
        if b.masquerade && !b.internal {
            s.push_str(&format!(
                "    ip saddr {net} oifname != \"{br}\" masquerade\n"
            ));
        }
        s.push_str(&format!(
            "    oifname \"{br}\" ip saddr 127.0.0.0/8 masquerade\n"
        ));
        // Hairpin: a container reaching its own network's published port.
        s.push_str(&format!(
            "    oifname \"{br}\" ip saddr {net} ip daddr {net} ct status dnat masquerade\n"
        ));
    }
    s.push_str("  }\n");
    s.push_str("  chain forward {\n    type filter hook forward priority filter; policy accept;\n");
    // Isolation (dockerd's DOCKER-ISOLATION chains): no forwarding between two of our
    // bridges, and none at all in or out of an internal one. Same-bridge traffic is
    // switched by the bridge and never reaches this hook.
    for b in bridges {
        let br = &b.bridge;
        if b.internal {
            s.push_str(&format!(
                "    iifname \"{br}\" oifname != \"{br}\" drop\n    oifname \"{br}\" iifname != \"{br}\" drop\n"
            ));
            continue;
        }
        let others: Vec<String> = bridges
            .iter()
            .filter(|o| o.bridge != b.bridge)
            .map(|o| format!("\"{}\"", o.bridge))
            .collect();
        if !others.is_empty() {
            s.push_str(&format!(
                "    iifname \"{br}\" oifname {{ {} }} drop\n",
                others.join(", ")
            ));
        }
    }
    for b in bridges {
        s.push_str(&format!(
            "    iifname \"{0}\" accept\n    oifname \"{0}\" accept\n",
            b.bridge
        ));
    }
    s.push_str("  }\n}\n");
    s
}

/// The script that removes the table (and nothing else); fine when it does not exist.
pub fn render_delete(table: &str) -> String {
    format!("table ip {table} {{}}\ndelete table ip {table}\n")
}

/// Applies a script with `nft -f -` as one transaction.
pub fn apply(script: &str) -> Result<(), NetworkError> {
    // Most container creates and removals (no published port) leave the ruleset as it
    // was; running nft for that cost 10-50 ms of every `run --rm` on the bridge. The
    // engine's first apply after start always runs, so rules lost while it was down
    // (or flushed by hand) come back at the next start.
    // Keyed by the namespace nft acts in, too (tests run managers in namespaces of their
    // own inside one process); forgotten when the table is removed, as namespace inode
    // numbers are reused after a namespace goes.
    let key = (netns_inode(), script.to_string());
    let mut last = LAST_APPLIED.lock().unwrap_or_else(|e| e.into_inner());
    if key.0.is_some() && last.as_ref() == Some(&key) {
        return Ok(());
    }
    *last = None;
    run_nft(script)?;
    let removes_table = script
        .lines()
        .last()
        .is_some_and(|l| l.starts_with("delete table"));
    *last = (!removes_table).then_some(key);
    Ok(())
}

/// The namespace and script of the last successful `apply` (held while nft runs, so
/// applies are also serialized).
static LAST_APPLIED: Mutex<Option<(Option<u64>, String)>> = Mutex::new(None);

/// The calling thread's network namespace (nft inherits it).
fn netns_inode() -> Option<u64> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/thread-self/ns/net")
        .ok()
        .map(|m| m.ino())
}

fn run_nft(script: &str) -> Result<(), NetworkError> {
    let mut child = Command::new("nft")
        .args(["-f", "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|source| NetworkError::NftSpawn { source })?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(script.as_bytes())
            .map_err(|source| NetworkError::NftSpawn { source })?;
    }
    let out = child
        .wait_with_output()
        .map_err(|source| NetworkError::NftSpawn { source })?;
    if !out.status.success() {
        return Err(NetworkError::Nft {
            message: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn isolates_bridges_and_closes_internal_ones() {
        let br = |name: &str, subnet: &str, internal| BridgeRules {
            bridge: name.into(),
            subnet: subnet.parse().unwrap(),
            masquerade: true,
            internal,
        };
        let s = render(
            "t",
            &[
                br("b0", "10.1.0.1/24", false),
                br("b1", "10.2.0.1/24", false),
                br("b2", "10.3.0.1/24", true),
            ],
            &[],
        );
        assert!(s.contains("    iifname \"b0\" oifname { \"b1\", \"b2\" } drop\n"));
        assert!(s.contains("    iifname \"b1\" oifname { \"b0\", \"b2\" } drop\n"));
        assert!(s.contains("    iifname \"b2\" oifname != \"b2\" drop\n"));
        assert!(s.contains("    oifname \"b2\" iifname != \"b2\" drop\n"));
        // Drops come before the per-bridge accepts.
        assert!(s.find("drop").unwrap() < s.find("accept\n").unwrap());
        assert!(!s.contains("10.3.0.0/24 oifname != \"b2\" masquerade"));
        assert!(s.contains("10.1.0.0/24 oifname != \"b0\" masquerade"));
    }

    #[test]
    fn renders_ports_and_bridge_rules_in_one_table() {
        let s = render(
            "bt1",
            &[BridgeRules {
                bridge: "bt10".into(),
                subnet: "10.5.0.1/24".parse().unwrap(),
                masquerade: true,
                internal: false,
            }],
            &[
                PortRule {
                    proto: "tcp".into(),
                    host_ip: Ipv4Addr::UNSPECIFIED,
                    host_port: 8080,
                    addr: Ipv4Addr::new(10, 5, 0, 2),
                    port: 80,
                },
                PortRule {
                    proto: "udp".into(),
                    host_ip: Ipv4Addr::LOCALHOST,
                    host_port: 53,
                    addr: Ipv4Addr::new(10, 5, 0, 2),
                    port: 5353,
                },
            ],
        );
        assert!(s.starts_with("table ip bt1 {}\ndelete table ip bt1\ntable ip bt1 {\n"));
        assert!(s.contains("    tcp dport 8080 dnat to 10.5.0.2:80\n"));
        assert!(s.contains("    ip daddr 127.0.0.1 udp dport 53 dnat to 10.5.0.2:5353\n"));
        assert!(s.contains("ip saddr 10.5.0.0/24 oifname != \"bt10\" masquerade"));
        assert!(s.contains("oifname \"bt10\" ip saddr 127.0.0.0/8 masquerade"));
        // Nothing but our own table is ever named.
        assert_eq!(s.matches("table ip ").count(), 3);
        assert!(!s.contains("table inet") && !s.contains("flush ruleset"));
    }

    #[test]
    fn the_delete_script_ends_with_the_delete() {
        let last = render_delete("t").lines().last().map(String::from);
        assert_eq!(last.as_deref(), Some("delete table ip t"));
        let rendered = render("t", &[], &[]);
        assert!(!rendered.lines().last().unwrap().starts_with("delete table"));
    }
}
