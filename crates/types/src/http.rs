//! HTTP requests and responses handed to functions that serve HTTP themselves (`wasi-http`
//! components), and their translation from and to the JSON events of function URLs and HTTP
//! APIs, for when such a function is invoked through Lambda's Invoke API.

use base64::Engine;
use bytes::Bytes;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};

const B64: base64::engine::GeneralPurpose = base64::engine::general_purpose::STANDARD;

/// A request as it reached the front door: no event in between.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpCall {
    pub method: String,
    /// `http` or `https`.
    pub scheme: String,
    /// The Host the client addressed.
    pub authority: String,
    /// The path as the client sent it (percent-encoded), with `?query` if there was one.
    pub path_and_query: String,
    /// In the order received; a repeated header appears once per value.
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

/// A function's HTTP answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpReply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl HttpCall {
    /// The request an API Gateway event describes: payload format 2.0 (function URLs, HTTP APIs)
    /// or 1.0 (REST-style proxy events).
    pub fn from_event(event: &[u8]) -> Result<Self, String> {
        let event: Value =
            serde_json::from_slice(event).map_err(|e| format!("the event is not JSON: {e}"))?;
        let Some(event) = event.as_object() else {
            return Err("the event is not a JSON object".into());
        };
        let text = |v: Option<&Value>| v.and_then(Value::as_str).map(str::to_owned);
        let context = event.get("requestContext").and_then(Value::as_object);
        let mut headers = Vec::new();
        let v2 = event.get("version").and_then(Value::as_str) == Some("2.0");
        let (method, path, query) = if v2 {
            let method = text(
                context
                    .and_then(|c| c.get("http"))
                    .and_then(|h| h.get("method")),
            )
            .ok_or("the 2.0 event has no requestContext.http.method")?;
            let path = text(event.get("rawPath")).unwrap_or_else(|| "/".into());
            let query = text(event.get("rawQueryString")).unwrap_or_default();
            if let Some(map) = event.get("headers").and_then(Value::as_object) {
                for (name, value) in map {
                    if let Some(value) = value.as_str() {
                        headers.push((name.to_ascii_lowercase(), value.to_owned()));
                    }
                }
            }
            if let Some(cookies) = event.get("cookies").and_then(Value::as_array) {
                let joined: Vec<&str> = cookies.iter().filter_map(Value::as_str).collect();
                if !joined.is_empty() {
                    headers.retain(|(n, _)| n != "cookie");
                    headers.push(("cookie".into(), joined.join("; ")));
                }
            }
            (method, path, query)
        } else {
            let method = text(event.get("httpMethod"))
                .ok_or("the event is neither a 2.0 event nor a 1.0 event with httpMethod")?;
            let path = text(event.get("path")).unwrap_or_else(|| "/".into());
            let multi = event
                .get("multiValueHeaders")
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty());
            match (multi, event.get("headers").and_then(Value::as_object)) {
                (Some(map), _) => {
                    for (name, values) in map {
                        for value in values.as_array().into_iter().flatten() {
                            if let Some(value) = value.as_str() {
                                headers.push((name.to_ascii_lowercase(), value.to_owned()));
                            }
                        }
                    }
                }
                (None, Some(map)) => {
                    for (name, value) in map {
                        if let Some(value) = value.as_str() {
                            headers.push((name.to_ascii_lowercase(), value.to_owned()));
                        }
                    }
                }
                (None, None) => {}
            }
            let mut pairs = Vec::new();
            let multi = event
                .get("multiValueQueryStringParameters")
                .and_then(Value::as_object)
                .filter(|m| !m.is_empty());
            match (
                multi,
                event
                    .get("queryStringParameters")
                    .and_then(Value::as_object),
            ) {
                (Some(map), _) => {
                    for (name, values) in map {
                        for value in values.as_array().into_iter().flatten() {
                            if let Some(value) = value.as_str() {
                                pairs.push(format!("{}={}", encode(name), encode(value)));
                            }
                        }
                    }
                }
                (None, Some(map)) => {
                    for (name, value) in map {
                        if let Some(value) = value.as_str() {
                            pairs.push(format!("{}={}", encode(name), encode(value)));
                        }
                    }
                }
                (None, None) => {}
            }
            (method, encode_path(&path), pairs.join("&"))
        };
        if !path.starts_with('/') {
            return Err(format!("the event's path {path:?} does not start with /"));
        }
        let body = match text(event.get("body")) {
            None => Bytes::new(),
            Some(body) if event.get("isBase64Encoded").and_then(Value::as_bool) == Some(true) => {
                Bytes::from(
                    B64.decode(body.as_bytes())
                        .map_err(|_| "the event's body is marked base64 but is not")?,
                )
            }
            Some(body) => Bytes::from(body),
        };
        let authority = headers
            .iter()
            .find(|(n, _)| n == "host")
            .map(|(_, v)| v.clone())
            .or_else(|| text(context.and_then(|c| c.get("domainName"))))
            .unwrap_or_else(|| "localhost".into());
        let scheme = match headers.iter().find(|(n, _)| n == "x-forwarded-proto") {
            Some((_, proto)) if proto == "http" => "http",
            _ => "https",
        };
        let path_and_query = if query.is_empty() {
            path
        } else {
            format!("{path}?{query}")
        };
        Ok(Self {
            method,
            scheme: scheme.into(),
            authority,
            path_and_query,
            headers,
            body,
        })
    }
}

impl HttpReply {
    /// The reply as a function URL / HTTP API (2.0) result: `statusCode`, `headers` (repeated
    /// ones comma-joined), `cookies` from `set-cookie`, and the body, in base64 when it is not
    /// UTF-8.
    pub fn to_result(&self) -> Value {
        let mut headers = Map::new();
        let mut cookies = Vec::new();
        for (name, value) in &self.headers {
            if name.eq_ignore_ascii_case("set-cookie") {
                cookies.push(Value::String(value.clone()));
                continue;
            }
            match headers.get_mut(name) {
                Some(Value::String(joined)) => {
                    joined.push(',');
                    joined.push_str(value);
                }
                _ => {
                    headers.insert(name.clone(), Value::String(value.clone()));
                }
            }
        }
        let (body, base64) = match std::str::from_utf8(&self.body) {
            Ok(text) => (text.to_owned(), false),
            Err(_) => (B64.encode(&self.body), true),
        };
        let mut result = json!({
            "statusCode": self.status,
            "headers": headers,
            "body": body,
            "isBase64Encoded": base64,
        });
        if !cookies.is_empty() {
            result["cookies"] = Value::Array(cookies);
        }
        result
    }
}

/// Percent-encodes a query component as API Gateway's 1.0 events hold it decoded.
fn encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// Percent-encodes what may not stand in a path as is (1.0 events hold the path decoded).
fn encode_path(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/!$&'()*+,;=:@%".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_2_0_event_becomes_the_request_it_describes() {
        let event = json!({
            "version": "2.0",
            "rawPath": "/a/b%20c",
            "rawQueryString": "x=1&x=2",
            "cookies": ["a=1", "b=2"],
            "headers": {"Host": "abc.lambda-url.us-east-1.on.aws", "content-type": "text/plain"},
            "requestContext": {"http": {"method": "PUT"}},
            "body": "aGk=",
            "isBase64Encoded": true
        });
        let call = HttpCall::from_event(event.to_string().as_bytes()).unwrap();
        assert_eq!(call.method, "PUT");
        assert_eq!(call.path_and_query, "/a/b%20c?x=1&x=2");
        assert_eq!(call.authority, "abc.lambda-url.us-east-1.on.aws");
        assert_eq!(call.scheme, "https");
        assert_eq!(&call.body[..], b"hi");
        assert!(call.headers.contains(&("cookie".into(), "a=1; b=2".into())));
        assert!(
            call.headers
                .contains(&("content-type".into(), "text/plain".into()))
        );
    }

    #[test]
    fn a_1_0_event_becomes_the_request_it_describes() {
        let event = json!({
            "httpMethod": "POST",
            "path": "/items/a b",
            "multiValueQueryStringParameters": {"q": ["x y", "z"]},
            "multiValueHeaders": {"X-Twice": ["1", "2"]},
            "body": "plain",
            "isBase64Encoded": false
        });
        let call = HttpCall::from_event(event.to_string().as_bytes()).unwrap();
        assert_eq!(call.method, "POST");
        assert_eq!(call.path_and_query, "/items/a%20b?q=x%20y&q=z");
        assert_eq!(
            call.headers,
            vec![
                ("x-twice".into(), "1".into()),
                ("x-twice".into(), "2".into())
            ]
        );
        assert_eq!(&call.body[..], b"plain");
    }

    #[test]
    fn events_that_describe_no_request_are_refused() {
        for bad in [
            "not json",
            "[1]",
            "{}",
            r#"{"version":"2.0","requestContext":{}}"#,
            r#"{"version":"2.0","rawPath":"x","requestContext":{"http":{"method":"GET"}}}"#,
            r#"{"httpMethod":"GET","body":"***","isBase64Encoded":true}"#,
        ] {
            assert!(HttpCall::from_event(bad.as_bytes()).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_reply_becomes_a_2_0_result() {
        let reply = HttpReply {
            status: 201,
            headers: vec![
                ("x-a".into(), "1".into()),
                ("x-a".into(), "2".into()),
                ("set-cookie".into(), "s=1".into()),
            ],
            body: Bytes::from_static(&[0xff, 0x00]),
        };
        let result = reply.to_result();
        assert_eq!(result["statusCode"], 201);
        assert_eq!(result["headers"]["x-a"], "1,2");
        assert_eq!(result["cookies"], json!(["s=1"]));
        assert_eq!(result["isBase64Encoded"], true);
        assert_eq!(result["body"], "/wA=");
    }
}
