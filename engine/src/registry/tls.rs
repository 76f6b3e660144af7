//! How the engine reaches a registry, as dockerd decides it (registry/service_v2.go):
//! HTTPS first, verified against the system roots plus the registry's own CAs from the
//! certs dir (`<certs-dir>/<host:port>/*.crt`, client certificate `*.cert` + `*.key`);
//! an insecure registry (`--insecure-registry`, or a loopback one) gets HTTPS without
//! verification and then plain HTTP.

use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::{verify_tls12_signature, verify_tls13_signature, CryptoProvider};
use rustls::{ClientConfig, DigitallySignedStruct, RootCertStore, SignatureScheme};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};

use super::RegistryError;

/// dockerd's default for `--certs-dir`'s equivalent (its `certs.d` under /etc/docker).
pub const DEFAULT_CERTS_DIR: &str = "/etc/docker/certs.d";

struct Settings {
    insecure: Vec<String>,
    certs_dir: PathBuf,
}

/// Set once at start-up by the engine's flags.
static SETTINGS: OnceLock<Settings> = OnceLock::new();

/// Records `--insecure-registry` hosts (`HOST[:PORT]`; an `http://` or `https://`
/// prefix is dropped) and `--certs-dir`; later calls are ignored.
pub fn configure(hosts: Vec<String>, certs_dir: PathBuf) -> Result<(), RegistryError> {
    let mut insecure = Vec::new();
    for h in hosts {
        let bare = h
            .strip_prefix("http://")
            .or_else(|| h.strip_prefix("https://"))
            .unwrap_or(&h)
            .trim_end_matches('/');
        if bare.is_empty() || bare.contains('/') || bare.contains("://") {
            return Err(RegistryError::InsecureRegistry { value: h });
        }
        insecure.push(bare.to_string());
    }
    let _ = SETTINGS.set(Settings {
        insecure,
        certs_dir,
    });
    Ok(())
}

fn settings() -> &'static Settings {
    SETTINGS.get_or_init(|| Settings {
        insecure: Vec::new(),
        certs_dir: PathBuf::from(DEFAULT_CERTS_DIR),
    })
}

/// Insecure registries: the ones named with `--insecure-registry`, and loopback ones
/// (dockerd's default insecure CIDR is 127.0.0.0/8).
pub fn is_insecure(host: &str, insecure: &[String]) -> bool {
    if insecure.iter().any(|h| h == host) {
        return true;
    }
    let name = hostname(host);
    name == "localhost"
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// `host:port` → `host` (`[::1]:5000` → `::1`).
pub fn hostname(host: &str) -> &str {
    let name = match host.rsplit_once(':') {
        Some((n, port)) if port.bytes().all(|b| b.is_ascii_digit()) && !n.ends_with(':') => n,
        _ => host,
    };
    name.trim_start_matches('[').trim_end_matches(']')
}

/// One way to reach a registry.
#[derive(Clone)]
pub enum Endpoint {
    Https(Arc<ClientConfig>),
    Http,
}

impl Endpoint {
    pub fn scheme(&self) -> &'static str {
        match self {
            Endpoint::Https(_) => "https",
            Endpoint::Http => "http",
        }
    }
}

/// The endpoints to try for `host`, in order.
pub fn endpoints(host: &str) -> Result<Vec<Endpoint>, RegistryError> {
    let s = settings();
    let insecure = is_insecure(host, &s.insecure);
    let https = Endpoint::Https(Arc::new(client_config(host, insecure, &s.certs_dir)?));
    Ok(if insecure {
        vec![https, Endpoint::Http]
    } else {
        vec![https]
    })
}

/// The TLS client for plain web downloads (`ADD https://...`, URL build contexts,
/// `docker import <url>`): the system roots only, as Go's default client has them
/// (rustls-native-certs, like Go, reads `SSL_CERT_FILE` / `SSL_CERT_DIR` instead when
/// set); the certs dir is for registries.
pub fn web_client_config() -> Result<Arc<ClientConfig>, RegistryError> {
    static CONFIG: OnceLock<Arc<ClientConfig>> = OnceLock::new();
    if let Some(c) = CONFIG.get() {
        return Ok(c.clone());
    }
    let config = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| RegistryError::Connect {
            host: String::new(),
            message: e.to_string(),
        })?
        .with_root_certificates(system_roots().clone())
        .with_no_client_auth();
    Ok(CONFIG.get_or_init(|| Arc::new(config)).clone())
}

/// The name the server's certificate must carry.
pub fn server_name(host: &str) -> Result<ServerName<'static>, RegistryError> {
    ServerName::try_from(hostname(host).to_string()).map_err(|e| RegistryError::Connect {
        host: host.into(),
        message: format!("invalid TLS server name: {e}"),
    })
}

fn provider() -> Arc<CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// The system roots, read once (a few hundred certificates to parse).
fn system_roots() -> &'static RootCertStore {
    static ROOTS: OnceLock<RootCertStore> = OnceLock::new();
    ROOTS.get_or_init(|| {
        let found = rustls_native_certs::load_native_certs();
        for e in &found.errors {
            tracing::warn!(error = %e, "cannot read a system root certificate");
        }
        let mut roots = RootCertStore::empty();
        let (_, bad) = roots.add_parsable_certificates(found.certs);
        if bad > 0 {
            tracing::debug!(bad, "system root certificates that could not be parsed");
        }
        roots
    })
}

fn cert_error(path: &Path, message: impl std::fmt::Display) -> RegistryError {
    RegistryError::Certs {
        path: path.to_path_buf(),
        message: message.to_string(),
    }
}

/// A registry's files in the certs dir: CAs (`*.crt`) and a client pair (`*.cert` with
/// the `*.key` of the same stem), as dockerd's ReadCertsDirectory reads them.
#[derive(Debug, Default)]
struct HostCerts {
    cas: Vec<CertificateDer<'static>>,
    client: Option<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>)>,
}

fn read_host_certs(dir: &Path) -> Result<HostCerts, RegistryError> {
    let mut out = HostCerts::default();
    let entries = match std::fs::read_dir(dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(out),
        Err(e) => return Err(cert_error(dir, e)),
    };
    let mut names: Vec<PathBuf> = entries.filter_map(|e| e.ok().map(|e| e.path())).collect();
    names.sort();
    for path in &names {
        let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
        match ext {
            "crt" => {
                let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| cert_error(path, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| cert_error(path, e))?;
                if certs.is_empty() {
                    return Err(cert_error(path, "no PEM certificate in it"));
                }
                out.cas.extend(certs);
            }
            "cert" => {
                let key = path.with_extension("key");
                if !key.is_file() {
                    return Err(cert_error(
                        path,
                        format!("missing key {} for client certificate", key.display()),
                    ));
                }
                let certs: Vec<_> = CertificateDer::pem_file_iter(path)
                    .map_err(|e| cert_error(path, e))?
                    .collect::<Result<_, _>>()
                    .map_err(|e| cert_error(path, e))?;
                let key_der =
                    PrivateKeyDer::from_pem_file(&key).map_err(|e| cert_error(&key, e))?;
                out.client = Some((certs, key_der));
            }
            "key" if !path.with_extension("cert").is_file() => {
                return Err(cert_error(
                    path,
                    format!(
                        "missing client certificate {} for key",
                        path.with_extension("cert").display()
                    ),
                ));
            }
            _ => {}
        }
    }
    Ok(out)
}

fn client_config(
    host: &str,
    insecure: bool,
    certs_dir: &Path,
) -> Result<ClientConfig, RegistryError> {
    let provider = provider();
    let builder = ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| cert_error(certs_dir, e))?;
    // Like dockerd, the certs dir is read for secure registries only.
    let files = if insecure {
        HostCerts::default()
    } else {
        read_host_certs(&certs_dir.join(host))?
    };
    let builder = if insecure {
        builder
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(NoVerify(provider)))
    } else {
        let mut roots = system_roots().clone();
        for ca in files.cas {
            roots
                .add(ca)
                .map_err(|e| cert_error(&certs_dir.join(host), e))?;
        }
        builder.with_root_certificates(roots)
    };
    match files.client {
        Some((certs, key)) => builder
            .with_client_auth_cert(certs, key)
            .map_err(|e| cert_error(&certs_dir.join(host), e)),
        None => Ok(builder.with_no_client_auth()),
    }
}

/// Accepts any server certificate (insecure registries), still checking that the
/// handshake signatures are made by the certificate's key.
#[derive(Debug)]
struct NoVerify(Arc<CryptoProvider>);

impl ServerCertVerifier for NoVerify {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls12_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        verify_tls13_signature(
            message,
            cert,
            dss,
            &self.0.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.signature_verification_algorithms.supported_schemes()
    }
}

/// A TLS handshake failure in Go's words, which docker users search for:
/// `tls: failed to verify certificate: x509: certificate signed by unknown authority`.
pub fn describe_tls_error(e: &std::io::Error, host: &str) -> String {
    use rustls::CertificateError as C;
    let Some(tls) = e.get_ref().and_then(|i| i.downcast_ref::<rustls::Error>()) else {
        return e.to_string();
    };
    let x509 = match tls {
        rustls::Error::InvalidCertificate(c) => match c {
            C::UnknownIssuer => "certificate signed by unknown authority".to_string(),
            C::NotValidForName | C::NotValidForNameContext { .. } => {
                format!("certificate is not valid for {}", hostname(host))
            }
            C::Expired
            | C::ExpiredContext { .. }
            | C::NotValidYet
            | C::NotValidYetContext { .. } => {
                "certificate has expired or is not yet valid".to_string()
            }
            other => format!("{other:?}"),
        },
        other => return format!("tls: {other}"),
    };
    format!("tls: failed to verify certificate: x509: {x509}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_and_listed_registries_are_insecure() {
        assert!(is_insecure("127.0.0.1:5000", &[]));
        assert!(is_insecure("127.3.0.1:5000", &[]));
        assert!(is_insecure("localhost:5000", &[]));
        assert!(is_insecure("[::1]:5000", &[]));
        assert!(!is_insecure("registry.example:5000", &[]));
        assert!(is_insecure(
            "registry.example:5000",
            &["registry.example:5000".into()]
        ));
        assert!(!is_insecure("docker.io", &[]));
        assert_eq!(hostname("[::1]:5000"), "::1");
        assert_eq!(hostname("10.1.2.3:443"), "10.1.2.3");
        assert_eq!(hostname("example.com"), "example.com");
    }

    #[test]
    fn certs_dir_files_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        assert!(read_host_certs(&dir.path().join("none"))
            .unwrap()
            .cas
            .is_empty());
        std::fs::write(dir.path().join("ca.crt"), "not pem").unwrap();
        let err = read_host_certs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("ca.crt"), "{err}");
        std::fs::remove_file(dir.path().join("ca.crt")).unwrap();
        std::fs::write(dir.path().join("client.key"), "x").unwrap();
        let err = read_host_certs(dir.path()).unwrap_err().to_string();
        assert!(err.contains("missing client certificate"), "{err}");
    }
}
