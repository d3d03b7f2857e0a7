//! The web console the node serves at `/console`: server-rendered HTML over the node's own
//! APIs. Every page reads, and every form acts, through the API a client would call (Lambda,
//! nimbus's API, SQS, DynamoDB, Cognito, S3, CloudFormation), dispatched in-process with the
//! signed-in caller, so the console can show and do exactly what that caller's keys could.
//!
//! Signing in takes an access key id and its secret; the session lives in an HTTP-only,
//! `SameSite=Strict` cookie, every form carries the session's token, and a request whose
//! `Origin` or `Sec-Fetch-Site` says it came from another site changes nothing. When the node
//! runs without authentication (development mode), the console opens a session as the default
//! account's root without asking. Pages are plain HTML with one small script of the node's own
//! (live log tail, JSON checks); charts are SVG drawn on the server. Nothing is fetched from
//! elsewhere, so the console works offline.

#![forbid(unsafe_code)]
// A refusal is the answer to send as it is (a redirect to sign in, an error page).
#![allow(clippy::result_large_err)]

mod call;
mod html;
mod pages;
mod session;
mod xml;

use std::sync::{Arc, OnceLock, Weak};

use axum::Router;
use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use nimbus_aws_wire::dispatch::Dispatch;
use nimbus_identity::{Caller, Identity};

pub use call::{Failure, Reply};

/// The most a test-invoke form may hold (its payload is at most 6 MB once decoded).
pub const MAX_INVOKE_FORM_BYTES: usize = 20 << 20;
/// The most any other form may hold (sign-in, sign-out, theme, replay).
pub const MAX_SMALL_FORM_BYTES: usize = 16 << 10;

/// The console.
pub struct Console {
    identity: Arc<Identity>,
    /// Authentication is off: every session is the default account's root.
    development: bool,
    /// The node's `host:port`, the `Host` of in-process requests.
    host: String,
    /// The node's router, which holds the console in turn: held weakly, so that a stopped
    /// node's parts are released; the node keeps it alive.
    dispatch: OnceLock<Weak<dyn Dispatch>>,
    sessions: session::Sessions,
    /// In development mode, the one session every browser shares (all are the root).
    development_session: std::sync::Mutex<Option<String>>,
}

/// Who is signed in, for one request.
pub struct Ctx {
    pub caller: Caller,
    /// The session's form token.
    pub csrf: String,
    pub theme: html::Theme,
    /// A session opened by this request (development mode), to be set as a cookie.
    set_cookie: Option<String>,
    /// The request's path, for links back after an action.
    pub path: String,
    /// The browser takes gzip: large pages are sent compressed.
    gzip: bool,
}

impl Console {
    pub fn new(identity: Arc<Identity>, development: bool, host: String) -> Arc<Self> {
        Arc::new(Self {
            identity,
            development,
            host,
            dispatch: OnceLock::new(),
            sessions: session::Sessions::default(),
            development_session: std::sync::Mutex::new(None),
        })
    }

    /// Gives the console the node's router (held weakly).
    pub fn connect(&self, dispatch: &Arc<dyn Dispatch>) {
        let _ = self.dispatch.set(Arc::downgrade(dispatch));
    }

    /// The caller behind a request's session, or the answer that sends the browser to sign
    /// in (`next`: where to come back to).
    pub(crate) fn signed_in(&self, headers: &HeaderMap, path: &str) -> Result<Ctx, Response> {
        let theme = html::Theme::of(session::cookie(headers, session::THEME_COOKIE).as_deref());
        let found = session::cookie(headers, session::COOKIE)
            .and_then(|id| self.sessions.get(&id).map(|s| (id, s)));
        let (session, set_cookie) = match found {
            Some((_, s)) => (s, None),
            None if self.development => {
                // Without authentication anyone who reaches the port is the root, but a page
                // of another site reaching it through a name rebound to loopback is not.
                if !loopback_host(headers) {
                    return Err(secure(
                        (
                            StatusCode::FORBIDDEN,
                            "Without authentication the console answers only to loopback names.",
                        )
                            .into_response(),
                    ));
                }
                let (id, s) = self.development_session();
                (s, Some(session::set_cookie(session::COOKIE, &id, None)))
            }
            None => return Err(to_sign_in(path)),
        };
        let caller = match &session.key_id {
            None => Caller::root(nimbus_types::name::DEFAULT_ACCOUNT),
            Some(key) => {
                let now_s = nimbus_types::time::now_ms() / 1000;
                match self.identity.resolve(key, None, now_s) {
                    Ok((_, caller)) => caller,
                    // The key was deleted since sign-in.
                    Err(_) => return Err(to_sign_in(path)),
                }
            }
        };
        Ok(Ctx {
            caller,
            csrf: session.csrf,
            theme,
            set_cookie,
            path: path.to_owned(),
            gzip: takes_gzip(headers),
        })
    }
}

impl Console {
    /// The shared development session, opened again when it has expired.
    fn development_session(&self) -> (String, session::Session) {
        let mut slot = self
            .development_session
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(id) = slot.as_deref()
            && let Some(s) = self.sessions.get(id)
        {
            return (id.to_owned(), s);
        }
        let (id, s) = self.sessions.open(None);
        *slot = Some(id.clone());
        (id, s)
    }
}

/// Whether a request's `Host` names this machine's loopback (`localhost`, `*.localhost`,
/// `127.0.0.0/8`, `[::1]`).
fn loopback_host(headers: &HeaderMap) -> bool {
    let Some(host) = headers.get(header::HOST).and_then(|v| v.to_str().ok()) else {
        return false;
    };
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or_default()
    } else {
        host.rsplit_once(':').map_or(host, |(n, _)| n)
    };
    let name = name.trim_end_matches('.').to_ascii_lowercase();
    name == "localhost"
        || name.ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

/// A redirect to the sign-in page that comes back to `next`.
fn to_sign_in(next: &str) -> Response {
    let location = format!(
        "/console/signin?{}",
        call::query(&[("next", safe_next(next))])
    );
    see_other(&location)
}

/// `next` if it is a console page of this node, else the functions page: a sign-in never
/// sends the browser elsewhere.
pub(crate) fn safe_next(next: &str) -> &str {
    let local = next.starts_with("/console/")
        && !next.starts_with("/console/signin")
        && !next.starts_with("/console/signout")
        && !next.starts_with("/console/theme")
        && !next.contains("//")
        && !next.contains('\\')
        && !next.chars().any(|c| c.is_control());
    if local { next } else { "/console/functions" }
}

/// `303 See Other`.
pub(crate) fn see_other(location: &str) -> Response {
    let mut r = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        r.headers_mut().insert(header::LOCATION, v);
    }
    secure(r)
}

/// The headers every console answer carries: nothing runs but the console's own script,
/// nothing frames it, nothing is cached.
pub(crate) fn secure(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
             connect-src 'self'; form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Pages larger than this are compressed for browsers that take gzip.
const COMPRESS_FROM_BYTES: usize = 8 << 10;

/// Whether `Accept-Encoding` takes gzip (not with `q=0`).
fn takes_gzip(headers: &HeaderMap) -> bool {
    headers
        .get_all(header::ACCEPT_ENCODING)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .any(|coding| {
            let mut parts = coding.split(';').map(str::trim);
            parts.next().is_some_and(|c| c.eq_ignore_ascii_case("gzip"))
                && !parts.any(|p| {
                    p.strip_prefix("q=")
                        .and_then(|q| q.parse::<f32>().ok())
                        .is_some_and(|q| q == 0.0)
                })
        })
}

/// `body` gzipped at a fast level (a page's rows repeat themselves, so even that shrinks it
/// about tenfold).
fn gzip(body: &[u8]) -> Option<Vec<u8>> {
    use std::io::Write as _;
    let mut encoder = flate2::write::GzEncoder::new(
        Vec::with_capacity(body.len() / 8),
        flate2::Compression::fast(),
    );
    encoder.write_all(body).ok()?;
    encoder.finish().ok()
}

/// An HTML answer with the session's cookie when this request opened one.
pub(crate) fn html_response(ctx: Option<&Ctx>, status: StatusCode, markup: String) -> Response {
    let compressed = ctx
        .filter(|c| c.gzip && markup.len() >= COMPRESS_FROM_BYTES)
        .and_then(|_| gzip(markup.as_bytes()));
    let mut r = match compressed {
        Some(body) => {
            let mut r = (status, body).into_response();
            r.headers_mut()
                .insert(header::CONTENT_ENCODING, HeaderValue::from_static("gzip"));
            r
        }
        None => (status, markup).into_response(),
    };
    r.headers_mut()
        .insert(header::VARY, HeaderValue::from_static("accept-encoding"));
    r.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("text/html; charset=utf-8"),
    );
    if let Some(cookie) = ctx.and_then(|c| c.set_cookie.as_deref())
        && let Ok(v) = HeaderValue::from_str(cookie)
    {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    secure(r)
}

/// Whether a request that changes something came from the console's own pages: a browser
/// says where a request came from in `Sec-Fetch-Site` and `Origin`; a cross-site form is
/// refused whatever it carries.
pub(crate) fn same_origin(headers: &HeaderMap) -> bool {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    if let Some(site) = get("sec-fetch-site")
        && !matches!(site, "same-origin" | "none")
    {
        return false;
    }
    match (get("origin"), get("host")) {
        (None, _) => true,
        (Some(origin), Some(host)) => origin
            .split_once("://")
            .is_some_and(|(_, rest)| rest.eq_ignore_ascii_case(host)),
        (Some(_), None) => false,
    }
}

/// A form body's fields.
pub(crate) struct Form(Vec<(String, String)>);

impl Form {
    /// Reads a form of at most `limit` bytes.
    pub async fn read(body: Body, limit: usize) -> Result<Self, String> {
        let bytes = axum::body::to_bytes(body, limit).await.map_err(|_| {
            format!(
                "The form is larger than the console takes here ({} KiB).",
                limit >> 10
            )
        })?;
        Ok(Self(
            form_urlencoded::parse(&bytes)
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect(),
        ))
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The console's routes, under `/console`.
pub fn router(console: Arc<Console>) -> Router {
    pages::routes().with_state(console)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_local_pages_are_returned_to() {
        assert_eq!(safe_next("/console/functions/f"), "/console/functions/f");
        assert_eq!(safe_next("/console/theme"), "/console/functions");
        for bad in [
            "https://evil.example/",
            "//evil.example/console/",
            "/console//evil",
            "/console/\\evil",
            "/other",
            "/console/\nx",
        ] {
            assert_eq!(safe_next(bad), "/console/functions", "{bad:?}");
        }
    }

    #[test]
    fn gzip_is_used_when_the_browser_takes_it() {
        let with = |v: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::ACCEPT_ENCODING, v.parse().unwrap());
            takes_gzip(&m)
        };
        assert!(with("gzip, deflate, br, zstd"));
        assert!(with("br;q=1.0, GZIP;q=0.5"));
        assert!(!with("gzip;q=0"));
        assert!(!with("br, deflate"));
        assert!(!takes_gzip(&HeaderMap::new()));
        let page = "<tr><td>fn-0001</td></tr>".repeat(1000);
        let packed = gzip(page.as_bytes()).unwrap();
        assert!(packed.len() * 10 < page.len());
        let mut back = String::new();
        std::io::Read::read_to_string(&mut flate2::read::GzDecoder::new(&packed[..]), &mut back)
            .unwrap();
        assert_eq!(back, page);
    }

    #[test]
    fn development_mode_answers_loopback_names_only() {
        let with_host = |h: &str| {
            let mut m = HeaderMap::new();
            m.insert(header::HOST, h.parse().unwrap());
            loopback_host(&m)
        };
        for ok in [
            "127.0.0.1:9000",
            "localhost:9000",
            "app.localhost",
            "[::1]:9000",
            "127.1.2.3",
        ] {
            assert!(with_host(ok), "{ok}");
        }
        for bad in [
            "evil.example:9000",
            "10.0.0.1:9000",
            "localhost.evil.example",
        ] {
            assert!(!with_host(bad), "{bad}");
        }
        assert!(!loopback_host(&HeaderMap::new()));
    }

    #[test]
    fn cross_site_requests_are_told_apart() {
        let headers = |pairs: &[(&str, &str)]| {
            let mut h = HeaderMap::new();
            for (k, v) in pairs {
                h.insert(
                    axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                    v.parse().unwrap(),
                );
            }
            h
        };
        assert!(same_origin(&headers(&[("host", "127.0.0.1:9000")])));
        assert!(same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://127.0.0.1:9000"),
            ("sec-fetch-site", "same-origin"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "http://evil.example"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("sec-fetch-site", "cross-site"),
        ])));
        assert!(!same_origin(&headers(&[
            ("host", "127.0.0.1:9000"),
            ("origin", "null"),
        ])));
    }
}
