//! containerd's Version service.

use berth_proto::containerd::services::version::v1::version_server::Version;
use berth_proto::containerd::services::version::v1::VersionResponse;
use tonic::{Request, Response, Status};

/// Our version, as `berth-highd --version` prints it.
pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// The source revision, when the build sets `BERTH_REVISION` (e.g. to `git rev-parse
/// HEAD`); builds without it report "unknown" rather than guessing.
pub const REVISION: &str = match option_env!("BERTH_REVISION") {
    Some(r) => r,
    None => "unknown",
};

#[derive(Debug, Default)]
pub struct VersionService;

#[tonic::async_trait]
impl Version for VersionService {
    async fn version(&self, _req: Request<()>) -> Result<Response<VersionResponse>, Status> {
        Ok(Response::new(VersionResponse {
            version: VERSION.to_string(),
            revision: REVISION.to_string(),
        }))
    }
}
