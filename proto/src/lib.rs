//! Berth's protobuf definitions and the small amount of glue every gRPC user needs.
//!
//! The `.proto` files under `protos/` are written by hand to containerd 1.6/1.7's wire
//! format (same packages, names and field numbers), so the generated modules below nest
//! exactly like the protobuf packages and prost's relative `super::` paths resolve.
//!
//! - [`containerd`], [`io`], [`google`]: generated messages, tonic clients and servers.
//! - [`transport`]: unix-socket listen/connect/serve, including paths over 107 bytes.
//! - [`namespace`]: the `containerd-namespace` metadata header.
//! - [`any`]: packing events and OCI JSON documents into `prost_types::Any`.

#![forbid(unsafe_code)]

pub mod any;
mod error;
pub mod namespace;
pub mod transport;

pub use error::ProtoError;
pub use namespace::{
    namespace_from_request, with_namespace, NamespaceInterceptor, NAMESPACE_HEADER,
};

/// Generated code is not ours to lint.
macro_rules! generated {
    ($file:literal) => {
        include!(concat!(env!("OUT_DIR"), "/", $file));
    };
}

pub mod containerd {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod types {
        generated!("containerd.types.rs");
    }

    pub mod v1 {
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod types {
            generated!("containerd.v1.types.rs");
        }
    }

    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod events {
        generated!("containerd.events.rs");

        /// containerd declares the image events in `containerd.services.images.v1`;
        /// re-exported here so all event messages are found in one place.
        pub use super::services::images::v1::{ImageCreate, ImageDelete, ImageUpdate};
    }

    pub mod runc {
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v1 {
            generated!("containerd.runc.v1.rs");
        }
    }

    pub mod task {
        #[allow(clippy::all, clippy::pedantic, missing_docs)]
        pub mod v2 {
            generated!("containerd.task.v2.rs");
        }
    }

    pub mod services {
        pub mod containers {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.containers.v1.rs");
            }
        }
        pub mod content {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.content.v1.rs");
            }
        }
        pub mod diff {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.diff.v1.rs");
            }
        }
        pub mod events {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.events.v1.rs");
            }
        }
        pub mod images {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.images.v1.rs");
            }
        }
        pub mod introspection {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.introspection.v1.rs");
            }
        }
        pub mod leases {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.leases.v1.rs");
            }
        }
        pub mod namespaces {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.namespaces.v1.rs");
            }
        }
        pub mod snapshots {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.snapshots.v1.rs");
            }
        }
        pub mod tasks {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.tasks.v1.rs");
            }
        }
        pub mod version {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("containerd.services.version.v1.rs");
            }
        }
    }
}

/// cgroup statistics carried in `Any` by Stats/Metrics (containerd/cgroups' packages).
pub mod io {
    pub mod containerd {
        pub mod cgroups {
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v1 {
                generated!("io.containerd.cgroups.v1.rs");
            }
            #[allow(clippy::all, clippy::pedantic, missing_docs)]
            pub mod v2 {
                generated!("io.containerd.cgroups.v2.rs");
            }
        }
    }
}

pub mod google {
    #[allow(clippy::all, clippy::pedantic, missing_docs)]
    pub mod rpc {
        generated!("google.rpc.rs");
    }
}
