use berth_proto::any::{
    pack, pack_json, topic, type_url, unpack, unpack_json, Event, PROCESS_TYPE_URL, SPEC_TYPE_URL,
};
use berth_proto::containerd::events::{ImageCreate, TaskExit, TaskOom};
use berth_proto::containerd::services::events::v1::Envelope;
use berth_proto::ProtoError;
use prost::Message;

fn exit_event() -> TaskExit {
    TaskExit {
        container_id: "c1".into(),
        id: "c1".into(),
        pid: 4242,
        exit_status: 137,
        exited_at: Some(prost_types::Timestamp {
            seconds: 1_700_000_000,
            nanos: 5,
        }),
    }
}

#[test]
fn task_exit_round_trips_with_containerd_type_url() {
    let ev = exit_event();
    let any = pack(&ev);
    assert_eq!(any.type_url, "containerd.events.TaskExit");
    let back: TaskExit = unpack(&any).unwrap();
    assert_eq!(back, ev);

    // Through an envelope on the wire, as Subscribe delivers it.
    let env = Envelope {
        timestamp: None,
        namespace: "default".into(),
        topic: topic::TASK_EXIT.into(),
        event: Some(any),
    };
    let env = Envelope::decode(env.encode_to_vec().as_slice()).unwrap();
    let event = Event::from_any(env.event.as_ref().unwrap()).unwrap();
    assert_eq!(event.topic(), env.topic);
    assert_eq!(event, Event::TaskExit(ev));
}

#[test]
fn type_urls_match_containerd_names() {
    // The protobuf names, not the Rust ones (TaskOom), and the images package quirk.
    assert_eq!(type_url::<TaskOom>(), "containerd.events.TaskOOM");
    assert_eq!(
        type_url::<ImageCreate>(),
        "containerd.services.images.v1.ImageCreate"
    );
    assert_eq!(
        Event::from(TaskOom {
            container_id: "x".into()
        })
        .topic(),
        "/tasks/oom"
    );
}

#[test]
fn cgroup_metrics_use_containerd_type_urls() {
    use berth_proto::io::containerd::cgroups::{v1, v2};
    let m = v1::Metrics {
        memory: Some(v1::MemoryStat {
            usage: Some(v1::MemoryEntry {
                usage: 1 << 20,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let any = pack(&m);
    assert_eq!(any.type_url, "io.containerd.cgroups.v1.Metrics");
    assert_eq!(unpack::<v1::Metrics>(&any).unwrap(), m);
    assert_eq!(
        type_url::<v2::Metrics>(),
        "io.containerd.cgroups.v2.Metrics"
    );
}

#[test]
fn google_style_url_is_accepted() {
    let mut any = pack(&exit_event());
    any.type_url = format!("type.googleapis.com/{}", any.type_url);
    assert_eq!(unpack::<TaskExit>(&any).unwrap(), exit_event());
    assert!(matches!(Event::from_any(&any), Ok(Event::TaskExit(_))));
}

#[test]
fn wrong_or_unknown_types_are_errors() {
    let any = pack(&exit_event());
    assert!(matches!(
        unpack::<TaskOom>(&any),
        Err(ProtoError::TypeUrlMismatch { .. })
    ));
    let mut bad = any.clone();
    bad.type_url = "containerd.events.NoSuchEvent".into();
    assert!(matches!(
        Event::from_any(&bad),
        Err(ProtoError::UnknownEvent { .. })
    ));
    // A suffix match must be at a '/' boundary.
    bad.type_url = "xcontainerd.events.TaskExit".into();
    assert!(unpack::<TaskExit>(&bad).is_err());
    let mut garbage = any;
    garbage.value = vec![0xff, 0xff, 0xff];
    assert!(matches!(
        unpack::<TaskExit>(&garbage),
        Err(ProtoError::Decode { .. })
    ));
}

#[test]
fn oci_json_documents_keep_their_type_url() {
    let spec = br#"{"ociVersion":"1.1.0"}"#.to_vec();
    let any = pack_json(SPEC_TYPE_URL, spec.clone());
    assert_eq!(
        any.type_url,
        "types.containerd.io/opencontainers/runtime-spec/1/Spec"
    );
    assert_eq!(unpack_json(&any, SPEC_TYPE_URL).unwrap(), spec.as_slice());
    assert!(unpack_json(&any, PROCESS_TYPE_URL).is_err());
}
