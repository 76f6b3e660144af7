//! containerd's Events service: shims publish, clients subscribe.

use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use berth_proto::containerd::services::events::v1::events_server::Events;
use berth_proto::containerd::services::events::v1::{
    Envelope, ForwardRequest, PublishRequest, SubscribeRequest,
};
use futures::{Stream, StreamExt};
use tonic::{Request, Response, Status};

use super::{Event, EventError, Exchange, Filter};
use crate::server::namespace;
use crate::tasks::TaskManager;

pub struct EventsService {
    exchange: Exchange,
    tasks: Arc<TaskManager>,
}

impl EventsService {
    pub fn new(exchange: Exchange, tasks: Arc<TaskManager>) -> Self {
        EventsService { exchange, tasks }
    }

    fn publish(&self, event: Event) -> Result<(), Status> {
        super::validate_topic(&event.topic)?;
        // Update task state before subscribers hear of it, so a client reacting to
        // TaskExit with tasks.Get sees the exit.
        self.tasks.observe(&event);
        self.exchange.publish(event)?;
        Ok(())
    }
}

impl From<EventError> for Status {
    fn from(e: EventError) -> Status {
        match e {
            EventError::Lagged { .. } => Status::data_loss(e.to_string()),
            _ => Status::invalid_argument(e.to_string()),
        }
    }
}

fn to_system_time(ts: Option<prost_types::Timestamp>) -> SystemTime {
    match ts {
        Some(ts) if ts.seconds >= 0 => {
            UNIX_EPOCH + Duration::new(ts.seconds as u64, ts.nanos.clamp(0, 999_999_999) as u32)
        }
        _ => SystemTime::now(),
    }
}

fn to_timestamp(t: SystemTime) -> prost_types::Timestamp {
    let d = t.duration_since(UNIX_EPOCH).unwrap_or_default();
    prost_types::Timestamp {
        seconds: d.as_secs() as i64,
        nanos: d.subsec_nanos() as i32,
    }
}

type EnvelopeStream = Pin<Box<dyn Stream<Item = Result<Envelope, Status>> + Send>>;

#[tonic::async_trait]
impl Events for EventsService {
    async fn publish(&self, req: Request<PublishRequest>) -> Result<Response<()>, Status> {
        let ns = namespace(&req)?;
        let r = req.into_inner();
        let event = r.event.ok_or_else(|| {
            Status::from(EventError::NoPayload {
                topic: r.topic.clone(),
            })
        })?;
        self.publish(Event {
            timestamp: SystemTime::now(),
            namespace: ns,
            topic: r.topic,
            event,
        })?;
        Ok(Response::new(()))
    }

    async fn forward(&self, req: Request<ForwardRequest>) -> Result<Response<()>, Status> {
        let env = req
            .into_inner()
            .envelope
            .ok_or_else(|| Status::invalid_argument("envelope must be set"))?;
        berth_proto::namespace::validate_identifier(&env.namespace)
            .map_err(|e| Status::invalid_argument(format!("envelope namespace: {e}")))?;
        let event = env.event.ok_or_else(|| {
            Status::from(EventError::NoPayload {
                topic: env.topic.clone(),
            })
        })?;
        self.publish(Event {
            timestamp: to_system_time(env.timestamp),
            namespace: env.namespace,
            topic: env.topic,
            event,
        })?;
        Ok(Response::new(()))
    }

    type SubscribeStream = EnvelopeStream;

    async fn subscribe(
        &self,
        req: Request<SubscribeRequest>,
    ) -> Result<Response<EnvelopeStream>, Status> {
        let filters = Filter::parse(&req.get_ref().filters).map_err(Status::from)?;
        // A lagged subscriber gets DataLoss and the end of its stream, so it resubscribes
        // and reconciles instead of silently missing events.
        let stream = self.exchange.subscribe_checked(filters).map(|ev| {
            let ev = ev?;
            Ok(Envelope {
                timestamp: Some(to_timestamp(ev.timestamp)),
                namespace: ev.namespace.clone(),
                topic: ev.topic.clone(),
                event: Some(ev.event.clone()),
            })
        });
        Ok(Response::new(Box::pin(stream)))
    }
}
