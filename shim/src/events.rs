//! Publishing task events to highd (`containerd.services.events.v1.Events/Publish`).
//!
//! Events wait in an in-memory queue and go out in order, one at a time; each is retried
//! with backoff until highd acknowledges it, however long highd is down. Callers only
//! enqueue, so the task API never waits on highd. The connection to highd is closed
//! whenever the queue is empty and made again for the next event.

use std::path::PathBuf;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use berth_proto::any::Event;
use berth_proto::containerd::services::events::v1::events_client::EventsClient;
use berth_proto::containerd::services::events::v1::PublishRequest;
use berth_proto::transport::connect_unix_lazy;
use berth_proto::with_namespace;
use tokio::sync::{mpsc, Notify};

const FIRST_BACKOFF: Duration = Duration::from_millis(100);
const MAX_BACKOFF: Duration = Duration::from_secs(5);

/// Cheap to clone; every clone feeds the same queue.
#[derive(Debug, Clone)]
pub struct Publisher {
    tx: mpsc::UnboundedSender<Event>,
    pending: Arc<AtomicUsize>,
    drained: Arc<Notify>,
}

impl Publisher {
    /// Starts the sender task. Must run inside a tokio runtime.
    pub fn start(address: PathBuf, namespace: String) -> Publisher {
        let (tx, rx) = mpsc::unbounded_channel();
        let publisher = Publisher {
            tx,
            pending: Arc::new(AtomicUsize::new(0)),
            drained: Arc::new(Notify::new()),
        };
        tokio::spawn(send_loop(address, namespace, rx, publisher.clone()));
        publisher
    }

    pub fn publish(&self, event: impl Into<Event>) {
        let event = event.into();
        tracing::debug!(topic = event.topic(), "queueing event");
        self.pending.fetch_add(1, Ordering::SeqCst);
        if self.tx.send(event).is_err() {
            self.pending.fetch_sub(1, Ordering::SeqCst);
        }
    }

    /// Waits until every queued event was acknowledged, at most `limit`.
    pub async fn flush(&self, limit: Duration) -> bool {
        let wait = async {
            loop {
                let notified = self.drained.notified();
                if self.pending.load(Ordering::SeqCst) == 0 {
                    return;
                }
                notified.await;
            }
        };
        tokio::time::timeout(limit, wait).await.is_ok()
    }
}

async fn send_loop(
    address: PathBuf,
    namespace: String,
    mut rx: mpsc::UnboundedReceiver<Event>,
    publisher: Publisher,
) {
    let mut connection = None;
    while let Some(event) = rx.recv().await {
        // Connecting lazily lets the shim start (and queue events) while highd is down.
        let client =
            connection.get_or_insert_with(|| EventsClient::new(connect_unix_lazy(&address)));
        let mut backoff = FIRST_BACKOFF;
        let mut attempts = 0u32;
        loop {
            let request = PublishRequest {
                topic: event.topic().to_owned(),
                event: Some(event.to_any()),
            };
            let request = match with_namespace(request, &namespace) {
                Ok(r) => r,
                Err(err) => {
                    // The namespace was validated at start-up; this cannot recur.
                    tracing::error!(%err, "dropping event: bad namespace");
                    break;
                }
            };
            match client.publish(request).await {
                Ok(_) => {
                    tracing::debug!(topic = event.topic(), attempts, "event published");
                    break;
                }
                Err(status) => {
                    // Log the first failure and then rarely: highd may be down for minutes.
                    if attempts % 20 == 0 {
                        tracing::warn!(
                            topic = event.topic(),
                            address = %address.display(),
                            code = ?status.code(),
                            message = status.message(),
                            attempts,
                            "publishing event failed; retrying"
                        );
                    }
                    attempts += 1;
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
        if publisher.pending.fetch_sub(1, Ordering::SeqCst) == 1 {
            publisher.drained.notify_waiters();
        }
        // Events come in bursts minutes apart; an idle shim should not hold an HTTP/2
        // connection (and its buffers) to highd in between.
        if rx.is_empty() {
            connection = None;
        }
    }
}
