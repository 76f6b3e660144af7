//! Byte-level checks of field numbers that matter most to interoperability with
//! containerd clients; a wrong number here would silently drop data on the wire.

use berth_proto::containerd::services::containers::v1::Container;
use berth_proto::containerd::services::tasks::v1::{
    CreateTaskRequest, ExecProcessRequest, WaitResponse,
};
use berth_proto::containerd::task::v2 as shim;
use berth_proto::containerd::types::{Descriptor, Mount};
use berth_proto::containerd::v1::types::{Process, Status};
use prost::Message;

/// The first byte of a field: (number << 3) | wire type.
fn tag(number: u8, wire_type: u8) -> u8 {
    (number << 3) | wire_type
}

const VARINT: u8 = 0;
const LEN: u8 = 2;

#[test]
fn single_fields_use_containerd_numbers() {
    let cases: Vec<(Vec<u8>, u8)> = vec![
        (
            CreateTaskRequest {
                rootfs: vec![Mount::default()],
                ..Default::default()
            }
            .encode_to_vec(),
            tag(3, LEN),
        ),
        (
            CreateTaskRequest {
                runtime_path: "x".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            tag(10, LEN),
        ),
        (
            ExecProcessRequest {
                exec_id: "e".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            tag(7, LEN),
        ),
        (
            Container {
                spec: Some(prost_types::Any::default()),
                ..Default::default()
            }
            .encode_to_vec(),
            tag(5, LEN),
        ),
        (
            Container {
                snapshot_key: "k".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            tag(7, LEN),
        ),
        (
            WaitResponse {
                exited_at: Some(prost_types::Timestamp::default()),
                ..Default::default()
            }
            .encode_to_vec(),
            tag(2, LEN),
        ),
        (
            Descriptor {
                size: 1,
                ..Default::default()
            }
            .encode_to_vec(),
            tag(3, VARINT),
        ),
        (
            Process {
                status: Status::Stopped as i32,
                ..Default::default()
            }
            .encode_to_vec(),
            tag(4, VARINT),
        ),
        (
            shim::StateResponse {
                exec_id: "e".into(),
                ..Default::default()
            }
            .encode_to_vec(),
            // field 11 needs a two-byte tag: 11<<3|2 = 90
            90,
        ),
        (
            shim::CreateTaskRequest {
                terminal: true,
                ..Default::default()
            }
            .encode_to_vec(),
            tag(4, VARINT),
        ),
    ];
    for (i, (bytes, want)) in cases.iter().enumerate() {
        assert_eq!(bytes.first(), Some(want), "case {i}: {bytes:?}");
    }
}

#[test]
fn descriptor_annotations_are_field_5() {
    let d = Descriptor {
        annotations: [("a".to_string(), "b".to_string())].into(),
        ..Default::default()
    };
    assert_eq!(d.encode_to_vec()[0], tag(5, LEN));
}

#[test]
fn status_enum_values_match() {
    assert_eq!(Status::Unknown as i32, 0);
    assert_eq!(Status::Created as i32, 1);
    assert_eq!(Status::Running as i32, 2);
    assert_eq!(Status::Stopped as i32, 3);
    assert_eq!(Status::Paused as i32, 4);
    assert_eq!(Status::Pausing as i32, 5);
}
