//! A connection to one shim's task API (containerd.task.v2.Task over gRPC).

use std::path::{Path, PathBuf};
use std::time::Duration;

use berth_proto::containerd::task::v2::task_client::TaskClient;
use tonic::transport::Channel;

use super::ShimError;

/// How long connecting to a shim may take; a live shim accepts at once.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

#[derive(Clone, Debug)]
pub struct ShimClient {
    inner: TaskClient<Channel>,
    address: PathBuf,
}

impl ShimClient {
    /// Connects now, failing if nobody accepts on `address`.
    pub async fn connect(address: &Path) -> Result<ShimClient, ShimError> {
        let connect = berth_proto::transport::connect_unix(address);
        let channel = match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
            Ok(Ok(channel)) => channel,
            Ok(Err(e)) => {
                return Err(ShimError::Connect {
                    address: address.to_path_buf(),
                    message: error_chain(&e),
                })
            }
            Err(_) => {
                return Err(ShimError::Connect {
                    address: address.to_path_buf(),
                    message: format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()),
                })
            }
        };
        Ok(ShimClient {
            // Exec specs and state carry little data, but stats and pids lists may be
            // larger than tonic's 4 MiB default on busy containers.
            inner: TaskClient::new(channel).max_decoding_message_size(64 << 20),
            address: address.to_path_buf(),
        })
    }

    /// A client that connects on first use and reconnects after failures: for a shim
    /// that is alive but did not accept in time (stopped, overloaded), which must be
    /// kept, not declared dead.
    pub fn lazy(address: &Path) -> ShimClient {
        ShimClient {
            inner: TaskClient::new(berth_proto::transport::connect_unix_lazy(address))
                .max_decoding_message_size(64 << 20),
            address: address.to_path_buf(),
        }
    }

    /// A client handle for one call (cheap: clones share the connection).
    pub fn rpc(&self) -> TaskClient<Channel> {
        self.inner.clone()
    }

    pub fn address(&self) -> &Path {
        &self.address
    }
}

/// True only if the shim is certainly dead: nothing listens on its socket (refused or
/// no socket file) and its recorded process is gone or no longer our shim. A shim that
/// is merely slow, stopped or overloaded is not dead; "no answer in time" never counts.
pub async fn shim_dead(address: Option<&Path>, bundle: &Path) -> bool {
    let refused = match address {
        None => true,
        Some(address) => {
            match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::UnixStream::connect(address))
                .await
            {
                Ok(Err(e)) => matches!(
                    e.kind(),
                    std::io::ErrorKind::ConnectionRefused | std::io::ErrorKind::NotFound
                ),
                // Accepted, or the backlog is full and connect blocks: someone listens.
                Ok(Ok(_)) | Err(_) => false,
            }
        }
    };
    refused && !super::launch::shim_running(bundle)
}

/// "a: b: c" from an error and its sources, so the cause is not lost in a message.
pub fn error_chain(e: &dyn std::error::Error) -> String {
    let mut msg = e.to_string();
    let mut cur = e.source();
    while let Some(s) = cur {
        msg.push_str(": ");
        msg.push_str(&s.to_string());
        cur = s.source();
    }
    msg
}
