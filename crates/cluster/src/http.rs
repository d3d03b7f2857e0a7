//! The HTTP client both sides use: pooled keep-alive connections over TLS with the cluster's
//! pinned certificate ([`crate::tls`]), every request signed.

use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper::{Method, Request, StatusCode};
use hyper_util::client::legacy::Client as HyperClient;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;

use crate::{AUTH_HEADER, Secret};

#[derive(Clone)]
pub(crate) struct Client {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    secret: Secret,
}

pub(crate) struct Reply {
    pub status: StatusCode,
    pub body: Bytes,
}

/// Why a request got no answer.
#[derive(Debug)]
pub(crate) enum Failure {
    /// No connection, or it broke: the other side is down or cut off.
    Unreachable(String),
    /// The other side's TLS certificate is not the cluster's: it holds another secret.
    WrongPeer,
    TimedOut,
    /// The answer was larger than the caller allows.
    TooLarge,
}

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Unreachable(e) => write!(f, "unreachable: {e}"),
            Self::WrongPeer => f.write_str(
                "wrong cluster secret: the other side's TLS certificate is not the one this \
                 side's secret makes",
            ),
            Self::TimedOut => f.write_str("no answer in time"),
            Self::TooLarge => f.write_str("the answer is too large"),
        }
    }
}

/// Whether a failed request failed because the server's certificate was not the pinned one.
fn wrong_certificate(e: &(dyn std::error::Error + 'static)) -> bool {
    let is_it = |r: &rustls::Error| matches!(r, rustls::Error::InvalidCertificate(_));
    let mut current = Some(e);
    while let Some(error) = current {
        if let Some(r) = error.downcast_ref::<rustls::Error>() {
            return is_it(r);
        }
        // An I/O error's `source` skips the error it wraps; step into that one itself.
        current = match error
            .downcast_ref::<std::io::Error>()
            .and_then(|io| io.get_ref())
        {
            Some(inner) => Some(inner as &(dyn std::error::Error + 'static)),
            None => error.source(),
        };
    }
    false
}

/// `host:port` of a base URL, without its scheme.
fn authority(base: &str) -> &str {
    base.strip_prefix("https://")
        .or_else(|| base.strip_prefix("http://"))
        .unwrap_or(base)
        .trim_end_matches('/')
}

impl Client {
    pub fn new(secret: Secret) -> anyhow::Result<Self> {
        let inner = HyperClient::builder(TokioExecutor::new())
            .pool_idle_timeout(Duration::from_secs(30))
            .build(connector(&secret)?);
        Ok(Self { inner, secret })
    }

    /// Sends a signed request to `base` + `path` and reads at most `limit` bytes of the answer.
    #[allow(clippy::too_many_arguments)]
    pub async fn send(
        &self,
        method: Method,
        base: &str,
        path: &str,
        headers: &[(&str, String)],
        body: Bytes,
        limit: usize,
        timeout: Option<Duration>,
    ) -> Result<Reply, Failure> {
        let mut builder = Request::builder()
            .method(method.clone())
            // Whatever scheme `base` names, the request goes over TLS.
            .uri(format!("https://{}{path}", authority(base)))
            .header(AUTH_HEADER, self.secret.sign(method.as_str(), path));
        for (k, v) in headers {
            builder = builder.header(*k, v);
        }
        let request = builder
            .body(Full::new(body))
            .map_err(|e| Failure::Unreachable(e.to_string()))?;
        let exchange = async {
            let response = self.inner.request(request).await.map_err(|e| {
                if wrong_certificate(&e) {
                    Failure::WrongPeer
                } else {
                    Failure::Unreachable(nimbus_types::error_chain(&e))
                }
            })?;
            let (parts, body) = response.into_parts();
            let body = Limited::new(body, limit)
                .collect()
                .await
                .map_err(|e| {
                    if e.is::<http_body_util::LengthLimitError>() {
                        Failure::TooLarge
                    } else {
                        Failure::Unreachable(e.to_string())
                    }
                })?
                .to_bytes();
            Ok(Reply {
                status: parts.status,
                body,
            })
        };
        match timeout {
            Some(t) => tokio::time::timeout(t, exchange)
                .await
                .map_err(|_| Failure::TimedOut)?,
            None => exchange.await,
        }
    }
}

/// The header that marks a request forwarded from a worker's sandbox.
pub const FROM_SANDBOX_HEADER: &str = "x-nimbus-from-sandbox";

/// Forwards sandboxes' requests to the node over TLS, as they are (their own signature, their
/// own `Host`), without the cluster's credentials.
pub(crate) struct Proxy {
    inner: HyperClient<hyper_rustls::HttpsConnector<HttpConnector>, axum::body::Body>,
}

impl Proxy {
    pub fn new(secret: &Secret) -> anyhow::Result<Self> {
        Ok(Self {
            inner: HyperClient::builder(TokioExecutor::new())
                .pool_idle_timeout(Duration::from_secs(30))
                .build(connector(secret)?),
        })
    }

    pub async fn forward(
        &self,
        base: &str,
        request: axum::extract::Request,
    ) -> Result<axum::response::Response, String> {
        let (mut parts, body) = request.into_parts();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", |p| p.as_str())
            .to_owned();
        parts.uri = format!("https://{}{path}", authority(base))
            .parse()
            .map_err(|e: hyper::http::uri::InvalidUri| e.to_string())?;
        parts.headers.remove(AUTH_HEADER);
        parts.headers.insert(
            FROM_SANDBOX_HEADER,
            hyper::header::HeaderValue::from_static("1"),
        );
        let response = self
            .inner
            .request(hyper::Request::from_parts(parts, body))
            .await
            .map_err(|e| nimbus_types::error_chain(&e))?;
        Ok(response.map(axum::body::Body::new))
    }
}

/// A TLS-only connector that accepts only the cluster's certificate.
fn connector(secret: &Secret) -> anyhow::Result<hyper_rustls::HttpsConnector<HttpConnector>> {
    let tls = crate::tls::Identity::derive(secret)?.client_config()?;
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(Duration::from_secs(3)));
    connector.enforce_http(false);
    Ok(hyper_rustls::HttpsConnectorBuilder::new()
        .with_tls_config(tls)
        .https_only()
        .enable_http1()
        .wrap_connector(connector))
}
