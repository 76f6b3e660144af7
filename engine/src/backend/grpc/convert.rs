//! Conversions between containerd's protobuf types and the backend's plain types, and
//! the one mapping from gRPC status codes to [`BackendError`].

use berth_proto::containerd::services as svc;
use berth_proto::containerd::types as pb;
use chrono::{DateTime, Utc};

use crate::backend::{BackendError, Descriptor, Image, Mount, TaskStatus};

pub(super) fn status_err(op: &'static str, address: &str, s: tonic::Status) -> BackendError {
    // Some failures (an unserved method) carry no message; the code still says what.
    let message = if s.message().is_empty() {
        format!("{:?}", s.code())
    } else {
        s.message().to_string()
    };
    match s.code() {
        tonic::Code::NotFound => BackendError::NotFound { message },
        tonic::Code::AlreadyExists => BackendError::AlreadyExists { message },
        tonic::Code::InvalidArgument => BackendError::InvalidArgument { message },
        // Cancelled is what a call gets when highd goes away under it.
        tonic::Code::Unavailable | tonic::Code::Cancelled => BackendError::Connect {
            address: address.into(),
            message,
        },
        _ => BackendError::Failed { op, message },
    }
}

pub(super) fn ts(t: Option<prost_types::Timestamp>) -> Option<DateTime<Utc>> {
    let t = t?;
    DateTime::from_timestamp(t.seconds, u32::try_from(t.nanos).unwrap_or(0))
}

pub(super) fn to_ts(t: Option<DateTime<Utc>>) -> Option<prost_types::Timestamp> {
    t.map(|t| prost_types::Timestamp {
        seconds: t.timestamp(),
        nanos: i32::try_from(t.timestamp_subsec_nanos()).unwrap_or(0),
    })
}

pub(super) fn mount_from(m: pb::Mount) -> Mount {
    Mount {
        kind: m.r#type,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

pub(super) fn mount_to(m: Mount) -> pb::Mount {
    pb::Mount {
        r#type: m.kind,
        source: m.source,
        target: m.target,
        options: m.options,
    }
}

pub(super) fn desc_from(d: pb::Descriptor) -> Descriptor {
    Descriptor {
        media_type: d.media_type,
        digest: d.digest,
        size: d.size,
        annotations: d.annotations,
    }
}

pub(super) fn desc_to(d: &Descriptor) -> pb::Descriptor {
    pb::Descriptor {
        media_type: d.media_type.clone(),
        digest: d.digest.clone(),
        size: d.size,
        annotations: d.annotations.clone(),
    }
}

pub(super) fn image_from(i: svc::images::v1::Image) -> Image {
    Image {
        name: i.name,
        target: i.target.map(desc_from).unwrap_or_default(),
        labels: i.labels,
        created_at: ts(i.created_at),
        updated_at: ts(i.updated_at),
    }
}

pub(super) fn task_status(s: i32) -> TaskStatus {
    use berth_proto::containerd::v1::types::Status as S;
    match S::try_from(s) {
        Ok(S::Created) => TaskStatus::Created,
        Ok(S::Running) => TaskStatus::Running,
        Ok(S::Stopped) => TaskStatus::Stopped,
        Ok(S::Paused) => TaskStatus::Paused,
        Ok(S::Pausing) => TaskStatus::Pausing,
        _ => TaskStatus::Unknown,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_codes_map_to_backend_errors() {
        let e = status_err(
            "x",
            "/s",
            tonic::Status::not_found("container \"a\": not found"),
        );
        assert!(e.is_not_found());
        assert_eq!(e.to_string(), "container \"a\": not found");
        let e = status_err(
            "task create",
            "/s",
            tonic::Status::unknown("OCI runtime create failed: boom"),
        );
        assert_eq!(
            e.to_string(),
            "task create: OCI runtime create failed: boom"
        );
        let e = status_err("x", "/s", tonic::Status::unavailable("connection refused"));
        assert!(matches!(e, BackendError::Connect { .. }));
        let e = status_err(
            "content info",
            "/s",
            tonic::Status::new(tonic::Code::Unimplemented, ""),
        );
        assert_eq!(e.to_string(), "content info: Unimplemented");
    }

    #[test]
    fn timestamps_and_mounts_round_trip() {
        let now = Utc::now();
        assert_eq!(ts(to_ts(Some(now))), Some(now));
        assert_eq!(ts(None), None);
        let m = Mount {
            kind: "overlay".into(),
            source: "overlay".into(),
            target: String::new(),
            options: vec!["lowerdir=/a".into()],
        };
        assert_eq!(mount_from(mount_to(m.clone())), m);
        assert_eq!(task_status(2), TaskStatus::Running);
        assert_eq!(task_status(3), TaskStatus::Stopped);
        assert_eq!(task_status(99), TaskStatus::Unknown);
    }
}
