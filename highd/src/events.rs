//! The in-process event exchange: every service publishes here, shims' events are
//! forwarded here, and `events.Subscribe` streams from here.
//!
//! Delivery is best-effort and in memory, as in containerd: a subscriber that falls more
//! than `CAPACITY` events behind loses the oldest ones, and its stream then ends with
//! [`EventError::Lagged`] so the client knows to resubscribe and reconcile. Durable
//! facts (a task's exit) live in the shim's `exit.json`, not in the exchange.

pub mod service;

use std::sync::Arc;
use std::time::SystemTime;

use futures::Stream;
use tokio::sync::broadcast;

use crate::db::filter::Adaptor;
pub use crate::db::filter::Filter;
use crate::db::StoreError;

/// Subscribe filters are the shared containerd filters; this is the name the storage
/// tests (gc/service_tests.rs) use.
pub mod filter {
    pub use crate::db::filter::Filter as Filters;
}

impl Filter {
    /// Parses `Subscribe` filters (fields `topic`, `namespace`).
    pub fn parse_events(filters: &[String]) -> Result<Filter, StoreError> {
        Filter::parse(filters)
    }
}

/// Adapts a field lookup closure to the shared containerd filter (`crate::db::filter`):
/// `path` is the selector's field split at its first dot (`labels.KEY` → `["labels", KEY]`).
pub struct Fields<F: Fn(&[String]) -> Option<String>>(pub F);

impl<F: Fn(&[String]) -> Option<String>> Adaptor for Fields<F> {
    fn field(&self, path: &[String]) -> Option<String> {
        (self.0)(path)
    }
}

/// The one-component field name of `path`, if it has exactly one.
pub fn simple(path: &[String]) -> Option<&str> {
    match path {
        [one] => Some(one.as_str()),
        _ => None,
    }
}

const CAPACITY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    #[error("invalid topic {topic:?}: must start with '/' and have non-empty components")]
    Topic { topic: String },
    #[error("an event needs a namespace (containerd-namespace header or envelope field)")]
    NoNamespace,
    #[error("event on topic {topic:?} has no payload")]
    NoPayload { topic: String },
    #[error(
        "event subscriber fell behind: {missed} events were dropped; resubscribe and reconcile"
    )]
    Lagged { missed: u64 },
}

#[derive(Debug, Clone)]
pub struct Event {
    pub timestamp: SystemTime,
    pub namespace: String,
    pub topic: String,
    pub event: prost_types::Any,
}

impl Event {
    /// The envelope fields filters can select on: `topic` and `namespace`.
    fn fields(&self) -> Fields<impl Fn(&[String]) -> Option<String> + '_> {
        Fields(move |path: &[String]| match simple(path)? {
            "topic" => Some(self.topic.clone()),
            "namespace" => Some(self.namespace.clone()),
            _ => None,
        })
    }
}

#[derive(Clone)]
pub struct Exchange {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for Exchange {
    fn default() -> Self {
        Exchange::new()
    }
}

impl Exchange {
    pub fn new() -> Exchange {
        let (tx, _) = broadcast::channel(CAPACITY);
        Exchange { tx }
    }

    /// Checks and publishes one event; having no subscriber is not an error.
    pub fn publish(&self, event: Event) -> Result<(), EventError> {
        validate_topic(&event.topic)?;
        if event.namespace.is_empty() {
            return Err(EventError::NoNamespace);
        }
        tracing::debug!(namespace = %event.namespace, topic = %event.topic, "event");
        let _ = self.tx.send(Arc::new(event));
        Ok(())
    }

    /// Publishes an event produced by highd itself (its topics are known valid).
    pub fn emit(&self, namespace: &str, topic: &str, event: prost_types::Any) {
        let event = Event {
            timestamp: SystemTime::now(),
            namespace: namespace.to_string(),
            topic: topic.to_string(),
            event,
        };
        if let Err(e) = self.publish(event) {
            tracing::error!(error = %e, "dropping internal event");
        }
    }

    /// A stream of the events matching `filters`, from now on. It ends after
    /// `Err(EventError::Lagged)` if the subscriber fell so far behind that events were
    /// dropped: carrying on silently would let a client miss a `/tasks/exit` and never
    /// know to reconcile.
    pub fn subscribe_checked(
        &self,
        filters: Filter,
    ) -> impl Stream<Item = Result<Arc<Event>, EventError>> + Send + 'static {
        let rx = self.tx.subscribe();
        futures::stream::unfold(Some((rx, filters)), |state| async move {
            let (mut rx, filters) = state?;
            loop {
                match rx.recv().await {
                    Ok(ev) if filters.matches(&ev.fields()) => {
                        return Some((Ok(ev), Some((rx, filters))))
                    }
                    Ok(_) => continue,
                    Err(broadcast::error::RecvError::Lagged(missed)) => {
                        tracing::warn!(missed, "event subscriber fell behind; ending its stream");
                        return Some((Err(EventError::Lagged { missed }), None));
                    }
                    Err(broadcast::error::RecvError::Closed) => return None,
                }
            }
        })
    }

    /// [`Exchange::subscribe_checked`] for in-process observers that only want events:
    /// the stream simply ends where events were lost.
    pub fn subscribe(&self, filters: Filter) -> impl Stream<Item = Arc<Event>> + Send + 'static {
        use futures::StreamExt;
        self.subscribe_checked(filters)
            .take_while(|r| futures::future::ready(r.is_ok()))
            .filter_map(|r| futures::future::ready(r.ok()))
    }
}

/// containerd's rule: `/` followed by one or more non-empty `/`-separated components.
pub fn validate_topic(topic: &str) -> Result<(), EventError> {
    let bad = || EventError::Topic {
        topic: topic.to_string(),
    };
    let rest = topic.strip_prefix('/').ok_or_else(bad)?;
    if rest.is_empty() || rest.split('/').any(str::is_empty) {
        return Err(bad());
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use futures::StreamExt;

    fn any(n: u8) -> prost_types::Any {
        prost_types::Any {
            type_url: "test".into(),
            value: vec![n],
        }
    }

    #[test]
    fn topics() {
        assert!(validate_topic("/tasks/exit").is_ok());
        for bad in ["", "/", "tasks", "/tasks/", "//x"] {
            assert!(validate_topic(bad).is_err(), "{bad}");
        }
    }

    #[tokio::test]
    async fn subscribers_get_matching_events_in_order() {
        let ex = Exchange::new();
        let filters = Filter::parse(&["topic~=\"^/tasks/\"".to_string()]).unwrap();
        let mut sub = Box::pin(ex.subscribe(filters));
        ex.emit("ns", "/containers/create", any(0));
        ex.emit("ns", "/tasks/start", any(1));
        ex.emit("ns", "/tasks/exit", any(2));
        let first = sub.next().await.unwrap();
        let second = sub.next().await.unwrap();
        assert_eq!(
            (first.topic.as_str(), first.event.value[0]),
            ("/tasks/start", 1)
        );
        assert_eq!(
            (second.topic.as_str(), second.event.value[0]),
            ("/tasks/exit", 2)
        );
        let no_ns = Event {
            timestamp: SystemTime::now(),
            namespace: String::new(),
            topic: "/x".into(),
            event: any(3),
        };
        assert!(matches!(ex.publish(no_ns), Err(EventError::NoNamespace)));
    }

    #[tokio::test]
    async fn a_lagging_subscriber_gets_data_loss_and_its_stream_ends() {
        let ex = Exchange::new();
        let mut slow = Box::pin(ex.subscribe_checked(Filter::parse(&[]).unwrap()));
        let extra = 5;
        for i in 0..CAPACITY + extra {
            ex.emit("ns", "/tasks/exit", any(i as u8));
        }
        match slow.next().await {
            Some(Err(EventError::Lagged { missed })) => assert_eq!(missed, extra as u64),
            other => panic!(
                "expected Lagged, got {:?}",
                other.map(|r| r.map(|e| e.topic.clone()))
            ),
        }
        assert!(
            slow.next().await.is_none(),
            "the stream ends after the loss"
        );
        // Over gRPC the loss is DataLoss, naming the count.
        let status = tonic::Status::from(EventError::Lagged { missed: 5 });
        assert_eq!(status.code(), tonic::Code::DataLoss);
        assert!(
            status.message().contains("5 events"),
            "{}",
            status.message()
        );
    }
}
