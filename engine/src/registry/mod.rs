//! Pulling images from OCI distribution registries (`docker pull`, `docker login`).
//!
//! Manifests and blobs are fetched over HTTPS (system roots plus the registry's CAs from
//! the certs dir), or for insecure registries (loopback ones and those named with
//! `--insecure-registry`) HTTPS without verification and then plain HTTP, as dockerd
//! does (`tls.rs`); every byte is checked against its digest, blobs go to highd's content store with `content.Write` (which
//! verifies again), and the image is unpacked and named exactly as `docker import` does.

pub mod api;
pub mod client;
mod download;
pub mod manifest;
pub mod pull;
mod push;
pub mod settings;
mod sources;
pub mod tls;
mod upload;

use base64::Engine as _;

use crate::backend::BackendError;
use crate::daemon::DaemonError;
use crate::refs::ReferenceError;

pub use pull::PullOptions;
pub use push::{set_max_concurrent_uploads, PushOptions, DEFAULT_MAX_CONCURRENT_UPLOADS};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    /// Go's shape: `Get "https://h/v2/": tls: failed to verify certificate: x509: ...`.
    #[error("{method} \"{url}\": {message}")]
    Tls {
        method: String,
        url: String,
        message: String,
    },
    #[error("invalid registry certificates {path}: {message}")]
    Certs {
        path: std::path::PathBuf,
        message: String,
    },
    #[error("cannot connect to registry {host}: {message}")]
    Connect { host: String, message: String },
    /// A registry's unexpected answer, worded as dockerd's distribution client does.
    #[error("{message}")]
    Upstream { message: String },
    #[error("registry transfer failed: {message}")]
    Transfer { message: String },
    #[error("registry answer is larger than {limit} bytes")]
    TooLarge { limit: u64 },
    #[error("unauthorized: authentication required for {host}")]
    Unauthorized { host: String },
    #[error("unsupported registry authentication challenge {challenge:?}")]
    Challenge { challenge: String },
    #[error("decode {what}: {message}")]
    Decode { what: &'static str, message: String },
    #[error("unsupported manifest media type {media_type}")]
    UnsupportedManifest { media_type: String },
    #[error("unsupported digest algorithm in {digest}")]
    DigestAlgorithm { digest: String },
    #[error("digest mismatch: expected {expected}, got {actual}")]
    DigestMismatch { expected: String, actual: String },
    #[error("blob {digest} has {actual} bytes, the manifest says {expected}")]
    SizeMismatch {
        digest: String,
        expected: i64,
        actual: u64,
    },
    #[error("image config lists {diff_ids} layers but the manifest has {layers}")]
    LayerCount { diff_ids: usize, layers: usize },
    #[error("manifest for {reference} not found: manifest unknown")]
    NotFound { reference: String },
    #[error(
        "pull access denied for {repo}, repository does not exist or may require 'docker login'"
    )]
    AccessDenied { repo: String },
    #[error("no matching manifest for {platform} in the manifest list entries")]
    NoPlatform { platform: String },
    #[error("GET {url}: status {status} {message}")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("invalid --insecure-registry {value:?}: expected HOST[:PORT]")]
    InsecureRegistry { value: String },
    /// dockerd's `registry-mirrors` validation messages.
    #[error("{message}")]
    Mirror { message: String },
    #[error("invalid X-Registry-Auth header: {message}")]
    AuthHeader { message: String },
    #[error(transparent)]
    Reference(#[from] ReferenceError),
    #[error(transparent)]
    Backend(#[from] BackendError),
    #[error(transparent)]
    Daemon(#[from] DaemonError),
}

/// Registry credentials as docker sends them in `X-Registry-Auth` or `POST /auth`.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Deserialize)]
pub struct Credentials {
    #[serde(default)]
    pub username: String,
    #[serde(default)]
    pub password: String,
    /// base64 of `user:password` (docker's config.json form).
    #[serde(default)]
    pub auth: String,
    #[serde(default, rename = "serveraddress")]
    pub server_address: String,
}

impl Credentials {
    /// Decodes `X-Registry-Auth` (base64url JSON); empty or `{}` means anonymous.
    pub fn from_header(value: &str) -> Result<Option<Self>, RegistryError> {
        let value = value.trim();
        if value.is_empty() {
            return Ok(None);
        }
        use base64::engine::general_purpose::{STANDARD, URL_SAFE, URL_SAFE_NO_PAD};
        let raw = URL_SAFE
            .decode(value)
            .or_else(|_| URL_SAFE_NO_PAD.decode(value))
            .or_else(|_| STANDARD.decode(value))
            .map_err(|e| RegistryError::AuthHeader {
                message: e.to_string(),
            })?;
        let creds: Self = serde_json::from_slice(&raw).map_err(|e| RegistryError::AuthHeader {
            message: e.to_string(),
        })?;
        Ok(creds.normalized())
    }

    /// Fills username/password from `auth`; `None` when nothing usable is left.
    pub fn normalized(mut self) -> Option<Self> {
        if self.username.is_empty() && !self.auth.is_empty() {
            let decoded = base64::engine::general_purpose::STANDARD
                .decode(&self.auth)
                .ok()
                .and_then(|b| String::from_utf8(b).ok());
            if let Some((u, p)) = decoded.as_deref().and_then(|s| s.split_once(':')) {
                self.username = u.into();
                self.password = p.into();
            }
        }
        (!self.username.is_empty()).then_some(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use base64::engine::general_purpose::URL_SAFE;

    #[test]
    fn decodes_registry_auth_header() {
        let h = URL_SAFE.encode(br#"{"username":"u","password":"p?>","serveraddress":"h:1"}"#);
        let c = Credentials::from_header(&h).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "p?>"));
        assert_eq!(Credentials::from_header("").unwrap(), None);
        assert_eq!(Credentials::from_header("e30=").unwrap(), None);
        let h = URL_SAFE.encode(br#"{"auth":"dTpwdw=="}"#);
        let c = Credentials::from_header(&h).unwrap().unwrap();
        assert_eq!((c.username.as_str(), c.password.as_str()), ("u", "pw"));
        assert!(matches!(
            Credentials::from_header("!!!"),
            Err(RegistryError::AuthHeader { .. })
        ));
    }
}
