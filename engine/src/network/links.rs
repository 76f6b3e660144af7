//! Legacy links (`--link target[:alias]`) on the default bridge, as dockerd makes them:
//! the target's address, exposed ports, name and environment as `<ALIAS>_...` variables
//! and an /etc/hosts line for the alias, the target's hostname and name. Resolved at
//! create (the spec, with its environment, is stored in highd then); the target must be
//! running at start. On user-defined networks dockerd neither checks nor applies them
//! here (they are DNS aliases there, see docs/networking.md), so neither does Berth.

use std::collections::HashMap;
use std::net::Ipv4Addr;

use serde_json::Value;

use super::NetworkError;

/// One `HostConfig.Links` entry: the target as the client named it and the alias.
#[derive(Debug, Clone, PartialEq)]
pub struct LinkRequest {
    pub target: String,
    pub alias: String,
}

/// Parses `name[:alias]` as dockerd's `opts.ParseLink` reads it: the alias defaults to
/// the name, and an alias given as a path (`/parent/alias`, the stored form) is its last
/// element.
pub fn parse(link: &str) -> Result<LinkRequest, NetworkError> {
    let bad = || NetworkError::LinkFormat { link: link.into() };
    let parts: Vec<&str> = link.split(':').collect();
    let (target, alias) = match parts.as_slice() {
        [t] => (*t, *t),
        [t, a] => (*t, *a),
        _ => return Err(bad()),
    };
    if target.is_empty() || alias.is_empty() {
        return Err(bad());
    }
    let alias = match alias.strip_prefix('/') {
        Some(path) => path.rsplit('/').next().unwrap_or(path),
        None => alias,
    };
    Ok(LinkRequest {
        target: target.into(),
        alias: alias.into(),
    })
}

/// The `HostConfig.Links` strings of a create request (absent or null: none).
pub fn requested(host_extra: &serde_json::Map<String, Value>) -> Vec<String> {
    match host_extra.get("Links") {
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(|v| v.as_str().map(String::from))
            .collect(),
        _ => Vec::new(),
    }
}

/// What a resolved link gives the new container.
#[derive(Debug, Clone)]
pub struct Link {
    /// `/parent/alias`, dockerd's name for the link.
    pub name: String,
    pub alias: String,
    pub ip: Ipv4Addr,
    /// `PORT/PROTO` keys of the target's `ExposedPorts`.
    pub ports: Vec<String>,
    pub target_env: Vec<String>,
    pub target_hostname: String,
    /// The target's name without the leading `/`.
    pub target_name: String,
}

fn port_of(key: &str) -> (u32, String) {
    let (port, proto) = key.split_once('/').unwrap_or((key, "tcp"));
    (port.parse().unwrap_or(0), proto.to_string())
}

impl Link {
    /// The `<ALIAS>_...` variables dockerd gives the linking container.
    pub fn env(&self) -> Vec<String> {
        let alias = self.alias.to_uppercase().replace('-', "_");
        let ip = self.ip;
        let mut ports: Vec<(u32, String)> = self.ports.iter().map(|k| port_of(k)).collect();
        // By number, tcp first on a tie; the first one is the default `<ALIAS>_PORT`.
        ports.sort_by(|a, b| a.0.cmp(&b.0).then((b.1 == "tcp").cmp(&(a.1 == "tcp"))));
        let mut env = Vec::new();
        if let Some((port, proto)) = ports.first() {
            env.push(format!("{alias}_PORT={proto}://{ip}:{port}"));
        }
        // Runs of three or more consecutive port numbers also get _START/_END variables.
        let mut i = 0;
        while i < ports.len() {
            let mut j = i;
            while j + 1 < ports.len() && ports[j + 1].0 <= ports[i].0 + (j - i) as u32 + 1 {
                j += 1;
            }
            if j > i + 1 {
                let (p, proto) = &ports[i];
                let (q, qproto) = &ports[j];
                let key = format!("{alias}_PORT_{p}_{}", proto.to_uppercase());
                let qkey = format!("{alias}_PORT_{p}_{}", qproto.to_uppercase());
                env.push(format!("{key}_START={proto}://{ip}:{p}"));
                env.push(format!("{key}_ADDR={ip}"));
                env.push(format!("{key}_PROTO={proto}"));
                env.push(format!("{key}_PORT_START={p}"));
                env.push(format!("{qkey}_END={qproto}://{ip}:{q}"));
                env.push(format!("{qkey}_PORT_END={q}"));
                i = j + 1;
            } else {
                i += 1;
            }
        }
        for (port, proto) in &ports {
            let key = format!("{alias}_PORT_{port}_{}", proto.to_uppercase());
            env.push(format!("{key}={proto}://{ip}:{port}"));
            env.push(format!("{key}_ADDR={ip}"));
            env.push(format!("{key}_PORT={port}"));
            env.push(format!("{key}_PROTO={proto}"));
        }
        env.push(format!("{alias}_NAME={}", self.name));
        for var in &self.target_env {
            let Some((k, v)) = var.split_once('=') else {
                continue;
            };
            // dockerd leaves out what every image sets anyway.
            if k != "HOME" && k != "PATH" {
                env.push(format!("{alias}_ENV_{k}={v}"));
            }
        }
        env
    }

    /// The /etc/hosts line: the alias, the target's hostname, and its name unless the
    /// alias is the name.
    pub fn hosts_line(&self) -> String {
        let mut names = format!("{} {}", self.alias, self.target_hostname);
        if self.alias != self.target_name {
            names.push(' ');
            names.push_str(&self.target_name);
        }
        format!("{}\t{names}", self.ip)
    }
}

/// Adds `vars` to the spec's process environment, except names the container already
/// sets (its own `-e` and image variables win, as with dockerd).
pub fn add_env(spec: &mut Value, vars: &[String]) {
    let Some(env) = spec
        .pointer_mut("/process/env")
        .and_then(Value::as_array_mut)
    else {
        return;
    };
    let key = |s: &str| s.split('=').next().unwrap_or_default().to_string();
    let set: std::collections::HashSet<String> =
        env.iter().filter_map(Value::as_str).map(key).collect();
    let mut added = std::collections::HashSet::new();
    for v in vars {
        let k = key(v);
        if !set.contains(&k) && added.insert(k) {
            env.push(Value::String(v.clone()));
        }
    }
}

/// `docker ps` lists a link target under the link's names too (`/parent/alias`), as
/// dockerd does: the extra names of each target name, from every record's stored
/// `HostConfig.Links`. Links kept as given (user-defined networks) name no record.
pub fn names_by_target<'a>(
    recs: impl IntoIterator<Item = &'a crate::record::ContainerRecord>,
) -> HashMap<String, Vec<String>> {
    let mut out: HashMap<String, Vec<String>> = HashMap::new();
    for rec in recs {
        for stored in requested(&rec.host_config.extra) {
            if let Some((target, link)) = stored.split_once(':') {
                if target.starts_with('/') && link.starts_with('/') {
                    out.entry(target.into()).or_default().push(link.into());
                }
            }
        }
    }
    out
}

/// Adds the link names of `summary`'s container (`names_by_target`) to its `Names`,
/// sorted as dockerd lists them.
pub fn add_names(summary: &mut Value, extra: &HashMap<String, Vec<String>>) {
    let Some(own) = summary["Names"][0].as_str() else {
        return;
    };
    if let Some(more) = extra.get(own) {
        let mut names: Vec<String> = more.clone();
        names.push(own.to_string());
        names.sort();
        summary["Names"] = Value::from(names);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn link(ports: &[&str]) -> Link {
        Link {
            name: "/web/db-1".into(),
            alias: "db-1".into(),
            ip: Ipv4Addr::new(10, 0, 0, 2),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            target_env: vec!["FOO=bar".into(), "HOME=/h".into(), "PATH=/bin".into()],
            target_hostname: "abc".into(),
            target_name: "db".into(),
        }
    }

    #[test]
    fn parses_dockerd_link_forms() {
        let p = |s| parse(s).unwrap();
        assert_eq!(p("db").alias, "db");
        assert_eq!(p("db:x").alias, "x");
        assert_eq!(
            p("/db:/web/x"),
            LinkRequest {
                target: "/db".into(),
                alias: "x".into()
            }
        );
        assert_eq!(
            parse("a:b:c").unwrap_err().to_string(),
            "bad format for links: a:b:c"
        );
        assert!(parse(":x").is_err());
    }

    #[test]
    fn env_matches_dockerd_for_ports_ranges_and_environment() {
        let env = link(&["80/tcp", "53/udp", "8000/tcp", "8001/tcp", "8002/tcp"]).env();
        let has = |s: &str| env.iter().any(|e| e == s);
        assert_eq!(env[0], "DB_1_PORT=udp://10.0.0.2:53");
        for want in [
            "DB_1_PORT_53_UDP=udp://10.0.0.2:53",
            "DB_1_PORT_53_UDP_ADDR=10.0.0.2",
            "DB_1_PORT_53_UDP_PORT=53",
            "DB_1_PORT_53_UDP_PROTO=udp",
            "DB_1_PORT_80_TCP=tcp://10.0.0.2:80",
            "DB_1_PORT_8000_TCP_START=tcp://10.0.0.2:8000",
            "DB_1_PORT_8000_TCP_END=tcp://10.0.0.2:8002",
            "DB_1_PORT_8000_TCP_PORT_START=8000",
            "DB_1_PORT_8000_TCP_PORT_END=8002",
            "DB_1_PORT_8001_TCP_PORT=8001",
            "DB_1_NAME=/web/db-1",
            "DB_1_ENV_FOO=bar",
        ] {
            assert!(has(want), "{want} missing from {env:?}");
        }
        assert!(!env.iter().any(|e| e.starts_with("DB_1_ENV_HOME")));
        assert!(!env.iter().any(|e| e.starts_with("DB_1_PORT_80_TCP_START")));
        // Two consecutive ports are no range.
        let env = link(&["80/tcp", "81/tcp"]).env();
        assert!(!env.iter().any(|e| e.contains("_START")));
    }

    #[test]
    fn hosts_line_names_alias_hostname_and_name() {
        assert_eq!(link(&[]).hosts_line(), "10.0.0.2\tdb-1 abc db");
        let mut same = link(&[]);
        same.alias = "db".into();
        assert_eq!(same.hosts_line(), "10.0.0.2\tdb abc");
    }

    #[test]
    fn own_variables_win() {
        let mut spec = serde_json::json!({"process": {"env": ["A_NAME=mine"]}});
        add_env(
            &mut spec,
            &["A_NAME=/x/a".into(), "A_PORT=tcp://1:2".into()],
        );
        assert_eq!(
            spec["process"]["env"],
            serde_json::json!(["A_NAME=mine", "A_PORT=tcp://1:2"])
        );
    }
}
