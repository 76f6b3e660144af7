//! containerd's Introspection service: which plugins we serve, and who we are.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use berth_proto::containerd::services::introspection::v1::introspection_server::Introspection;
use berth_proto::containerd::services::introspection::v1::{
    Plugin, PluginInfoRequest, PluginInfoResponse, PluginsRequest, PluginsResponse, ServerResponse,
};
use berth_proto::containerd::types::Platform;
use tonic::{Request, Response, Status};

use crate::events::{simple, Fields, Filter};

#[derive(Debug, thiserror::Error)]
pub enum IntrospectionError {
    #[error("cannot {action} server uuid file {path}")]
    Uuid {
        action: &'static str,
        path: PathBuf,
        source: std::io::Error,
    },
}

/// One entry of the Plugins listing (containerd's plugin type and id).
#[derive(Debug, Clone)]
pub struct PluginEntry {
    pub kind: &'static str,
    pub id: &'static str,
    pub platform: bool,
}

pub const GRPC: &str = "io.containerd.grpc.v1";
pub const SNAPSHOTTER: &str = "io.containerd.snapshotter.v1";
pub const RUNTIME: &str = "io.containerd.runtime.v2";

pub struct IntrospectionService {
    plugins: Vec<PluginEntry>,
    uuid: String,
}

impl IntrospectionService {
    pub fn new(plugins: Vec<PluginEntry>, uuid: String) -> Self {
        IntrospectionService { plugins, uuid }
    }

    fn to_proto(p: &PluginEntry) -> Plugin {
        let platforms = if p.platform {
            vec![Platform {
                os: "linux".to_string(),
                architecture: go_arch().to_string(),
                ..Platform::default()
            }]
        } else {
            Vec::new()
        };
        Plugin {
            r#type: p.kind.to_string(),
            id: p.id.to_string(),
            platforms,
            exports: HashMap::new(),
            ..Plugin::default()
        }
    }
}

/// Architecture names as Go (and OCI platforms) spell them.
fn go_arch() -> &'static str {
    match std::env::consts::ARCH {
        "x86_64" => "amd64",
        "aarch64" => "arm64",
        "x86" => "386",
        other => other,
    }
}

/// Reads `<root>/uuid`, creating it (atomically) on first start.
pub fn server_uuid(root: &Path) -> Result<String, IntrospectionError> {
    let path = root.join("uuid");
    match std::fs::read_to_string(&path) {
        Ok(s) if uuid::Uuid::parse_str(s.trim()).is_ok() => return Ok(s.trim().to_string()),
        Ok(_) => tracing::warn!(path = %path.display(), "replacing malformed server uuid"),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(IntrospectionError::Uuid {
                action: "read",
                path,
                source,
            })
        }
    }
    let id = uuid::Uuid::new_v4().to_string();
    let tmp = root.join(".uuid.tmp");
    let write = || -> std::io::Result<()> {
        let mut f = std::fs::File::create(&tmp)?;
        f.write_all(id.as_bytes())?;
        f.sync_all()?;
        std::fs::rename(&tmp, &path)
    };
    write().map_err(|source| IntrospectionError::Uuid {
        action: "write",
        path: path.clone(),
        source,
    })?;
    Ok(id)
}

#[tonic::async_trait]
impl Introspection for IntrospectionService {
    async fn plugins(
        &self,
        req: Request<PluginsRequest>,
    ) -> Result<Response<PluginsResponse>, Status> {
        let filters = Filter::parse(&req.get_ref().filters).map_err(Status::from)?;
        let plugins = self
            .plugins
            .iter()
            .filter(|p| {
                filters.matches(&Fields(|path: &[String]| match simple(path)? {
                    "type" => Some(p.kind.to_string()),
                    "id" => Some(p.id.to_string()),
                    _ => None,
                }))
            })
            .map(Self::to_proto)
            .collect();
        Ok(Response::new(PluginsResponse { plugins }))
    }

    async fn server(&self, _req: Request<()>) -> Result<Response<ServerResponse>, Status> {
        let pidns = std::fs::metadata("/proc/self/ns/pid")
            .map(|m| m.ino())
            .unwrap_or(0);
        Ok(Response::new(ServerResponse {
            uuid: self.uuid.clone(),
            pid: u64::from(std::process::id()),
            pidns,
            deprecations: Vec::new(),
        }))
    }

    async fn plugin_info(
        &self,
        req: Request<PluginInfoRequest>,
    ) -> Result<Response<PluginInfoResponse>, Status> {
        let r = req.get_ref();
        let plugin = self
            .plugins
            .iter()
            .find(|p| p.kind == r.r#type && p.id == r.id)
            .ok_or_else(|| Status::not_found(format!("plugin {}.{} not found", r.r#type, r.id)))?;
        Ok(Response::new(PluginInfoResponse {
            plugin: Some(Self::to_proto(plugin)),
            extra: None,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn uuid_is_persisted() {
        let dir = tempfile::tempdir().unwrap();
        let a = server_uuid(dir.path()).unwrap();
        let b = server_uuid(dir.path()).unwrap();
        assert_eq!(a, b);
        assert!(uuid::Uuid::parse_str(&a).is_ok());
    }
}
