//! `--dns`, `--dns-search`, `--dns-option`: the container's resolv.conf with the user's
//! servers, search domains and options replacing the host's, as dockerd does.

use std::net::IpAddr;

use serde_json::{Map, Value};

use super::NetworkError;

/// The user's DNS settings from HostConfig (`Dns`, `DnsSearch`, `DnsOptions`).
#[derive(Debug, Default, PartialEq, Eq)]
pub struct DnsSettings {
    pub servers: Vec<String>,
    pub search: Vec<String>,
    pub options: Vec<String>,
}

impl DnsSettings {
    pub fn from_host_extra(extra: &Map<String, Value>) -> Result<Self, NetworkError> {
        let list = |key: &str| -> Vec<String> {
            extra
                .get(key)
                .and_then(Value::as_array)
                .map(|a| {
                    a.iter()
                        .filter_map(Value::as_str)
                        .map(String::from)
                        .collect()
                })
                .unwrap_or_default()
        };
        let s = Self {
            servers: list("Dns"),
            search: list("DnsSearch"),
            options: list("DnsOptions"),
        };
        if let Some(bad) = s.servers.iter().find(|d| d.parse::<IpAddr>().is_err()) {
            return Err(NetworkError::Dns { value: bad.clone() });
        }
        Ok(s)
    }

    pub fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.search.is_empty() && self.options.is_empty()
    }

    /// `current` with each kind of line the user set replaced by the user's.
    pub fn apply(&self, current: &str) -> String {
        let replaced = |line: &str| {
            let first = line.split_whitespace().next().unwrap_or("");
            (first == "nameserver" && !self.servers.is_empty())
                || (matches!(first, "search" | "domain") && !self.search.is_empty())
                || (first == "options" && !self.options.is_empty())
        };
        let mut out: String = current
            .lines()
            .filter(|l| !replaced(l))
            .map(|l| format!("{l}\n"))
            .collect();
        if !self.search.is_empty() {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        for s in &self.servers {
            out.push_str(&format!("nameserver {s}\n"));
        }
        if !self.options.is_empty() {
            out.push_str(&format!("options {}\n", self.options.join(" ")));
        }
        out
    }
}

impl DnsSettings {
    /// resolv.conf of a container on a user-defined network, as dockerd writes it: only
    /// the embedded server (the user's `--dns` become its upstreams), the user's search
    /// domains else the host's, the user's options else the host's, plus `ndots:0`
    /// unless an ndots option is already there.
    pub fn embedded(&self, host: &str) -> String {
        let host_lines = |kinds: &[&str]| -> Vec<String> {
            host.lines()
                .filter(|l| {
                    l.split_whitespace()
                        .next()
                        .is_some_and(|w| kinds.contains(&w))
                })
                .map(String::from)
                .collect()
        };
        let mut out = String::new();
        if self.search.is_empty() {
            for l in host_lines(&["search", "domain"]) {
                out.push_str(&format!("{l}\n"));
            }
        } else {
            out.push_str(&format!("search {}\n", self.search.join(" ")));
        }
        out.push_str(&format!("nameserver {}\n", super::dns_server::ADDRESS));
        let mut options: Vec<String> = if self.options.is_empty() {
            host_lines(&["options"])
                .iter()
                .flat_map(|l| l.split_whitespace().skip(1).map(String::from))
                .collect()
        } else {
            self.options.clone()
        };
        if !options.iter().any(|o| o.starts_with("ndots:")) {
            options.push("ndots:0".into());
        }
        out.push_str(&format!("options {}\n", options.join(" ")));
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn user_settings_replace_the_hosts() {
        let extra =
            json!({"Dns": ["10.0.0.53"], "DnsSearch": ["corp.example"], "DnsOptions": null});
        let s = DnsSettings::from_host_extra(extra.as_object().unwrap()).unwrap();
        let got = s.apply("search example.com\nnameserver 1.1.1.1\noptions ndots:2\n");
        assert_eq!(
            got,
            "options ndots:2\nsearch corp.example\nnameserver 10.0.0.53\n"
        );
        assert!(DnsSettings::default().apply("nameserver 1.1.1.1\n") == "nameserver 1.1.1.1\n");
    }

    #[test]
    fn embedded_server_with_host_or_user_search_and_options() {
        let host = "domain corp\nsearch a.example\nnameserver 10.0.0.1\noptions rotate\n";
        assert_eq!(
            DnsSettings::default().embedded(host),
            "domain corp\nsearch a.example\nnameserver 127.0.0.11\noptions rotate ndots:0\n"
        );
        let user = DnsSettings {
            servers: vec!["10.9.9.9".into()],
            search: vec!["b.example".into()],
            options: vec!["ndots:3".into()],
        };
        assert_eq!(
            user.embedded(host),
            "search b.example\nnameserver 127.0.0.11\noptions ndots:3\n"
        );
    }

    #[test]
    fn a_bad_server_is_refused() {
        let extra = json!({"Dns": ["not-an-ip"]});
        assert!(matches!(
            DnsSettings::from_host_extra(extra.as_object().unwrap()),
            Err(NetworkError::Dns { .. })
        ));
    }
}
