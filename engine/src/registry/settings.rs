//! Pull settings from the engine's flags and daemon.json: how many layers download at
//! once (`max-concurrent-downloads`) and the Docker Hub mirrors (`registry-mirrors`).

use std::sync::OnceLock;

use super::RegistryError;

/// dockerd's default `max-concurrent-downloads`.
pub const DEFAULT_MAX_CONCURRENT_DOWNLOADS: usize = 3;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PullSettings {
    pub max_concurrent_downloads: usize,
    /// Mirrors of Docker Hub, `scheme://host[:port]`, tried in order before it.
    pub mirrors: Vec<Mirror>,
}

impl Default for PullSettings {
    fn default() -> Self {
        Self {
            max_concurrent_downloads: DEFAULT_MAX_CONCURRENT_DOWNLOADS,
            mirrors: Vec::new(),
        }
    }
}

/// A `registry-mirrors` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mirror {
    /// `host[:port]`, as the registry client takes it.
    pub host: String,
    /// `http://` mirrors are reached over plain HTTP, as dockerd does.
    pub plain_http: bool,
}

static SETTINGS: OnceLock<PullSettings> = OnceLock::new();

/// Records the settings once at start-up; later calls are ignored.
pub fn configure(settings: PullSettings) {
    let _ = SETTINGS.set(settings);
}

pub fn get() -> &'static PullSettings {
    SETTINGS.get_or_init(PullSettings::default)
}

/// Checks a mirror as dockerd's `ValidateMirror` does (http or https, no query,
/// fragment or credentials); a path prefix is refused because Berth does not
/// support one.
pub fn parse_mirror(value: &str) -> Result<Mirror, RegistryError> {
    let bad = |message: String| RegistryError::Mirror { message };
    let uri = url::Url::parse(value)
        .map_err(|_| bad(format!("invalid mirror: {value:?} is not a valid URI")))?;
    let plain_http = match uri.scheme() {
        "http" => true,
        "https" => false,
        other => {
            return Err(bad(format!(
                "invalid mirror: unsupported scheme {other:?} in {value:?}"
            )))
        }
    };
    if uri.query().is_some() || uri.fragment().is_some() {
        return Err(bad(format!(
            "invalid mirror: query or fragment at end of the URI {value:?}"
        )));
    }
    if !uri.username().is_empty() || uri.password().is_some() {
        return Err(bad(format!(
            "invalid mirror: username/password not allowed in URI {value:?}"
        )));
    }
    if uri.path() != "/" && !uri.path().is_empty() {
        return Err(bad(format!(
            "invalid mirror: a path in the URI {value:?} is not supported"
        )));
    }
    let host = uri
        .host_str()
        .filter(|h| !h.is_empty())
        .ok_or_else(|| bad(format!("invalid mirror: no host in {value:?}")))?;
    let host = match uri.port() {
        Some(p) => format!("{host}:{p}"),
        None => host.to_string(),
    };
    Ok(Mirror { host, plain_http })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mirrors_are_checked_like_dockerd() {
        let m = parse_mirror("http://127.0.0.1:5000/").unwrap();
        assert_eq!(m.host, "127.0.0.1:5000");
        assert!(m.plain_http);
        let m = parse_mirror("https://mirror.gcr.io").unwrap();
        assert_eq!((m.host.as_str(), m.plain_http), ("mirror.gcr.io", false));
        let err = |v: &str| parse_mirror(v).unwrap_err().to_string();
        assert!(err("ftp://h").contains("unsupported scheme \"ftp\""));
        assert!(err("127.0.0.1:5000").contains("invalid mirror"));
        assert!(err("https://h/?a=b").contains("query or fragment"));
        assert!(err("https://u:p@h/").contains("username/password not allowed"));
        assert!(err("https://h/prefix").contains("path"));
    }
}
