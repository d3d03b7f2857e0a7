//! HTTP requests as the events Lambda gives functions behind function URLs and API Gateway's
//! HTTP APIs (payload formats 2.0 and 1.0), and function results back as HTTP responses.

use std::collections::BTreeMap;

use axum::body::Body;
use axum::http::request::Parts;
use axum::http::{HeaderName, HeaderValue, StatusCode};
use axum::response::Response;
use base64::Engine;
use bytes::Bytes;
use nimbus_identity::Caller;
use nimbus_types::http::{HttpCall, HttpReply};
use serde_json::{Value, json};

/// The request as the event sees it.
pub struct View<'a> {
    pub parts: &'a Parts,
    /// The path the function sees (a path-based form's prefix removed).
    pub path: &'a str,
    pub source_ip: &'a str,
    pub body: &'a Bytes,
    pub request_id: &'a str,
}

/// What the event's `requestContext` says besides the request itself.
pub struct Context<'a> {
    /// The account the event names (`anonymous` for a public URL's caller).
    pub account: &'a str,
    pub api_id: &'a str,
    pub route_key: &'a str,
    pub stage: &'a str,
    /// `requestContext.authorizer` (shared: a JWT authorizer's is built once per token).
    pub authorizer: Option<std::sync::Arc<Value>>,
    pub path_parameters: &'a [(String, String)],
    pub stage_variables: Option<&'a BTreeMap<String, String>>,
}

/// The address of the client a request came from (the node's own accept loop records it).
pub fn source_ip(extensions: &axum::http::Extensions) -> String {
    extensions
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_else(|| "127.0.0.1".to_owned())
}

/// `requestContext.authorizer` for a SigV4-authenticated caller.
pub fn iam_authorizer(caller: &Caller) -> Value {
    json!({
        "iam": {
            "accessKey": caller.access_key_id,
            "accountId": caller.account,
            "callerId": caller.access_key_id,
            "cognitoIdentity": null,
            "principalOrgId": null,
            "userArn": caller.arn(),
            "userId": caller.access_key_id,
        }
    })
}

/// Content types whose bodies travel in the event as text.
pub(crate) fn is_text(content_type: Option<&str>) -> bool {
    let Some(ct) = content_type else { return false };
    let ct = ct
        .split(';')
        .next()
        .unwrap_or_default()
        .trim()
        .to_ascii_lowercase();
    ct.starts_with("text/")
        || ct.ends_with("+json")
        || ct.ends_with("+xml")
        || matches!(
            ct.as_str(),
            "application/json"
                | "application/javascript"
                | "application/xml"
                | "application/x-www-form-urlencoded"
                | "application/graphql"
        )
}

/// The request's headers, cookies, query and body, collected once for either format.
struct Collected<'a> {
    /// Lower-case names, every value of each.
    multi_headers: BTreeMap<String, Vec<String>>,
    cookies: Vec<String>,
    raw_query: &'a str,
    query: BTreeMap<String, Vec<String>>,
    /// The body as the event carries it, and whether that is base64.
    body: Option<(String, bool)>,
    domain: &'a str,
    user_agent: &'a str,
    now: i64,
}

fn collect<'a>(view: &View<'a>) -> Collected<'a> {
    let parts = view.parts;
    let mut multi_headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    let mut cookies: Vec<String> = Vec::new();
    for (name, value) in &parts.headers {
        let value = String::from_utf8_lossy(value.as_bytes()).into_owned();
        if name == axum::http::header::COOKIE {
            cookies.extend(
                value
                    .split(';')
                    .map(str::trim)
                    .filter(|c| !c.is_empty())
                    .map(str::to_owned),
            );
        }
        multi_headers
            .entry(name.as_str().to_owned())
            .or_default()
            .push(value);
    }
    let now = nimbus_types::time::now_ms();
    let trace = format!(
        "Root=1-{:08x}-{}",
        now / 1000,
        &view.request_id.replace('-', "")[..24]
    );
    for (name, value) in [
        ("x-forwarded-for", view.source_ip.to_owned()),
        ("x-forwarded-proto", "http".to_owned()),
        ("x-amzn-trace-id", trace),
    ] {
        multi_headers
            .entry(name.into())
            .or_insert_with(|| vec![value]);
    }
    let raw_query = parts.uri.query().unwrap_or_default();
    let mut query: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (k, v) in form_urlencoded::parse(raw_query.as_bytes()) {
        query
            .entry(k.into_owned())
            .or_default()
            .push(v.into_owned());
    }
    let header = |name| {
        parts
            .headers
            .get(name)
            .and_then(|h: &HeaderValue| h.to_str().ok())
    };
    let host = header(axum::http::header::HOST).unwrap_or_default();
    let body = (!view.body.is_empty()).then(|| match std::str::from_utf8(view.body) {
        Ok(text) if is_text(header(axum::http::header::CONTENT_TYPE)) => (text.to_owned(), false),
        _ => (
            base64::engine::general_purpose::STANDARD.encode(view.body),
            true,
        ),
    });
    Collected {
        multi_headers,
        cookies,
        raw_query,
        query,
        body,
        domain: host.rsplit_once(':').map_or(host, |(name, _)| name),
        user_agent: header(axum::http::header::USER_AGENT).unwrap_or_default(),
        now,
    }
}

/// Format 2.0's headers: repeated ones joined with commas, `Cookie` left to `cookies`.
fn joined_headers(multi: &BTreeMap<String, Vec<String>>) -> BTreeMap<&str, String> {
    multi
        .iter()
        .filter(|(name, _)| name.as_str() != "cookie")
        .map(|(name, values)| (name.as_str(), values.join(",")))
        .collect()
}

fn params_object(params: &[(String, String)]) -> Value {
    Value::Object(
        params
            .iter()
            .map(|(k, v)| (k.clone(), Value::String(v.clone())))
            .collect(),
    )
}

/// The payload-format-2.0 event.
pub fn v2(view: &View<'_>, context: &Context<'_>) -> Value {
    let c = collect(view);
    let mut request_context = json!({
        "accountId": context.account,
        "apiId": context.api_id,
        "domainName": c.domain,
        "domainPrefix": context.api_id,
        "http": {
            "method": view.parts.method.as_str(),
            "path": view.path,
            "protocol": format!("{:?}", view.parts.version),
            "sourceIp": view.source_ip,
            "userAgent": c.user_agent,
        },
        "requestId": view.request_id,
        "routeKey": context.route_key,
        "stage": context.stage,
        "time": nimbus_types::time::clf(c.now),
        "timeEpoch": c.now,
    });
    if let Some(authorizer) = &context.authorizer {
        request_context["authorizer"] = Value::clone(authorizer);
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": context.route_key,
        "rawPath": view.path,
        "rawQueryString": c.raw_query,
        "headers": joined_headers(&c.multi_headers),
        "requestContext": request_context,
        "isBase64Encoded": false,
    });
    if !c.cookies.is_empty() {
        event["cookies"] = c.cookies.into();
    }
    if !c.query.is_empty() {
        let joined: BTreeMap<&String, String> =
            c.query.iter().map(|(k, v)| (k, v.join(","))).collect();
        event["queryStringParameters"] = json!(joined);
    }
    if !context.path_parameters.is_empty() {
        event["pathParameters"] = params_object(context.path_parameters);
    }
    if let Some(vars) = context.stage_variables.filter(|v| !v.is_empty()) {
        event["stageVariables"] = json!(vars);
    }
    if let Some((body, base64)) = c.body {
        event["body"] = body.into();
        event["isBase64Encoded"] = base64.into();
    }
    event
}

/// The payload-format-1.0 event (API Gateway's REST-API shape): single and multi-valued
/// headers and query parameters, `requestContext.identity`.
pub fn v1(view: &View<'_>, context: &Context<'_>, resource: &str) -> Value {
    let c = collect(view);
    let last = |m: &BTreeMap<String, Vec<String>>| -> BTreeMap<String, String> {
        m.iter()
            .filter_map(|(k, v)| Some((k.clone(), v.last()?.clone())))
            .collect()
    };
    let or_null = |v: Value, empty: bool| if empty { Value::Null } else { v };
    let headers = last(&c.multi_headers);
    let query = last(&c.query);
    let identity = json!({
        "accessKey": null, "accountId": null, "caller": null, "cognitoAuthenticationProvider": null,
        "cognitoAuthenticationType": null, "cognitoIdentityId": null, "cognitoIdentityPoolId": null,
        "principalOrgId": null, "sourceIp": view.source_ip, "user": null,
        "userAgent": c.user_agent, "userArn": null,
    });
    let mut request_context = json!({
        "accountId": context.account,
        "apiId": context.api_id,
        "domainName": c.domain,
        "domainPrefix": context.api_id,
        "extendedRequestId": view.request_id,
        "httpMethod": view.parts.method.as_str(),
        "identity": identity,
        "path": view.path,
        "protocol": format!("{:?}", view.parts.version),
        "requestId": view.request_id,
        "requestTime": nimbus_types::time::clf(c.now),
        "requestTimeEpoch": c.now,
        "resourceId": context.route_key,
        "resourcePath": resource,
        "stage": context.stage,
    });
    if let Some(authorizer) = &context.authorizer {
        request_context["authorizer"] = Value::clone(authorizer);
    }
    let (body, base64) = match c.body {
        Some((body, base64)) => (Value::String(body), base64),
        None => (Value::Null, false),
    };
    json!({
        "version": "1.0",
        "resource": resource,
        "path": view.path,
        "httpMethod": view.parts.method.as_str(),
        "headers": headers,
        "multiValueHeaders": c.multi_headers,
        "queryStringParameters": or_null(json!(query), query.is_empty()),
        "multiValueQueryStringParameters": or_null(json!(c.query), c.query.is_empty()),
        "requestContext": request_context,
        "pathParameters": or_null(params_object(context.path_parameters), context.path_parameters.is_empty()),
        "stageVariables": context.stage_variables.filter(|v| !v.is_empty()).map_or(Value::Null, |v| json!(v)),
        "body": body,
        "isBase64Encoded": base64,
    })
}

/// A 1.0 result as a response: `statusCode` is required, `headers` and `multiValueHeaders`
/// both apply, the body is base64 if `isBase64Encoded`. `None` if it is not such a result.
pub fn interpret_v1(payload: &[u8]) -> Option<Response> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let object = value.as_object()?;
    let status =
        StatusCode::from_u16(u16::try_from(object.get("statusCode")?.as_u64()?).ok()?).ok()?;
    let body = body_of(object)?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    add_headers(h, object.get("headers"), false)?;
    add_headers(h, object.get("multiValueHeaders"), true)?;
    Some(response)
}

/// The body of a structured result: a string, base64-decoded if `isBase64Encoded`.
fn body_of(object: &serde_json::Map<String, Value>) -> Option<Bytes> {
    let base64 = object
        .get("isBase64Encoded")
        .and_then(Value::as_bool)
        .unwrap_or(false);
    Some(match object.get("body") {
        None | Some(Value::Null) => Bytes::new(),
        Some(Value::String(s)) if base64 => {
            Bytes::from(base64::engine::general_purpose::STANDARD.decode(s).ok()?)
        }
        Some(Value::String(s)) => Bytes::from(s.clone()),
        Some(other) => Bytes::from(other.to_string()),
    })
}

/// Adds a result's headers (`multi`: arrays of values) to a response.
fn add_headers(h: &mut axum::http::HeaderMap, headers: Option<&Value>, multi: bool) -> Option<()> {
    let Some(headers) = headers.filter(|v| !v.is_null()) else {
        return Some(());
    };
    for (name, value) in headers.as_object()? {
        let name = HeaderName::from_bytes(name.as_bytes()).ok()?;
        let values: Vec<&Value> = if multi {
            value.as_array()?.iter().collect()
        } else {
            vec![value]
        };
        for value in values {
            let value = match value {
                Value::String(s) => s.clone(),
                Value::Number(_) | Value::Bool(_) => value.to_string(),
                _ => return None,
            };
            let value = HeaderValue::from_str(&value).ok()?;
            if multi {
                h.append(name.clone(), value);
            } else {
                h.insert(name.clone(), value);
            }
        }
    }
    Some(())
}

/// The function's result as an HTTP response, as Lambda interprets it: an object with
/// `statusCode` gives the status, headers, cookies and body (base64 if `isBase64Encoded`); any
/// other JSON value is a 200 `application/json` response whose body is the value (a string's
/// own text). `None` if the result cannot be a response.
pub fn interpret_v2(payload: &[u8]) -> Option<Response> {
    let value: Value = serde_json::from_slice(payload).ok()?;
    let structured = value.as_object().filter(|o| o.contains_key("statusCode"));
    let Some(object) = structured else {
        let body = match &value {
            Value::String(s) => Bytes::from(s.clone()),
            _ => Bytes::copy_from_slice(payload),
        };
        let mut response = Response::new(Body::from(body));
        response.headers_mut().insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
        return Some(response);
    };
    let status = object
        .get("statusCode")
        .and_then(Value::as_u64)
        .and_then(|s| u16::try_from(s).ok())
        .and_then(|s| StatusCode::from_u16(s).ok())?;
    let body = body_of(object)?;
    let mut response = Response::new(Body::from(body));
    *response.status_mut() = status;
    let h = response.headers_mut();
    add_headers(h, object.get("headers"), false)?;
    if let Some(cookies) = object.get("cookies") {
        for cookie in cookies.as_array()? {
            h.append(
                axum::http::header::SET_COOKIE,
                HeaderValue::from_str(cookie.as_str()?).ok()?,
            );
        }
    }
    if !h.contains_key(axum::http::header::CONTENT_TYPE) {
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/json"),
        );
    }
    Some(response)
}

/// The request itself, for a function that serves HTTP (`wasi-http`): no event in between.
pub fn call(view: &View<'_>) -> HttpCall {
    let path_and_query = match view.parts.uri.query() {
        Some(query) => format!("{}?{query}", view.path),
        None => view.path.to_owned(),
    };
    let authority = view
        .parts
        .headers
        .get(axum::http::header::HOST)
        .and_then(|h| h.to_str().ok())
        .unwrap_or("localhost")
        .to_owned();
    let headers = view
        .parts
        .headers
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect();
    HttpCall {
        method: view.parts.method.as_str().to_owned(),
        scheme: "http".to_owned(),
        authority,
        path_and_query,
        headers,
        body: view.body.clone(),
    }
}

/// Headers that describe one connection, not the response: the gateway's own framing stands.
const CONNECTION_HEADERS: [&str; 6] = [
    "connection",
    "keep-alive",
    "transfer-encoding",
    "upgrade",
    "content-length",
    "proxy-connection",
];

/// The status and headers a streaming function gives its function URL response: the JSON
/// prelude `awslambda.HttpResponseStream.from` writes (`statusCode`, default 200, `headers`,
/// `cookies`) ahead of the body. `None` if it is not such an object.
pub fn stream_head(prelude: &[u8]) -> Option<Response> {
    let mut value: Value = if prelude.iter().all(u8::is_ascii_whitespace) {
        Value::Object(Default::default())
    } else {
        serde_json::from_slice(prelude).ok()?
    };
    let object = value.as_object_mut()?;
    object.entry("statusCode").or_insert(Value::from(200));
    object.remove("body");
    object.remove("isBase64Encoded");
    let named_type = object
        .get("headers")
        .and_then(Value::as_object)
        .is_some_and(|h| h.keys().any(|k| k.eq_ignore_ascii_case("content-type")));
    let mut response = interpret_v2(&serde_json::to_vec(&value).ok()?)?;
    let h = response.headers_mut();
    // A streamed body has no length known ahead, and is bytes unless the prelude says more.
    h.remove(axum::http::header::CONTENT_LENGTH);
    if !named_type {
        h.insert(
            axum::http::header::CONTENT_TYPE,
            HeaderValue::from_static("application/octet-stream"),
        );
    }
    Some(response)
}

/// A function's HTTP reply as the response. `None` if its status or a header is not valid HTTP.
pub fn answer(reply: HttpReply) -> Option<Response> {
    let mut response = Response::new(Body::from(reply.body));
    *response.status_mut() = StatusCode::from_u16(reply.status).ok()?;
    let h = response.headers_mut();
    for (name, value) in &reply.headers {
        if CONNECTION_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            continue;
        }
        h.append(
            HeaderName::from_bytes(name.as_bytes()).ok()?,
            HeaderValue::from_str(value).ok()?,
        );
    }
    Some(response)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stream_prelude_gives_status_headers_and_cookies() {
        let r =
            stream_head(br#"{"statusCode":201,"headers":{"x-a":"1"},"cookies":["c=1"]}"#).unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-a"], "1");
        assert_eq!(r.headers()["set-cookie"], "c=1");
        assert_eq!(stream_head(b"").unwrap().status(), 200);
        assert_eq!(stream_head(br#"{"headers":{}}"#).unwrap().status(), 200);
        assert!(stream_head(b"[1]").is_none());
        assert!(stream_head(b"not json").is_none());
        assert!(stream_head(br#"{"statusCode":1000}"#).is_none());
        // No content type in the prelude: the body is bytes.
        assert_eq!(
            stream_head(br#"{"statusCode":200}"#).unwrap().headers()["content-type"],
            "application/octet-stream"
        );
    }

    #[test]
    fn results_become_responses_as_lambda_interprets_them() {
        let r = interpret_v2(br#"{"message":"hi"}"#).unwrap();
        assert_eq!(r.status(), 200);
        assert_eq!(r.headers()["content-type"], "application/json");
        let r = interpret_v2(br#"{"statusCode":201,"headers":{"x-a":"1","x-n":2},"cookies":["a=1","b=2"],"body":"made"}"#).unwrap();
        assert_eq!(r.status(), 201);
        assert_eq!(r.headers()["x-n"], "2");
        assert_eq!(r.headers().get_all("set-cookie").iter().count(), 2);
        assert!(interpret_v2(br#"{"statusCode":"x"}"#).is_none());
        assert!(interpret_v2(br#"{"statusCode":99}"#).is_none());
        assert!(
            interpret_v2(br#"{"statusCode":200,"body":"!!","isBase64Encoded":true}"#).is_none()
        );
        assert!(interpret_v2(b"not json").is_none());
    }

    #[test]
    fn http_replies_keep_their_headers_but_not_the_connection_s() {
        let reply = HttpReply {
            status: 418,
            headers: vec![
                ("x-a".into(), "1".into()),
                ("x-a".into(), "2".into()),
                ("Transfer-Encoding".into(), "chunked".into()),
                ("connection".into(), "close".into()),
            ],
            body: Bytes::from_static(b"tea"),
        };
        let r = answer(reply).unwrap();
        assert_eq!(r.status(), 418);
        assert_eq!(r.headers().get_all("x-a").iter().count(), 2);
        assert!(r.headers().get("transfer-encoding").is_none());
        assert!(r.headers().get("connection").is_none());
        let bad = HttpReply {
            status: 42,
            headers: vec![],
            body: Bytes::new(),
        };
        assert!(answer(bad).is_none());
    }

    #[test]
    fn text_content_types() {
        for t in [
            "text/plain",
            "application/json; charset=utf-8",
            "application/ld+json",
        ] {
            assert!(is_text(Some(t)), "{t}");
        }
        for t in ["application/octet-stream", "image/png"] {
            assert!(!is_text(Some(t)), "{t}");
        }
        assert!(!is_text(None));
    }
}
