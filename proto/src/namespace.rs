//! The `containerd-namespace` gRPC metadata header that scopes every containerd call.

use tonic::metadata::MetadataValue;
use tonic::{Request, Status};

use crate::ProtoError;

/// gRPC metadata key carrying the namespace, as containerd's `namespaces.GRPCHeader`.
pub const NAMESPACE_HEADER: &str = "containerd-namespace";

/// containerd's identifier limit (identifiers.Validate), applied to namespaces too.
const MAX_IDENTIFIER_LEN: usize = 76;

/// Checks `s` against containerd's identifier rules: 1..=76 bytes of ASCII letters and
/// digits, optionally separated by single `.`, `_` or `-` (not leading or trailing).
/// Used for namespaces here; servers can use it for container and task ids as well.
pub fn validate_identifier(s: &str) -> Result<(), ProtoError> {
    let invalid = |reason| {
        Err(ProtoError::InvalidIdentifier {
            identifier: s.to_owned(),
            reason,
        })
    };
    if s.is_empty() {
        return invalid("identifier must not be empty");
    }
    if s.len() > MAX_IDENTIFIER_LEN {
        return invalid("identifier longer than 76 characters");
    }
    let mut prev_sep = true;
    for c in s.chars() {
        let sep = matches!(c, '.' | '_' | '-');
        if !sep && !c.is_ascii_alphanumeric() {
            return invalid("identifier may only contain [A-Za-z0-9._-]");
        }
        if sep && prev_sep {
            return invalid("separators must sit between letters or digits");
        }
        prev_sep = sep;
    }
    if prev_sep {
        return invalid("identifier must end with a letter or digit");
    }
    Ok(())
}

/// Reads and validates the namespace of an incoming request, answering like containerd:
/// FailedPrecondition "namespace is required" when it is absent or empty,
/// InvalidArgument when it is not a valid identifier.
pub fn namespace_from_request<T>(req: &Request<T>) -> Result<String, Status> {
    let Some(value) = req.metadata().get(NAMESPACE_HEADER) else {
        return Err(Status::failed_precondition("namespace is required"));
    };
    let ns = value.to_str().map_err(|_| {
        Status::invalid_argument("namespace validation: header is not printable ascii")
    })?;
    if ns.is_empty() {
        return Err(Status::failed_precondition("namespace is required"));
    }
    validate_identifier(ns)
        .map_err(|e| Status::invalid_argument(format!("namespace validation: {e}")))?;
    Ok(ns.to_owned())
}

/// Wraps `message` in a request carrying `namespace`.
pub fn with_namespace<T>(message: T, namespace: &str) -> Result<Request<T>, ProtoError> {
    let mut req = Request::new(message);
    req.metadata_mut()
        .insert(NAMESPACE_HEADER, namespace_value(namespace)?);
    Ok(req)
}

fn namespace_value(namespace: &str) -> Result<MetadataValue<tonic::metadata::Ascii>, ProtoError> {
    validate_identifier(namespace)?;
    // Valid identifiers are plain ASCII, so parsing cannot fail; map it anyway.
    namespace
        .parse()
        .map_err(|_| ProtoError::InvalidIdentifier {
            identifier: namespace.to_owned(),
            reason: "not a valid metadata value",
        })
}

/// Client interceptor that stamps every outgoing call with one namespace, e.g.
/// `TasksClient::with_interceptor(channel, NamespaceInterceptor::new("berth")?)`.
#[derive(Clone, Debug)]
pub struct NamespaceInterceptor {
    value: MetadataValue<tonic::metadata::Ascii>,
}

impl NamespaceInterceptor {
    pub fn new(namespace: &str) -> Result<Self, ProtoError> {
        Ok(Self {
            value: namespace_value(namespace)?,
        })
    }
}

impl tonic::service::Interceptor for NamespaceInterceptor {
    fn call(&mut self, mut req: Request<()>) -> Result<Request<()>, Status> {
        // Leave an explicit per-request namespace alone.
        if !req.metadata().contains_key(NAMESPACE_HEADER) {
            req.metadata_mut()
                .insert(NAMESPACE_HEADER, self.value.clone());
        }
        Ok(req)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn identifiers_follow_containerd_rules() {
        for ok in ["default", "k8s.io", "moby", "a", "a-b_c.d", "A1"] {
            assert!(validate_identifier(ok).is_ok(), "{ok} should be valid");
        }
        let long = "a".repeat(77);
        for bad in ["", "-a", "a-", "a..b", "a/b", "ä", " a", long.as_str()] {
            assert!(
                validate_identifier(bad).is_err(),
                "{bad:?} should be invalid"
            );
        }
    }

    #[test]
    fn missing_namespace_is_failed_precondition() {
        let status = namespace_from_request(&Request::new(())).unwrap_err();
        assert_eq!(status.code(), tonic::Code::FailedPrecondition);
        assert_eq!(status.message(), "namespace is required");
    }

    #[test]
    fn invalid_namespace_is_invalid_argument() {
        let mut req = Request::new(());
        req.metadata_mut()
            .insert(NAMESPACE_HEADER, "bad..ns".parse().unwrap());
        let status = namespace_from_request(&req).unwrap_err();
        assert_eq!(status.code(), tonic::Code::InvalidArgument);
    }

    #[test]
    fn namespace_round_trips_through_request() {
        let req = with_namespace((), "berth").unwrap();
        assert_eq!(namespace_from_request(&req).unwrap(), "berth");
        assert!(with_namespace((), "no spaces").is_err());
    }

    #[test]
    fn interceptor_sets_but_does_not_override() {
        use tonic::service::Interceptor;
        let mut icp = NamespaceInterceptor::new("berth").unwrap();
        let req = icp.call(Request::new(())).unwrap();
        assert_eq!(namespace_from_request(&req).unwrap(), "berth");
        let req = icp.call(with_namespace((), "other").unwrap()).unwrap();
        assert_eq!(namespace_from_request(&req).unwrap(), "other");
    }
}
