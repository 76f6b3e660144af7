//! Where the engine is: `-H`, then `BERTH_HOST`, then `DOCKER_HOST`, then the default.

use std::path::PathBuf;

use crate::error::CliError;

pub const DEFAULT_HOST: &str = "unix:///run/berth/engine.sock";

/// A parsed engine address. Only unix sockets: the engine has no plain TCP listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Host {
    /// As the user gave it, for messages.
    pub url: String,
    pub socket: PathBuf,
}

/// Picks the host from the flag and environment values, in docker's order of precedence.
pub fn resolve(
    flag: Option<&str>,
    berth_host: Option<&str>,
    docker_host: Option<&str>,
) -> Result<Host, CliError> {
    let chosen = [flag, berth_host, docker_host]
        .into_iter()
        .flatten()
        .find(|h| !h.is_empty())
        .unwrap_or(DEFAULT_HOST);
    parse(chosen)
}

/// Parses `unix:///path/to.sock`.
pub fn parse(url: &str) -> Result<Host, CliError> {
    let invalid = |reason| CliError::InvalidHost {
        host: url.to_string(),
        reason,
    };
    let Some((scheme, rest)) = url.split_once("://") else {
        return Err(invalid("expected unix:///path/to/socket"));
    };
    if scheme != "unix" {
        return Err(invalid("only unix:// hosts are supported"));
    }
    if !rest.starts_with('/') {
        return Err(invalid("the socket path must be absolute"));
    }
    Ok(Host {
        url: url.to_string(),
        socket: PathBuf::from(rest),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flag_beats_env_beats_default() {
        let h = resolve(
            Some("unix:///a.sock"),
            Some("unix:///b.sock"),
            Some("unix:///c.sock"),
        );
        assert_eq!(h.unwrap().socket, PathBuf::from("/a.sock"));
        let h = resolve(None, Some("unix:///b.sock"), Some("unix:///c.sock"));
        assert_eq!(h.unwrap().socket, PathBuf::from("/b.sock"));
        let h = resolve(None, Some(""), Some("unix:///c.sock"));
        assert_eq!(h.unwrap().socket, PathBuf::from("/c.sock"));
        let h = resolve(None, None, None).unwrap();
        assert_eq!(h.socket, PathBuf::from("/run/berth/engine.sock"));
    }

    #[test]
    fn rejects_other_schemes_and_relative_paths() {
        for bad in ["tcp://127.0.0.1:2375", "unix://rel.sock", "/no/scheme.sock"] {
            assert!(parse(bad).is_err(), "{bad} accepted");
        }
    }
}
