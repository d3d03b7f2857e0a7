//! S3's REST-XML protocol over the object store ([`nimbus_objects`]). The `s3s` crate parses
//! requests into operations, verifies SigV4 (headers, presigned URLs, POST forms, aws-chunked
//! bodies with their chunk signatures and trailers) and writes XML; this crate resolves who is
//! calling, decides whether their policies allow the operation, and maps each operation onto
//! the store.
//!
//! Who calls: the gateway looks the request's access key up (with its session token) before
//! handing it here, so the secret `s3s` verifies the signature with, and the [`Caller`] the
//! policies come from, are the same ones every other API uses.

#![forbid(unsafe_code)]

mod access;
mod convert;
mod cors;
mod ops;

use std::sync::Arc;

use axum::body::Body;
use axum::extract::Request;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use nimbus_identity::{Caller, Identity, Refused};
use nimbus_objects::Objects;

pub use access::action_of;

/// The most an XML request body may hold (DeleteObjects with 1,000 keys of 1,024 bytes fits).
pub const MAX_XML_BYTES: usize = 2 * 1024 * 1024;

/// The largest file a browser form (POST) may upload.
pub const MAX_POST_FILE_BYTES: u64 = 64 * 1024 * 1024;

/// How the service is reached and who is trusted.
pub struct S3Config {
    /// The region buckets are created in when the request names none.
    pub region: String,
    /// `s3.localhost`: requests to `{bucket}.{domain}` are virtual-hosted.
    pub domain: String,
}

/// The S3 service of a node.
pub struct S3Api {
    service: s3s::service::S3Service,
    identity: Arc<Identity>,
    objects: Arc<Objects>,
    domain: String,
}

/// Who a request comes from, as the gateway decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Trust {
    /// Authentication is on: a request must be signed by a known key.
    Signed,
    /// Authentication is off for this client: an unsigned request is the default account's
    /// root; a signed one is still verified (and is who signed it).
    Open,
}

tokio::task_local! {
    /// The secret of the key that signed the request being served, looked up with its
    /// session token before `s3s` asks for it by key id alone.
    static SECRET: Option<(String, String)>;
}

struct Secrets {
    identity: Arc<Identity>,
}

#[async_trait::async_trait]
impl s3s::auth::S3Auth for Secrets {
    async fn get_secret_key(&self, access_key: &str) -> s3s::S3Result<s3s::auth::SecretKey> {
        let known = SECRET
            .try_with(|s| {
                s.as_ref()
                    .filter(|(key, _)| key == access_key)
                    .map(|(_, secret)| secret.clone())
            })
            .ok()
            .flatten();
        if let Some(secret) = known {
            return Ok(s3s::auth::SecretKey::from(secret));
        }
        // A key named only inside the body (a POST form): a long-lived key, no session.
        let now = nimbus_types::time::now_ms().div_euclid(1000);
        match self.identity.resolve(access_key, None, now) {
            Ok((secret, _)) => Ok(s3s::auth::SecretKey::from(secret)),
            Err(_) => Err(s3s::s3_error!(
                InvalidAccessKeyId,
                "The AWS Access Key Id you provided does not exist in our records."
            )),
        }
    }
}

/// Virtual-hosted requests are those to `{bucket}.{domain}`; any other host is path-style.
struct Domain(String);

impl s3s::host::S3Host for Domain {
    fn parse_host_header<'a>(&'a self, host: &'a str) -> s3s::S3Result<s3s::host::VirtualHost<'a>> {
        let name = host.rsplit_once(':').map_or(host, |(name, _)| name);
        let name = name.trim_end_matches('.');
        let vh = s3s::host::VirtualHost::new(name);
        if let Some(bucket) = name
            .len()
            .checked_sub(self.0.len() + 1)
            .filter(|&at| {
                name.as_bytes()[at] == b'.' && name[at + 1..].eq_ignore_ascii_case(&self.0)
            })
            .map(|at| &name[..at])
        {
            return Ok(vh.with_bucket(bucket.to_ascii_lowercase()));
        }
        Ok(vh)
    }
}

impl S3Api {
    pub fn new(
        objects: Arc<Objects>,
        identity: Arc<Identity>,
        targets: Arc<dyn nimbus_objects::Targets>,
        config: S3Config,
    ) -> Self {
        let domain = config.domain.to_ascii_lowercase();
        let handler = ops::Handler {
            objects: objects.clone(),
            region: config.region,
            targets,
        };
        let mut builder = s3s::service::S3ServiceBuilder::new(handler);
        builder.set_auth(Secrets {
            identity: identity.clone(),
        });
        builder.set_access(access::Access {
            objects: objects.clone(),
            identity: identity.clone(),
        });
        builder.set_host(Domain(domain.clone()));
        let mut s3_config = s3s::config::S3Config::default();
        s3_config.xml_max_body_size = MAX_XML_BYTES;
        // A form upload's file is gathered in memory before the policy is checked; larger
        // files go up with PUT (presigned or multipart), which streams.
        s3_config.post_object_max_file_size = MAX_POST_FILE_BYTES;
        builder.set_config(Arc::new(s3s::config::StaticConfigProvider::new(Arc::new(
            s3_config,
        ))));
        Self {
            service: builder.build(),
            identity,
            objects,
            domain,
        }
    }

    /// Serves one request.
    pub async fn serve(&self, request: Request, trust: Trust) -> Response {
        let (mut parts, body) = request.into_parts();
        if parts.method == axum::http::Method::OPTIONS {
            return cors::preflight(&self.objects, &parts, &self.domain);
        }
        let page = cors::Actual::of(&parts, &self.domain);
        // A request refused before its body was read leaves the body's bytes (or, after
        // `Expect: 100-continue`, a body the client may still send) on the connection: such a
        // connection is closed rather than parsed on.
        let has_body = parts
            .headers
            .get(axum::http::header::CONTENT_LENGTH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.trim() != "0")
            || parts
                .headers
                .contains_key(axum::http::header::TRANSFER_ENCODING);
        let body = match form_with_filename(&parts, body).await {
            Ok(body) => body,
            Err(response) => return response,
        };
        let signer = signer_of(&parts);
        let secret = match &signer {
            Some((key, token)) => {
                let now = nimbus_types::time::now_ms().div_euclid(1000);
                match self.identity.resolve(key, token.as_deref(), now) {
                    Ok((secret, caller)) => {
                        parts.extensions.insert(caller);
                        Some((key.clone(), secret))
                    }
                    Err(Refused::UnknownKey) => {
                        tracing::info!(access_key_id = %key, "S3 request with an unknown access key");
                        return error_response(
                            StatusCode::FORBIDDEN,
                            "InvalidAccessKeyId",
                            "The AWS Access Key Id you provided does not exist in our records.",
                        );
                    }
                    Err(Refused::BadToken) => {
                        return error_response(
                            StatusCode::BAD_REQUEST,
                            "InvalidToken",
                            "The provided token is malformed or otherwise invalid.",
                        );
                    }
                }
            }
            None => {
                if let Some(nimbus_identity::InProcess(caller)) = parts.extensions.get().cloned() {
                    parts.extensions.insert(caller);
                } else if trust == Trust::Open {
                    parts
                        .extensions
                        .insert(Caller::root(nimbus_types::name::DEFAULT_ACCOUNT));
                }
                None
            }
        };
        let request = axum::http::Request::from_parts(parts, s3s::Body::http_body_unsync(body));
        let service = self.service.clone();
        let result = SECRET
            .scope(secret, async move { service.call(request).await })
            .await;
        match result {
            Ok(response) => {
                let mut response = response.map(Body::new);
                if let Some(page) = page {
                    page.decorate(&self.objects, &mut response);
                }
                if has_body && !response.status().is_success() {
                    response.headers_mut().insert(
                        axum::http::header::CONNECTION,
                        axum::http::HeaderValue::from_static("close"),
                    );
                }
                response
            }
            Err(e) => {
                tracing::warn!(error = ?e, "S3 request failed");
                error_response(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "InternalError",
                    "We encountered an internal error. Please try again.",
                )
            }
        }
    }
}

/// The most a form's fields (everything before its file) may hold.
const MAX_FORM_FIELDS_BYTES: usize = 1 << 20;

/// A browser form's fields may name the uploaded file as `${filename}` (in the key); S3
/// replaces it with the file's name. The fields and the file's part header are read here (at
/// most 1 MiB), the variable filled in, and the file itself streams on untouched.
async fn form_with_filename(
    parts: &axum::http::request::Parts,
    body: Body,
) -> Result<Body, Response> {
    use futures_util::StreamExt as _;

    let is_form = parts.method == axum::http::Method::POST
        && parts
            .headers
            .get(axum::http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.to_ascii_lowercase().starts_with("multipart/form-data"));
    if !is_form {
        return Ok(body);
    }
    let mut stream = body.into_data_stream();
    let mut head: Vec<u8> = Vec::new();
    // Until the file's part header is complete (its blank line), or the stream ends.
    let header_end = loop {
        if let Some(at) = find(&head, b"name=\"file\"")
            && let Some(end) = find(&head[at..], b"\r\n\r\n")
        {
            break Some(at + end);
        }
        if head.len() > MAX_FORM_FIELDS_BYTES {
            return Err(error_response(
                StatusCode::BAD_REQUEST,
                "MaxPostPreDataLengthExceeded",
                "Your POST request fields preceeding the upload file was too large.",
            ));
        }
        match stream.next().await {
            Some(Ok(chunk)) => head.extend_from_slice(&chunk),
            Some(Err(_)) => {
                return Err(error_response(
                    StatusCode::BAD_REQUEST,
                    "IncompleteBody",
                    "The form could not be read.",
                ));
            }
            None => break None,
        }
    };
    let fields_end = header_end
        .and_then(|end| head[..end].windows(11).rposition(|w| w == b"name=\"file\""))
        .unwrap_or(head.len());
    const VARIABLE: &[u8] = b"${filename}";
    let head = if find(&head[..fields_end], VARIABLE).is_some() {
        let name = header_end
            .and_then(|end| {
                let line = &head[fields_end..end];
                let line_end = find(line, b"\r\n").unwrap_or(line.len());
                let line = &line[..line_end];
                let start = find(line, b"filename=\"")? + b"filename=\"".len();
                let len = line[start..].iter().position(|&b| b == b'"')?;
                Some(line[start..start + len].to_vec())
            })
            .map(|n| {
                // Only the name: some browsers send the whole path.
                let cut = n.iter().rposition(|&b| b == b'/' || b == b'\\');
                cut.map_or(n.clone(), |c| n[c + 1..].to_vec())
            })
            .unwrap_or_default();
        let mut out = Vec::with_capacity(head.len() + name.len());
        let mut rest = &head[..fields_end];
        while let Some(at) = find(rest, VARIABLE) {
            out.extend_from_slice(&rest[..at]);
            out.extend_from_slice(&name);
            rest = &rest[at + VARIABLE.len()..];
        }
        out.extend_from_slice(rest);
        out.extend_from_slice(&head[fields_end..]);
        out
    } else {
        head
    };
    let first =
        futures_util::stream::once(async move { Ok::<_, axum::Error>(bytes::Bytes::from(head)) });
    Ok(Body::from_stream(first.chain(stream)))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// The access key (and session token) a request is signed with, from its `Authorization`
/// header or, for a presigned URL, its query.
fn signer_of(parts: &axum::http::request::Parts) -> Option<(String, Option<String>)> {
    let header = |name: &str| {
        parts
            .headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    if let Some(auth) = header("authorization") {
        let key = auth
            .split_once("Credential=")
            .and_then(|(_, rest)| rest.split('/').next())
            .or_else(|| {
                // Signature version 2: `AWS KEY:SIGNATURE`.
                auth.strip_prefix("AWS ")
                    .and_then(|rest| rest.split(':').next())
            })?;
        return Some((key.trim().to_owned(), header("x-amz-security-token")));
    }
    let query = parts.uri.query()?;
    let mut key = None;
    let mut token = None;
    for pair in query.split('&') {
        let (name, value) = pair.split_once('=').unwrap_or((pair, ""));
        // A `+` stays a `+`: SigV4 clients escape spaces as `%20`.
        let value = percent_encoding::percent_decode_str(value)
            .decode_utf8_lossy()
            .into_owned();
        match name {
            "X-Amz-Credential" => key = value.split('/').next().map(str::to_owned),
            "AWSAccessKeyId" => key = Some(value.clone()),
            "X-Amz-Security-Token" => token = Some(value),
            _ => {}
        }
    }
    key.map(|k| (k, token))
}

/// An S3 error document.
pub fn error_response(status: StatusCode, code: &str, message: &str) -> Response {
    let body = format!(
        "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<Error><Code>{code}</Code><Message>{}</Message></Error>",
        xml_escape(message)
    );
    (
        status,
        [(axum::http::header::CONTENT_TYPE, "application/xml")],
        body,
    )
        .into_response()
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

#[cfg(test)]
mod tests {
    use super::*;
    use s3s::host::S3Host as _;

    #[test]
    fn hosts_under_the_domain_name_their_bucket() {
        let d = Domain("s3.localhost".into());
        let vh = d.parse_host_header("photos.s3.localhost:9000").unwrap();
        assert_eq!(vh.bucket(), Some("photos"));
        let vh = d.parse_host_header("s3.localhost:9000").unwrap();
        assert_eq!(vh.bucket(), None);
        let vh = d.parse_host_header("localhost:9000").unwrap();
        assert_eq!(vh.bucket(), None);
        let vh = d
            .parse_host_header("my.dotted.bucket.S3.localhost")
            .unwrap();
        assert_eq!(vh.bucket(), Some("my.dotted.bucket"));
        let vh = d.parse_host_header("evils3.localhost").unwrap();
        assert_eq!(vh.bucket(), None);
    }

    #[test]
    fn the_signer_comes_from_the_header_or_the_query() {
        let parts = |uri: &str, auth: Option<&str>| {
            let mut b = axum::http::Request::builder().uri(uri);
            if let Some(a) = auth {
                b = b.header("authorization", a);
            }
            b.body(()).unwrap().into_parts().0
        };
        let p = parts(
            "/b/k",
            Some(
                "AWS4-HMAC-SHA256 Credential=AKIAEXAMPLE/20260101/us-east-1/s3/aws4_request, SignedHeaders=host, Signature=00",
            ),
        );
        assert_eq!(signer_of(&p), Some(("AKIAEXAMPLE".into(), None)));
        let p = parts(
            "/b/k?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=ASIAEXAMPLE%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Security-Token=abc%2Bdef",
            None,
        );
        assert_eq!(
            signer_of(&p),
            Some(("ASIAEXAMPLE".into(), Some("abc+def".into())))
        );
        assert_eq!(signer_of(&parts("/b/k", None)), None);
    }
}
