//! TLS between a node and its workers. Every connection between them is TLS 1.3; there is no
//! plaintext fallback. The certificate is derived from the cluster secret: an Ed25519 key whose
//! seed is an HMAC of the secret, in a self-signed certificate with fixed fields, so that every
//! holder of the secret makes the same one and each side pins exactly it. Nobody without the
//! secret can present it, and nothing is distributed besides the secret itself.
//!
//! [`serve`] is the accept loop of a listener that speaks TLS (with the cluster's certificate)
//! and, where allowed, plain HTTP on the same port, told apart by the first byte a client
//! sends: a TLS record starts with 22, an HTTP request with a letter.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::service::TowerToHyperService;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer, ServerName, UnixTime};
use rustls::{ClientConfig, DigitallySignedStruct, ServerConfig, SignatureScheme};

use crate::Secret;

/// The name in the cluster's certificate.
const NAME: &str = "nimbus-cluster";
/// How long a client may take to send its first byte, and a TLS handshake to finish.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 22;

/// The cluster's certificate and key, derived from the secret.
pub struct Identity {
    cert: CertificateDer<'static>,
    key: PrivatePkcs8KeyDer<'static>,
}

impl Identity {
    pub fn derive(secret: &Secret) -> anyhow::Result<Self> {
        let seed = crate::hmac_sha256(&secret.0, b"nimbus cluster tls key v1");
        // PKCS#8 v1 for Ed25519 (RFC 8410): a fixed prefix, then the 32-byte seed.
        let mut pkcs8 = vec![
            0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22,
            0x04, 0x20,
        ];
        pkcs8.extend_from_slice(&seed);
        let key = PrivatePkcs8KeyDer::from(pkcs8);
        let key_pair = rcgen::KeyPair::from_pkcs8_der_and_sign_algo(&key, &rcgen::PKCS_ED25519)?;
        let mut params = rcgen::CertificateParams::new(vec![NAME.to_owned()])?;
        params.serial_number = Some(rcgen::SerialNumber::from(vec![1]));
        params.not_before = rcgen::date_time_ymd(2024, 1, 1);
        params.not_after = rcgen::date_time_ymd(2124, 1, 1);
        let mut name = rcgen::DistinguishedName::new();
        name.push(rcgen::DnType::CommonName, NAME);
        params.distinguished_name = name;
        let cert = params.self_signed(&key_pair)?;
        Ok(Self {
            cert: cert.der().clone(),
            key,
        })
    }

    /// ring's algorithms: X25519 key exchange, AES-GCM and ChaCha20-Poly1305, Ed25519. rustls
    /// marks the provider deprecated because its hybrid post-quantum key exchange is only in
    /// aws-lc-rs, whose build needs more tooling than a fresh machine has; for links inside a
    /// fleet that already share a secret that is a trade taken knowingly.
    #[allow(deprecated)]
    fn provider() -> Arc<rustls::crypto::CryptoProvider> {
        Arc::new(rustls::crypto::ring::default_provider())
    }

    /// What a node or worker serves its cluster API with.
    pub fn server_config(&self) -> anyhow::Result<Arc<ServerConfig>> {
        let mut config = ServerConfig::builder_with_provider(Self::provider())
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .with_no_client_auth()
            .with_single_cert(
                vec![self.cert.clone()],
                PrivateKeyDer::Pkcs8(self.key.clone_key()),
            )?;
        config.alpn_protocols = vec![b"http/1.1".to_vec()];
        Ok(Arc::new(config))
    }

    /// Accepts TLS connections with the cluster's certificate.
    pub fn acceptor(&self) -> anyhow::Result<tokio_rustls::TlsAcceptor> {
        Ok(tokio_rustls::TlsAcceptor::from(self.server_config()?))
    }

    /// What a node or worker calls the other with: it accepts only the cluster's certificate.
    /// (The connector sets ALPN itself.)
    pub fn client_config(&self) -> anyhow::Result<ClientConfig> {
        let provider = Self::provider();
        let pinned = Pinned {
            cert: self.cert.clone(),
            algorithms: provider.signature_verification_algorithms,
        };
        Ok(ClientConfig::builder_with_provider(provider)
            .with_protocol_versions(&[&rustls::version::TLS13])?
            .dangerous()
            .with_custom_certificate_verifier(Arc::new(pinned))
            .with_no_client_auth())
    }
}

/// Accepts exactly one certificate: the cluster's.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if intermediates.is_empty() && end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::InvalidCertificate(
                rustls::CertificateError::ApplicationVerificationFailure,
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// Marks a request that came over TLS with the cluster's certificate.
#[derive(Debug, Clone, Copy)]
pub struct OverTls;

/// Refuses a request that did not come over TLS (a route layer for the cluster's routes).
pub async fn require_tls(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    if request.extensions().get::<OverTls>().is_some() {
        return next.run(request).await;
    }
    use axum::response::IntoResponse;
    (
        axum::http::StatusCode::FORBIDDEN,
        axum::Json(crate::WireError {
            kind: "unauthorized".to_owned(),
            message: "the cluster's routes are served over TLS only".to_owned(),
        }),
    )
        .into_response()
}

/// Which connections a listener takes.
#[derive(Clone)]
pub struct Served {
    /// Served to TLS connections (the cluster's certificate).
    pub tls: Option<(tokio_rustls::TlsAcceptor, Router)>,
    /// Served to plaintext connections; `None` closes them.
    pub plain: Option<Router>,
}

/// Serves `listener` until `shutdown` resolves, then lets open connections finish their
/// requests.
pub async fn serve(
    listener: tokio::net::TcpListener,
    served: Served,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::pin!(shutdown);
    loop {
        let (stream, peer) = tokio::select! {
            _ = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of descriptors or the like: wait a little instead of spinning.
                    tracing::debug!(error = %e, "accept failed");
                    tokio::time::sleep(Duration::from_millis(5)).await;
                    continue;
                }
            },
        };
        let _ = stream.set_nodelay(true);
        let served = served.clone();
        let stop = stop_rx.clone();
        tokio::spawn(connection(stream, peer, served, stop));
    }
    drop(listener);
    drop(stop_rx);
    let _ = stop_tx.send(true);
    // Every connection task holds a receiver; all are gone once the last one finishes.
    stop_tx.closed().await;
    Ok(())
}

async fn connection(
    stream: tokio::net::TcpStream,
    peer: std::net::SocketAddr,
    served: Served,
    stop: tokio::sync::watch::Receiver<bool>,
) {
    // The listener waits for every receiver to be gone: this one lives as long as the
    // connection, whatever the futures below do with theirs.
    let _open = stop.clone();
    // Until a request arrives, a stop ends the connection at once.
    let stopping = stopped(stop.clone());
    let opening = async {
        let mut first = [0u8; 1];
        match tokio::time::timeout(HANDSHAKE_TIMEOUT, stream.peek(&mut first)).await {
            Ok(Ok(1)) => Some(first[0]),
            _ => None,
        }
    };
    let first = tokio::select! {
        first = opening => first,
        _ = stopping => None,
    };
    match first {
        Some(TLS_HANDSHAKE) => {
            let Some((acceptor, router)) = served.tls else {
                return;
            };
            let Ok(Ok(tls)) =
                tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(stream)).await
            else {
                return;
            };
            http(tls, peer, router.layer(axum::Extension(OverTls)), stop).await;
        }
        Some(_) => {
            if let Some(router) = served.plain {
                http(stream, peer, router, stop).await;
            }
        }
        None => {}
    }
}

/// Resolves once the listener stops (or its sender is gone).
async fn stopped(mut stop: tokio::sync::watch::Receiver<bool>) {
    while !*stop.borrow_and_update() {
        if stop.changed().await.is_err() {
            break;
        }
    }
}

/// Serves HTTP on a connection; every request carries the peer's address as axum's
/// `ConnectInfo<SocketAddr>`.
async fn http<S>(
    stream: S,
    peer: std::net::SocketAddr,
    router: Router,
    stop: tokio::sync::watch::Receiver<bool>,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    use tower::ServiceExt;
    let service = TowerToHyperService::new(tower::service_fn(
        move |mut request: axum::http::Request<hyper::body::Incoming>| {
            request
                .extensions_mut()
                .insert(axum::extract::ConnectInfo(peer));
            router.clone().oneshot(request.map(axum::body::Body::new))
        },
    ));
    let builder = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
    let conn = builder.serve_connection_with_upgrades(TokioIo::new(stream), service);
    tokio::pin!(conn);
    tokio::select! {
        _ = conn.as_mut() => {}
        _ = stopped(stop) => {
            conn.as_mut().graceful_shutdown();
            let _ = conn.await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_holder_of_the_secret_derives_the_same_certificate() {
        let a = Secret::from_text("0123456789abcdef-one").unwrap();
        let b = Secret::from_text("0123456789abcdef-two").unwrap();
        let (a1, a2, b1) = (
            Identity::derive(&a).unwrap(),
            Identity::derive(&a).unwrap(),
            Identity::derive(&b).unwrap(),
        );
        assert_eq!(a1.cert.as_ref(), a2.cert.as_ref());
        assert_ne!(a1.cert.as_ref(), b1.cert.as_ref());
        assert!(a1.server_config().is_ok() && a1.client_config().is_ok());
    }
}
