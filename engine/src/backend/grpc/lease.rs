//! Leases over containerd's Leases service, and the interceptor that names the current
//! operation's lease (see [`crate::backend::lease`]) on every call.

use std::collections::HashMap;

use berth_proto::containerd::services::leases::v1 as pb;
use berth_proto::NamespaceInterceptor;
use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use super::{GrpcBackend, Svc};
use crate::backend::{lease, BackendResult};

/// The namespace, plus `containerd-lease` when the calling task runs under a lease.
#[derive(Clone)]
pub struct LeaseInterceptor(pub NamespaceInterceptor);

impl tonic::service::Interceptor for LeaseInterceptor {
    fn call(&mut self, req: Request<()>) -> Result<Request<()>, Status> {
        let mut req = self.0.call(req)?;
        if let Some(id) = lease::current() {
            let value = MetadataValue::try_from(id.as_str())
                .map_err(|_| Status::invalid_argument(format!("lease id {id:?}")))?;
            req.metadata_mut().insert(lease::HEADER, value);
        }
        Ok(req)
    }
}

impl GrpcBackend {
    fn leases(&self) -> pb::leases_client::LeasesClient<Svc> {
        pb::leases_client::LeasesClient::with_interceptor(
            self.channel.clone(),
            self.interceptor.clone(),
        )
    }

    pub(super) async fn create_lease(
        &self,
        id: &str,
        labels: HashMap<String, String>,
    ) -> BackendResult<()> {
        self.leases()
            .create(pb::CreateRequest {
                id: id.into(),
                labels,
            })
            .await
            .map_err(self.err("lease create"))?;
        Ok(())
    }

    pub(super) async fn list_leases(
        &self,
    ) -> BackendResult<Vec<(String, HashMap<String, String>)>> {
        let resp = self
            .leases()
            .list(pb::ListRequest { filters: vec![] })
            .await
            .map_err(self.err("lease list"))?;
        Ok(resp
            .into_inner()
            .leases
            .into_iter()
            .map(|l| (l.id, l.labels))
            .collect())
    }

    pub(super) async fn delete_lease(&self, id: &str) -> BackendResult<()> {
        self.leases()
            .delete(pb::DeleteRequest {
                id: id.into(),
                sync: false,
            })
            .await
            .map_err(self.err("lease delete"))?;
        Ok(())
    }
}
