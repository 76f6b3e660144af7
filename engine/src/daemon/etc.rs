//! The per-container `/etc/hostname`, `/etc/hosts` and `/etc/resolv.conf` the engine
//! generates and bind-mounts, like dockerd does.

use std::path::Path;

/// Used when the host has no usable nameserver, as dockerd does.
const FALLBACK_DNS: &[&str] = &["8.8.8.8", "8.8.4.4"];

pub fn hostname_file(hostname: &str) -> String {
    format!("{hostname}\n")
}

pub fn hosts_file(hostname: &str, extra_hosts: &[String]) -> String {
    let mut s = String::from(
        "127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::\tip6-localnet\nff00::\tip6-mcastprefix\nff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    // Loopback is the only interface for now, so the hostname resolves there.
    s.push_str(&format!("127.0.0.1\t{hostname}\n"));
    for h in extra_hosts {
        if let Some((name, ip)) = h.split_once(':') {
            s.push_str(&format!("{ip}\t{name}\n"));
        }
    }
    s
}

/// The host's resolv.conf without loopback nameservers, which would point at the
/// container's own loopback (dockerd filters them the same way).
pub fn resolv_conf(host: &str) -> String {
    let mut out = String::new();
    let mut servers = 0;
    for line in host.lines() {
        let mut words = line.split_whitespace();
        if words.next() == Some("nameserver") {
            let addr = words.next().unwrap_or("");
            if addr.starts_with("127.") || addr == "::1" {
                continue;
            }
            servers += 1;
        }
        out.push_str(line);
        out.push('\n');
    }
    if servers == 0 {
        for ns in FALLBACK_DNS {
            out.push_str(&format!("nameserver {ns}\n"));
        }
    }
    out
}

pub fn host_resolv_conf() -> String {
    std::fs::read_to_string(Path::new("/etc/resolv.conf")).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_drops_loopback_servers() {
        let got = resolv_conf("search example.com\nnameserver 127.0.0.53\nnameserver 10.0.0.1\n");
        assert_eq!(got, "search example.com\nnameserver 10.0.0.1\n");
        let got = resolv_conf("nameserver 127.0.0.1\n");
        assert_eq!(got, "nameserver 8.8.8.8\nnameserver 8.8.4.4\n");
    }

    #[test]
    fn hosts_has_localhost_hostname_and_extra_hosts() {
        let h = hosts_file("abc", &["db:10.0.0.2".into()]);
        assert!(h.starts_with("127.0.0.1\tlocalhost\n"));
        assert!(h.contains("127.0.0.1\tabc\n"));
        assert!(h.ends_with("10.0.0.2\tdb\n"));
    }
}
