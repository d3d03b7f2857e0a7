//! The console's calls to the node's APIs: built as a client would send them and dispatched
//! through the node's router with the signed-in caller attached, so each is validated and
//! authorized exactly as the same call from the CLI or an SDK would be.

use axum::body::Body;
use axum::http::{HeaderMap, Method, Request};
use bytes::Bytes;
use nimbus_identity::{Caller, InProcess};
use serde_json::Value;

use crate::Console;

/// The most an answer the console reads may hold.
const MAX_ANSWER_BYTES: usize = 64 << 20;

/// An API's answer.
pub struct Reply {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

/// An API's refusal or failure, as its error code and message.
#[derive(Debug, Clone)]
pub struct Failure {
    pub status: u16,
    pub code: String,
    pub message: String,
}

impl Failure {
    pub fn new(status: u16, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    pub fn denied(&self) -> bool {
        self.status == 403
    }

    /// What a page shows.
    pub fn describe(&self) -> String {
        if self.code.is_empty() {
            self.message.clone()
        } else {
            format!("{}: {}", self.code, self.message)
        }
    }
}

impl Reply {
    /// The error an unsuccessful answer describes, in any of the node's protocols.
    pub fn failure(&self) -> Failure {
        let header_code = self
            .headers
            .get("x-amzn-errortype")
            .and_then(|v| v.to_str().ok())
            .map(|s| s.split(':').next().unwrap_or(s).to_owned());
        if let Ok(v) = serde_json::from_slice::<Value>(&self.body) {
            let text = |keys: &[&str]| {
                keys.iter()
                    .find_map(|k| v.get(*k).and_then(Value::as_str))
                    .map(str::to_owned)
            };
            // Lambda's `Type` is the fault's side ("User"); its code is in the header.
            let code = header_code
                .or_else(|| text(&["__type", "code", "Type"]))
                .map(|c| c.rsplit('#').next().unwrap_or(&c).to_owned())
                .unwrap_or_default();
            let message = text(&["Message", "message", "errorMessage"]).unwrap_or_default();
            return Failure::new(self.status, &code, message);
        }
        let body = String::from_utf8_lossy(&self.body);
        if body.trim_start().starts_with('<') {
            let code = crate::xml::text(&body, "Code").unwrap_or_default();
            let message = crate::xml::text(&body, "Message").unwrap_or_default();
            return Failure::new(self.status, &code, message);
        }
        Failure::new(
            self.status,
            &header_code.unwrap_or_default(),
            body.chars().take(300).collect::<String>(),
        )
    }

    pub fn ok(&self) -> bool {
        (200..300).contains(&self.status)
    }
}

/// A path segment with everything but unreserved characters percent-encoded (and the dots
/// of `.` and `..`, which a path would otherwise resolve).
pub fn segment(s: &str) -> String {
    if s == "." || s == ".." {
        return s.replace('.', "%2E");
    }
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-._~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// A query string from pairs.
pub fn query(pairs: &[(&str, &str)]) -> String {
    let mut form = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        form.append_pair(k, v);
    }
    form.finish()
}

impl Console {
    /// Sends one request through the node's router as `caller`.
    pub async fn send(
        &self,
        caller: &Caller,
        method: Method,
        uri: impl AsRef<str>,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, Failure> {
        let uri = uri.as_ref();
        let Some(dispatch) = self.dispatch.get().and_then(std::sync::Weak::upgrade) else {
            return Err(Failure::new(503, "", "The node's APIs are not ready."));
        };
        let mut builder = Request::builder().method(method).uri(uri);
        let mut has_host = false;
        for (k, v) in headers {
            has_host |= k.eq_ignore_ascii_case("host");
            builder = builder.header(*k, *v);
        }
        if !has_host {
            builder = builder.header("host", &self.host);
        }
        let mut request = builder
            .header("content-length", body.len().to_string())
            .body(Body::from(body))
            .map_err(|e| Failure::new(400, "", format!("The request could not be made: {e}")))?;
        request.extensions_mut().insert(InProcess(caller.clone()));
        let response = dispatch.call(request).await;
        let status = response.status().as_u16();
        let (parts, body) = response.into_parts();
        let body = axum::body::to_bytes(body, MAX_ANSWER_BYTES)
            .await
            .map_err(|e| Failure::new(502, "", format!("The answer could not be read: {e}")))?;
        Ok(Reply {
            status,
            headers: parts.headers,
            body,
        })
    }

    /// A REST-JSON call (Lambda, nimbus's API, API Gateway); the answer's JSON (`null` for
    /// an empty body).
    pub async fn rest(
        &self,
        caller: &Caller,
        method: Method,
        uri: impl AsRef<str>,
        body: Option<&Value>,
    ) -> Result<Value, Failure> {
        let bytes = body.map(|b| b.to_string().into_bytes()).unwrap_or_default();
        let reply = self
            .send(
                caller,
                method,
                uri,
                &[("content-type", "application/json")],
                bytes,
            )
            .await?;
        json_of(reply)
    }

    /// A JSON-protocol call by `X-Amz-Target` (SQS, DynamoDB, EventBridge, Cognito).
    pub async fn target(
        &self,
        caller: &Caller,
        target: &str,
        body: &Value,
    ) -> Result<Value, Failure> {
        let [(_, content_type)] =
            nimbus_aws_wire::target::JsonVersion::of_target(target).content_type();
        let reply = self
            .send(
                caller,
                Method::POST,
                "/",
                &[("x-amz-target", target), ("content-type", content_type)],
                body.to_string().into_bytes(),
            )
            .await?;
        json_of(reply)
    }

    /// A Query-protocol call (CloudFormation); the answer's XML.
    pub async fn query_api(
        &self,
        caller: &Caller,
        version: &str,
        action: &str,
        params: &[(&str, &str)],
    ) -> Result<String, Failure> {
        let mut pairs = vec![("Action", action), ("Version", version)];
        pairs.extend_from_slice(params);
        let reply = self
            .send(
                caller,
                Method::POST,
                "/",
                &[(
                    "content-type",
                    "application/x-www-form-urlencoded; charset=utf-8",
                )],
                query(&pairs).into_bytes(),
            )
            .await?;
        if !reply.ok() {
            return Err(reply.failure());
        }
        Ok(String::from_utf8_lossy(&reply.body).into_owned())
    }

    /// An S3 call, path-style; the answer whole.
    pub async fn s3(
        &self,
        caller: &Caller,
        method: Method,
        uri: &str,
        headers: &[(&str, &str)],
        body: Vec<u8>,
    ) -> Result<Reply, Failure> {
        let mut all = vec![("host", "s3.localhost")];
        all.extend_from_slice(headers);
        let reply = self.send(caller, method, uri, &all, body).await?;
        if !reply.ok() {
            return Err(reply.failure());
        }
        Ok(reply)
    }
}

fn json_of(reply: Reply) -> Result<Value, Failure> {
    if !reply.ok() {
        return Err(reply.failure());
    }
    if reply.body.is_empty() {
        return Ok(Value::Null);
    }
    serde_json::from_slice(&reply.body)
        .map_err(|e| Failure::new(502, "", format!("The answer was not JSON: {e}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: u16, headers: &[(&str, &str)], body: &str) -> Reply {
        let mut h = HeaderMap::new();
        for (k, v) in headers {
            h.insert(
                axum::http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        Reply {
            status,
            headers: h,
            body: Bytes::from(body.to_owned()),
        }
    }

    #[test]
    fn failures_are_read_from_every_protocol() {
        let f = reply(
            404,
            &[("x-amzn-errortype", "ResourceNotFoundException:http://x")],
            r#"{"Type":"User","Message":"Function not found"}"#,
        )
        .failure();
        assert_eq!(
            (f.code.as_str(), f.message.as_str()),
            ("ResourceNotFoundException", "Function not found")
        );
        let f = reply(
            400,
            &[],
            r#"{"__type":"com.amazonaws.dynamodb.v20120810#ResourceNotFoundException","message":"no table"}"#,
        )
        .failure();
        assert_eq!(f.code, "ResourceNotFoundException");
        assert_eq!(f.message, "no table");
        let f = reply(
            403,
            &[],
            "<ErrorResponse><Error><Code>AccessDenied</Code><Message>no &amp; no</Message></Error></ErrorResponse>",
        )
        .failure();
        assert!(f.denied());
        assert_eq!(f.describe(), "AccessDenied: no & no");
    }

    #[test]
    fn segments_are_percent_encoded() {
        assert_eq!(segment("fn-1_a.b~"), "fn-1_a.b~");
        assert_eq!(segment("a/b c<"), "a%2Fb%20c%3C");
        assert_eq!(segment(".."), "%2E%2E");
        assert_eq!(segment("a..b"), "a..b");
        assert_eq!(query(&[("q", "a b&c")]), "q=a+b%26c");
    }
}
