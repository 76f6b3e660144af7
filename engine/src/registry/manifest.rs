//! Manifests as registries serve them: docker schema2 and OCI image manifests, docker
//! manifest lists and OCI indexes (with platform selection), and digest checks.

use sha2::{Digest, Sha256};

use super::RegistryError;

pub const DOCKER_MANIFEST: &str = "application/vnd.docker.distribution.manifest.v2+json";
pub const DOCKER_LIST: &str = "application/vnd.docker.distribution.manifest.list.v2+json";
pub const OCI_MANIFEST: &str = "application/vnd.oci.image.manifest.v1+json";
pub const OCI_INDEX: &str = "application/vnd.oci.image.index.v1+json";

/// What we ask for: every manifest kind we can use, single-platform ones first.
pub const ACCEPT: &str = "application/vnd.docker.distribution.manifest.v2+json, application/vnd.docker.distribution.manifest.list.v2+json, application/vnd.oci.image.manifest.v1+json, application/vnd.oci.image.index.v1+json";

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Desc {
    #[serde(default)]
    pub media_type: String,
    pub digest: String,
    pub size: i64,
    #[serde(default)]
    pub platform: Option<Platform>,
}

#[derive(Debug, Clone, serde::Deserialize)]
pub struct Platform {
    pub architecture: String,
    pub os: String,
    #[serde(default)]
    pub variant: Option<String>,
}

#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "camelCase")]
struct Raw {
    schema_version: Option<i64>,
    #[serde(default)]
    media_type: Option<String>,
    config: Option<Desc>,
    #[serde(default)]
    layers: Vec<Desc>,
    manifests: Option<Vec<Desc>>,
}

/// A parsed manifest document.
#[derive(Debug, Clone)]
pub enum Document {
    Image {
        media_type: String,
        config: Desc,
        layers: Vec<Desc>,
    },
    Index {
        manifests: Vec<Desc>,
    },
}

pub fn sha256(data: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(data)))
}

/// Fails unless `data` hashes to `expected` (only sha256 digests are supported).
pub fn verify(expected: &str, data: &[u8]) -> Result<(), RegistryError> {
    if !expected.starts_with("sha256:") {
        return Err(RegistryError::DigestAlgorithm {
            digest: expected.into(),
        });
    }
    let actual = sha256(data);
    if actual != expected {
        return Err(RegistryError::DigestMismatch {
            expected: expected.into(),
            actual,
        });
    }
    Ok(())
}

/// Parses a manifest; the media type comes from the document or else the
/// `Content-Type` the registry sent.
pub fn parse(data: &[u8], content_type: &str) -> Result<Document, RegistryError> {
    let raw: Raw = serde_json::from_slice(data).map_err(|e| RegistryError::Decode {
        what: "manifest",
        message: e.to_string(),
    })?;
    let mt = raw
        .media_type
        .clone()
        .filter(|m| !m.is_empty())
        .unwrap_or_else(|| {
            content_type
                .split(';')
                .next()
                .unwrap_or("")
                .trim()
                .to_string()
        });
    if raw.schema_version != Some(2) {
        return Err(RegistryError::UnsupportedManifest {
            media_type: format!("{mt} (schemaVersion {:?})", raw.schema_version),
        });
    }
    match (mt.as_str(), raw.manifests, raw.config) {
        (DOCKER_LIST | OCI_INDEX, Some(manifests), _) => Ok(Document::Index { manifests }),
        (DOCKER_MANIFEST | OCI_MANIFEST, _, Some(config)) => Ok(Document::Image {
            media_type: mt,
            config,
            layers: raw.layers,
        }),
        // OCI allows the media type to be omitted; the shape tells.
        ("" | "application/json", Some(manifests), None) => Ok(Document::Index { manifests }),
        ("" | "application/json", None, Some(config)) => Ok(Document::Image {
            media_type: OCI_MANIFEST.into(),
            config,
            layers: raw.layers,
        }),
        _ => Err(RegistryError::UnsupportedManifest { media_type: mt }),
    }
}

/// The Go names of this machine's OS and architecture.
pub fn host_platform() -> (&'static str, &'static str) {
    let arch = match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        other => other,
    };
    ("linux", arch)
}

/// Picks the manifest for `os/arch` from an index (dockerd's default platform matcher,
/// without variants beyond "any").
pub fn select<'a>(manifests: &'a [Desc], os: &str, arch: &str) -> Option<&'a Desc> {
    manifests.iter().find(|m| {
        m.platform
            .as_ref()
            .is_some_and(|p| p.os == os && p.architecture == arch)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_index_and_selects_platform() {
        let doc = br#"{"schemaVersion":2,"mediaType":"application/vnd.oci.image.index.v1+json",
          "manifests":[
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:aa","size":1,
             "platform":{"architecture":"arm64","os":"linux","variant":"v8"}},
            {"mediaType":"application/vnd.oci.image.manifest.v1+json","digest":"sha256:bb","size":2,
             "platform":{"architecture":"amd64","os":"linux"}}]}"#;
        let Document::Index { manifests } = parse(doc, "").unwrap() else {
            panic!("not an index");
        };
        assert_eq!(
            select(&manifests, "linux", "amd64").unwrap().digest,
            "sha256:bb"
        );
        assert_eq!(
            select(&manifests, "linux", "arm64").unwrap().digest,
            "sha256:aa"
        );
        assert!(select(&manifests, "linux", "s390x").is_none());
    }

    #[test]
    fn parses_docker_manifest_by_content_type() {
        let doc = br#"{"schemaVersion":2,"config":{"mediaType":"x","digest":"sha256:c","size":3},
          "layers":[{"mediaType":"application/vnd.docker.image.rootfs.diff.tar.gzip","digest":"sha256:l","size":4}]}"#;
        let Document::Image {
            media_type,
            config,
            layers,
        } = parse(doc, DOCKER_MANIFEST).unwrap()
        else {
            panic!("not an image manifest");
        };
        assert_eq!(media_type, DOCKER_MANIFEST);
        assert_eq!(config.digest, "sha256:c");
        assert_eq!(layers.len(), 1);
    }

    #[test]
    fn refuses_garbage_and_schema1() {
        assert!(matches!(
            parse(b"not json", DOCKER_MANIFEST),
            Err(RegistryError::Decode { .. })
        ));
        let v1 = br#"{"schemaVersion":1,"name":"x","fsLayers":[]}"#;
        assert!(matches!(
            parse(
                v1,
                "application/vnd.docker.distribution.manifest.v1+prettyjws"
            ),
            Err(RegistryError::UnsupportedManifest { .. })
        ));
    }

    #[test]
    fn verifies_digests() {
        let d = sha256(b"abc");
        verify(&d, b"abc").unwrap();
        assert!(matches!(
            verify(&d, b"abd"),
            Err(RegistryError::DigestMismatch { .. })
        ));
        assert!(matches!(
            verify("sha512:00", b"abc"),
            Err(RegistryError::DigestAlgorithm { .. })
        ));
    }
}
