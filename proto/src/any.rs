//! Packing messages into `prost_types::Any` the way containerd's typeurl does.
//!
//! containerd 1.6/1.7 (typeurl) uses the bare protobuf full name as the type URL of
//! protobuf messages, e.g. `containerd.events.TaskExit`, with no `type.googleapis.com/`
//! prefix. Go types registered by hand (the OCI runtime spec) use
//! `types.containerd.io/opencontainers/runtime-spec/1/<Type>` and a JSON value.

use prost::{Message, Name};
use prost_types::Any;

use crate::containerd::events;
use crate::ProtoError;

/// Type URL of an OCI runtime spec (`Container.spec`), value is the config.json bytes.
pub const SPEC_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Spec";
/// Type URL of an OCI process spec (`ExecProcessRequest.spec`), JSON value.
pub const PROCESS_TYPE_URL: &str = "types.containerd.io/opencontainers/runtime-spec/1/Process";
/// Type URL of OCI Linux resources (`UpdateTaskRequest.resources`), JSON value.
pub const LINUX_RESOURCES_TYPE_URL: &str =
    "types.containerd.io/opencontainers/runtime-spec/1/LinuxResources";

/// Event topics, as containerd publishes them.
pub mod topic {
    pub const TASK_CREATE: &str = "/tasks/create";
    pub const TASK_START: &str = "/tasks/start";
    pub const TASK_OOM: &str = "/tasks/oom";
    pub const TASK_EXIT: &str = "/tasks/exit";
    pub const TASK_DELETE: &str = "/tasks/delete";
    pub const TASK_EXEC_ADDED: &str = "/tasks/exec-added";
    pub const TASK_EXEC_STARTED: &str = "/tasks/exec-started";
    pub const TASK_PAUSED: &str = "/tasks/paused";
    pub const TASK_RESUMED: &str = "/tasks/resumed";
    pub const TASK_CHECKPOINTED: &str = "/tasks/checkpointed";
    pub const CONTAINER_CREATE: &str = "/containers/create";
    pub const CONTAINER_UPDATE: &str = "/containers/update";
    pub const CONTAINER_DELETE: &str = "/containers/delete";
    pub const IMAGE_CREATE: &str = "/images/create";
    pub const IMAGE_UPDATE: &str = "/images/update";
    pub const IMAGE_DELETE: &str = "/images/delete";
    pub const NAMESPACE_CREATE: &str = "/namespaces/create";
    pub const NAMESPACE_UPDATE: &str = "/namespaces/update";
    pub const NAMESPACE_DELETE: &str = "/namespaces/delete";
    // containerd uses the singular here.
    pub const SNAPSHOT_PREPARE: &str = "/snapshot/prepare";
    pub const SNAPSHOT_COMMIT: &str = "/snapshot/commit";
    pub const SNAPSHOT_REMOVE: &str = "/snapshot/remove";
    pub const CONTENT_DELETE: &str = "/content/delete";
}

/// The type URL containerd uses for protobuf message `M`.
pub fn type_url<M: Name>() -> String {
    M::full_name()
}

/// Packs a protobuf message with containerd's type URL.
pub fn pack<M: Message + Name>(msg: &M) -> Any {
    Any {
        type_url: type_url::<M>(),
        value: msg.encode_to_vec(),
    }
}

/// Unpacks `any` as `M`, checking the type URL. A `<prefix>/<full name>` URL (the
/// google form) is accepted as well, since it names the same type.
pub fn unpack<M: Message + Name + Default>(any: &Any) -> Result<M, ProtoError> {
    let expected = type_url::<M>();
    if !type_url_matches(&any.type_url, &expected) {
        return Err(ProtoError::TypeUrlMismatch {
            expected,
            found: any.type_url.clone(),
        });
    }
    M::decode(any.value.as_slice()).map_err(|source| ProtoError::Decode {
        type_url: any.type_url.clone(),
        source,
    })
}

fn type_url_matches(found: &str, full_name: &str) -> bool {
    found == full_name
        || found
            .strip_suffix(full_name)
            .is_some_and(|prefix| prefix.ends_with('/'))
}

/// Wraps a JSON document (OCI spec, process, resources) with the given type URL.
pub fn pack_json(type_url: &str, json: Vec<u8>) -> Any {
    Any {
        type_url: type_url.to_owned(),
        value: json,
    }
}

/// Returns the JSON bytes of `any` after checking its type URL.
pub fn unpack_json<'a>(any: &'a Any, type_url: &str) -> Result<&'a [u8], ProtoError> {
    if any.type_url != type_url {
        return Err(ProtoError::TypeUrlMismatch {
            expected: type_url.to_owned(),
            found: any.type_url.clone(),
        });
    }
    Ok(&any.value)
}

macro_rules! events {
    ($($variant:ident => $topic:ident),* $(,)?) => {
        /// Every containerd event message, for code that handles events generically
        /// (highd's event bus, the engine's subscriber).
        #[derive(Clone, Debug, PartialEq)]
        pub enum Event {
            $($variant(events::$variant),)*
        }

        impl Event {
            /// Decodes an event envelope's payload by its type URL.
            pub fn from_any(any: &Any) -> Result<Self, ProtoError> {
                $(
                    if type_url_matches(&any.type_url, &type_url::<events::$variant>()) {
                        return unpack::<events::$variant>(any).map(Event::$variant);
                    }
                )*
                Err(ProtoError::UnknownEvent { type_url: any.type_url.clone() })
            }

            pub fn to_any(&self) -> Any {
                match self {
                    $(Event::$variant(m) => pack(m),)*
                }
            }

            /// The topic containerd publishes this event on.
            pub fn topic(&self) -> &'static str {
                match self {
                    $(Event::$variant(_) => topic::$topic,)*
                }
            }
        }

        $(
            impl From<events::$variant> for Event {
                fn from(m: events::$variant) -> Self {
                    Event::$variant(m)
                }
            }
        )*
    };
}

events! {
    TaskCreate => TASK_CREATE,
    TaskStart => TASK_START,
    TaskOom => TASK_OOM,
    TaskExit => TASK_EXIT,
    TaskDelete => TASK_DELETE,
    TaskExecAdded => TASK_EXEC_ADDED,
    TaskExecStarted => TASK_EXEC_STARTED,
    TaskPaused => TASK_PAUSED,
    TaskResumed => TASK_RESUMED,
    TaskCheckpointed => TASK_CHECKPOINTED,
    ContainerCreate => CONTAINER_CREATE,
    ContainerUpdate => CONTAINER_UPDATE,
    ContainerDelete => CONTAINER_DELETE,
    ImageCreate => IMAGE_CREATE,
    ImageUpdate => IMAGE_UPDATE,
    ImageDelete => IMAGE_DELETE,
    NamespaceCreate => NAMESPACE_CREATE,
    NamespaceUpdate => NAMESPACE_UPDATE,
    NamespaceDelete => NAMESPACE_DELETE,
    SnapshotPrepare => SNAPSHOT_PREPARE,
    SnapshotCommit => SNAPSHOT_COMMIT,
    SnapshotRemove => SNAPSHOT_REMOVE,
    ContentDelete => CONTENT_DELETE,
}
