//! Components that export `wasi:http/incoming-handler` (the `wasi:http/proxy` world, as built
//! for `wasmtime serve` and Spin): a fresh instance per request, the request handed over as
//! `wasi:http` resources and the response collected whole.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use http_body_util::{BodyExt, Full};
use wasmtime::Store;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::{WasiBody, WasiHttpCtx, WasiHttpCtxView, WasiHttpHooks, WasiHttpView};

use crate::limits::MemoryLimiter;
use crate::{
    DeadlineExceeded, Error, MAX_WASM32_MEMORY, Result, RunStatus, WasmRuntime, trap_message,
};

pub(crate) struct HttpState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: Outgoing,
    limiter: MemoryLimiter,
}

impl WasiView for HttpState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HttpState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.hooks,
        }
    }
}

/// A component linked against WASI and `wasi:http`: the warm state of its sandboxes.
#[derive(Clone)]
pub struct HttpTemplate {
    pre: ProxyPre<HttpState>,
}

/// Where a component's outgoing requests (`wasi:http/outgoing-handler`) may go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// Nowhere: every request fails with `HTTP-request-denied`.
    Denied,
    /// To public addresses on the internet; private, loopback, link-local and other special
    /// ranges are refused, whatever name resolves to them.
    Public,
}

/// One request for a component.
pub struct HttpInput {
    /// The request, its URI absolute (scheme and authority).
    pub request: http::Request<Bytes>,
    pub env: Vec<(String, String)>,
    pub memory_limit_bytes: u64,
    pub timeout: Duration,
    /// A response body past this many bytes fails the run with [`RunStatus::OutputTooLarge`].
    pub body_limit: usize,
    /// What the component writes to stdout and stderr past this many bytes is cut.
    pub log_limit: usize,
    pub egress: Egress,
}

/// What a component answered and what it cost.
#[derive(Debug)]
pub struct HttpOutput {
    /// `Exited(0)` when the component answered; the response is then set.
    pub status: RunStatus,
    pub response: Option<http::Response<Bytes>>,
    pub log: Bytes,
    pub peak_memory_bytes: u64,
}

impl WasmRuntime {
    /// Compiles a `wasi:http` component (or loads its cached artifact) and links it. CPU-bound:
    /// call it off the async executor.
    pub fn prepare_http(&self, path: &std::path::Path) -> Result<HttpTemplate> {
        let bytes = std::fs::read(path).map_err(|source| Error::Io {
            path: path.to_owned(),
            source,
        })?;
        if !wasmparser_is_component(&bytes) {
            return Err(Error::InvalidModule(
                "the file is not a WebAssembly component: a wasi-http function's handler must \
                 name a component exporting wasi:http/incoming-handler (built for \
                 wasm32-wasip2, as for `wasmtime serve`)"
                    .into(),
            ));
        }
        let component = self.compiled(&self.components, &bytes)?;
        let pre = self.http_linker.instantiate_pre(&component).map_err(|e| {
            Error::InvalidModule(format!(
                "the component imports something nimbus does not provide: {e:#}"
            ))
        })?;
        let pre = ProxyPre::new(pre).map_err(|e| {
            Error::InvalidModule(format!(
                "the component does not export wasi:http/incoming-handler: {e:#}"
            ))
        })?;
        Ok(HttpTemplate { pre })
    }

    /// Serves one request in a fresh instance of the component.
    pub async fn run_http(&self, template: &HttpTemplate, input: HttpInput) -> HttpOutput {
        let log = MemoryOutputPipe::new(input.log_limit);
        let mut wasi = WasiCtxBuilder::new();
        // No sockets at all (not even unconnected ones, which would still hold host
        // descriptors): outgoing requests go through `wasi:http` and its hook.
        wasi.stdout(log.clone())
            .stderr(log.clone())
            .envs(&input.env)
            .arg("function")
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false);
        let memory_limit = input.memory_limit_bytes.min(MAX_WASM32_MEMORY);
        let mut store = Store::new(
            &self.engine,
            HttpState {
                wasi: wasi.build(),
                http: WasiHttpCtx::new(),
                table: ResourceTable::new(),
                hooks: Outgoing(input.egress),
                limiter: MemoryLimiter::new(memory_limit),
            },
        );
        store.limiter(|s| &mut s.limiter);
        let deadline = crate::arm_deadline(&mut store, input.timeout);

        let scheme = match input.request.uri().scheme_str() {
            Some("https") => Scheme::Https,
            _ => Scheme::Http,
        };
        let request = input.request.map(|body| {
            Full::new(body).map_err(
                |never: std::convert::Infallible| -> wasmtime_wasi_http::Error { match never {} },
            )
        });
        let (sender, receiver) = tokio::sync::oneshot::channel();
        let prepared = (|| {
            let mut http = store.data_mut().http();
            let request = http.new_incoming_request(scheme, request)?;
            let out = http.new_response_outparam(sender)?;
            wasmtime::Result::<_>::Ok((request, out))
        })();
        let (request, out) = match prepared {
            Ok(handles) => handles,
            Err(e) => {
                return HttpOutput {
                    status: RunStatus::Trapped(format!(
                        "the request could not be handed over: {e:#}"
                    )),
                    response: None,
                    log: Bytes::new(),
                    peak_memory_bytes: 0,
                };
            }
        };

        // The guest writes the body after handing over the response, so the body is read while
        // the call runs. The store (and with it every stream the guest holds) is dropped as
        // soon as the call ends, which ends whatever the guest left open.
        let pre = template.pre.clone();
        let call = async move {
            let result = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy
                    .wasi_http_incoming_handler()
                    .call_handle(&mut store, request, out)
                    .await
            }
            .await;
            let limiter = &store.data().limiter;
            let measured = (limiter.peak_bytes(), limiter.exceeded());
            drop(store);
            (result, measured)
        };
        let body_limit = input.body_limit;
        let collect = async move {
            let response = match receiver.await {
                Ok(Ok(response)) => response,
                Ok(Err(code)) => return Collected::Refused(format!("{code:?}")),
                Err(_) => return Collected::NoResponse,
            };
            let (parts, mut body) = response.into_parts();
            let mut bytes = BytesMut::new();
            while let Some(frame) = body.frame().await {
                match frame {
                    Ok(frame) => {
                        if let Ok(data) = frame.into_data() {
                            if bytes.len() + data.len() > body_limit {
                                return Collected::TooLarge;
                            }
                            bytes.extend_from_slice(&data);
                        }
                    }
                    Err(e) => return Collected::BodyFailed(format!("{e:?}")),
                }
            }
            Collected::Response(http::Response::from_parts(parts, bytes.freeze()))
        };
        let both = async { tokio::join!(call, collect) };
        // Epoch interruption stops a guest that computes; this stops one that waits.
        let Ok(((result, (peak_memory_bytes, out_of_memory)), collected)) =
            tokio::time::timeout_at(deadline.into(), both).await
        else {
            return HttpOutput {
                status: RunStatus::TimedOut,
                response: None,
                log: log.contents(),
                peak_memory_bytes: 0,
            };
        };
        let failed = match result {
            Ok(()) => None,
            Err(e) if e.downcast_ref::<DeadlineExceeded>().is_some() => Some(RunStatus::TimedOut),
            Err(_) if out_of_memory => Some(RunStatus::OutOfMemory),
            Err(e) => Some(RunStatus::Trapped(trap_message(&e))),
        };
        let (status, response) = match (failed, collected) {
            (_, Collected::TooLarge) => (RunStatus::OutputTooLarge, None),
            (Some(status), _) => (status, None),
            (None, Collected::Response(response)) => (RunStatus::Exited(0), Some(response)),
            (None, Collected::NoResponse) => (
                RunStatus::Trapped("the component returned without setting a response".into()),
                None,
            ),
            (None, Collected::Refused(code)) => (
                RunStatus::Trapped(format!("the component answered with an error: {code}")),
                None,
            ),
            (None, Collected::BodyFailed(why)) => (
                RunStatus::Trapped(format!("the component's response body failed: {why}")),
                None,
            ),
        };
        HttpOutput {
            status,
            response,
            log: log.contents(),
            peak_memory_bytes,
        }
    }
}

enum Collected {
    Response(http::Response<Bytes>),
    NoResponse,
    Refused(String),
    TooLarge,
    BodyFailed(String),
}

/// A component is told apart from a core module by the version field of its preamble.
fn wasmparser_is_component(bytes: &[u8]) -> bool {
    bytes.len() >= 8 && bytes[..4] == *b"\0asm" && bytes[4..8] == [0x0d, 0x00, 0x01, 0x00]
}

/// Links WASI preview 2 and `wasi:http` for components.
pub(crate) fn linker(engine: &wasmtime::Engine) -> Result<Linker<HttpState>> {
    let mut linker = Linker::new(engine);
    wasmtime_wasi::p2::add_to_linker_async(&mut linker)
        .map_err(|e| Error::Engine(format!("{e:#}")))?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker)
        .map_err(|e| Error::Engine(format!("{e:#}")))?;
    Ok(linker)
}

/// The hooks that decide where outgoing requests go.
struct Outgoing(Egress);

type Sent = Box<
    dyn std::future::Future<
            Output = wasmtime_wasi_http::Result<(
                http::Response<WasiBody>,
                Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
            )>,
        > + Send,
>;

impl WasiHttpHooks for Outgoing {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        options: Option<wasmtime_wasi_http::RequestOptions>,
        _body_sent: Box<dyn std::future::Future<Output = wasmtime_wasi_http::Result<()>> + Send>,
    ) -> Sent {
        let egress = self.0;
        Box::new(async move {
            if egress == Egress::Denied {
                return Err(wasmtime_wasi_http::Error::HttpRequestDenied);
            }
            let response = send_public(request, options).await?;
            let done: Box<dyn std::future::Future<Output = _> + Send> = Box::new(async { Ok(()) });
            Ok((response, done))
        })
    }
}

/// Sends a request to a public address: the name is resolved here, every address it resolves
/// to is checked, and the connection goes to a checked address, so a name cannot be rebound
/// to a private one between the check and the connection.
async fn send_public(
    mut request: http::Request<WasiBody>,
    options: Option<wasmtime_wasi_http::RequestOptions>,
) -> wasmtime_wasi_http::Result<http::Response<WasiBody>> {
    use wasmtime_wasi_http::Error as E;
    let connect_timeout = options
        .and_then(|o| o.connect_timeout)
        .unwrap_or(Duration::from_secs(30));
    let uri = request.uri().clone();
    let tls = uri.scheme() == Some(&http::uri::Scheme::HTTPS);
    let host = uri
        .host()
        .ok_or(E::HttpRequestUriInvalid)?
        .trim_start_matches('[')
        .trim_end_matches(']')
        .to_owned();
    let port = uri.port_u16().unwrap_or(if tls { 443 } else { 80 });
    let addresses: Vec<SocketAddr> = tokio::time::timeout(
        connect_timeout,
        tokio::net::lookup_host((host.as_str(), port)),
    )
    .await
    .map_err(|_| E::DnsTimeout)?
    .map_err(|_| E::DestinationNotFound)?
    .collect();
    if addresses.is_empty() {
        return Err(E::DestinationNotFound);
    }
    // The host's own addresses are refused too, whatever their range: binding to an address
    // succeeds only if it is one of the host's.
    let refused = |a: &SocketAddr| {
        !nimbus_types::net::is_public(a.ip())
            || std::net::UdpSocket::bind(SocketAddr::new(a.ip(), 0)).is_ok()
    };
    if addresses.iter().any(refused) {
        return Err(E::DestinationIpProhibited);
    }
    let stream = tokio::time::timeout(
        connect_timeout,
        tokio::net::TcpStream::connect(&addresses[..]),
    )
    .await
    .map_err(|_| E::ConnectionTimeout)?
    .map_err(|_| E::ConnectionRefused)?;
    *request.uri_mut() = http::Uri::builder()
        .path_and_query(uri.path_and_query().map_or("/", |p| p.as_str()))
        .build()
        .map_err(|_| E::HttpRequestUriInvalid)?;
    let response = if tls {
        let name =
            rustls::pki_types::ServerName::try_from(host).map_err(|_| E::HttpRequestUriInvalid)?;
        let stream = tls_connector()
            .ok_or(E::TlsProtocolError)?
            .connect(name, stream)
            .await
            .map_err(|_| E::TlsProtocolError)?;
        exchange(stream, request).await?
    } else {
        exchange(stream, request).await?
    };
    Ok(response)
}

async fn exchange<S>(
    stream: S,
    request: http::Request<WasiBody>,
) -> wasmtime_wasi_http::Result<http::Response<WasiBody>>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Send + Unpin + 'static,
{
    let (mut sender, connection) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .map_err(wasmtime_wasi_http::Error::from)?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let response = sender
        .send_request(request)
        .await
        .map_err(wasmtime_wasi_http::Error::from)?;
    Ok(response.map(|body| body.map_err(wasmtime_wasi_http::Error::from).boxed_unsync()))
}

/// A TLS client that trusts the Web PKI's roots (Mozilla's list), built once.
fn tls_connector() -> Option<tokio_rustls::TlsConnector> {
    static CONFIG: std::sync::OnceLock<Option<Arc<rustls::ClientConfig>>> =
        std::sync::OnceLock::new();
    let config = CONFIG.get_or_init(|| {
        let roots = rustls::RootCertStore {
            roots: webpki_roots::TLS_SERVER_ROOTS.into(),
        };
        // ring's provider, as for the fleet's links: rustls deprecates it only because the
        // post-quantum hybrid key exchange needs aws-lc-rs, whose build needs more tooling.
        #[allow(deprecated)]
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .ok()?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Some(Arc::new(config))
    });
    config.clone().map(tokio_rustls::TlsConnector::from)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn components_are_told_from_modules() {
        assert!(wasmparser_is_component(b"\0asm\x0d\x00\x01\x00rest"));
        assert!(!wasmparser_is_component(b"\0asm\x01\x00\x00\x00rest"));
        assert!(!wasmparser_is_component(b"\0as"));
    }
}
