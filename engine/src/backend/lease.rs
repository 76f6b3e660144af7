//! The lease a piece of engine work runs under (containerd's `leases.WithLease` context).
//!
//! A pull, load, import or build writes content and snapshots before anything (an image)
//! references them; highd's garbage collector would be free to take them in between.
//! The work runs inside [`scoped`], and every highd call it makes carries the lease id in
//! the `containerd-lease` gRPC metadata, so highd adds what it creates to the lease. The
//! id is task-local (like Go's context value), so concurrent operations each name their
//! own and nothing else's calls are touched.

use std::future::Future;

/// gRPC metadata key of the lease (containerd's `leases.GRPCHeader`).
pub const HEADER: &str = "containerd-lease";

tokio::task_local! {
    static LEASE: String;
}

/// Runs `fut` with every backend call made from it under lease `id`.
pub async fn scoped<F: Future>(id: String, fut: F) -> F::Output {
    LEASE.scope(id, fut).await
}

/// The lease of the running operation, if it has one.
pub fn current() -> Option<String> {
    LEASE.try_with(Clone::clone).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn lease_is_seen_only_inside_its_scope() {
        assert_eq!(current(), None);
        let inner = scoped("l1".into(), async { current() }).await;
        assert_eq!(inner.as_deref(), Some("l1"));
        assert_eq!(current(), None);
    }
}
