//! CORS for browsers: preflights (`OPTIONS`, never signed) are answered from the bucket's
//! rules before anything else; an actual request that carries an `Origin` gets the matching
//! rule's headers on its response, whatever the response.

use axum::http::header::{HeaderName, HeaderValue};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use nimbus_objects::{Objects, cors_match};

/// The bucket a request names: in a virtual host under `domain`, or first in the path.
pub(crate) fn bucket_of(parts: &Parts, domain: &str) -> Option<String> {
    let host = nimbus_host(parts);
    if let Some(host) = host
        && let Some(bucket) = host
            .strip_suffix(domain)
            .and_then(|b| b.strip_suffix('.'))
            .filter(|b| !b.is_empty())
    {
        return Some(bucket.to_owned());
    }
    let path = parts.uri.path().trim_start_matches('/');
    let bucket = path.split('/').next().filter(|b| !b.is_empty())?;
    Some(bucket.to_owned())
}

fn nimbus_host(parts: &Parts) -> Option<String> {
    let host = parts.headers.get("host")?.to_str().ok()?;
    let name = host.rsplit_once(':').map_or(host, |(n, _)| n);
    Some(name.trim_end_matches('.').to_ascii_lowercase())
}

fn header<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts.headers.get(name).and_then(|v| v.to_str().ok())
}

fn set(response: &mut Response, name: &'static str, value: &str) {
    if let Ok(v) = HeaderValue::from_str(value) {
        response
            .headers_mut()
            .insert(HeaderName::from_static(name), v);
    }
}

fn forbidden(message: &str) -> Response {
    crate::error_response(StatusCode::FORBIDDEN, "AccessForbidden", message)
}

/// Answers a preflight from the bucket's rules.
pub(crate) fn preflight(objects: &Objects, parts: &Parts, domain: &str) -> Response {
    let (Some(origin), Some(method)) = (
        header(parts, "origin"),
        header(parts, "access-control-request-method"),
    ) else {
        return crate::error_response(
            StatusCode::BAD_REQUEST,
            "BadRequest",
            "Insufficient information. Origin request header needed.",
        );
    };
    let requested: Vec<&str> = header(parts, "access-control-request-headers")
        .map(|h| {
            h.split(',')
                .map(str::trim)
                .filter(|h| !h.is_empty())
                .collect()
        })
        .unwrap_or_default();
    let rules = bucket_of(parts, domain)
        .and_then(|b| objects.bucket(&b).ok().flatten())
        .map(|b| b.cors.clone())
        .unwrap_or_default();
    if rules.is_empty() {
        return forbidden("CORSResponse: CORS is not enabled for this bucket.");
    }
    let Some(rule) = cors_match(&rules, origin, method, &requested) else {
        return forbidden(
            "CORSResponse: This CORS request is not allowed. This is usually because the \
             evaluation of Origin, request method / Access-Control-Request-Method or \
             Access-Control-Request-Headers are not whitelisted by the resource's CORS spec.",
        );
    };
    let mut response = Response::new(axum::body::Body::empty());
    allow(&mut response, rule, origin);
    set(
        &mut response,
        "access-control-allow-methods",
        &rule.allowed_methods.join(", "),
    );
    if !requested.is_empty() {
        set(
            &mut response,
            "access-control-allow-headers",
            &requested.join(", "),
        );
    }
    if let Some(age) = rule.max_age_seconds {
        set(&mut response, "access-control-max-age", &age.to_string());
    }
    response
}

fn allow(response: &mut Response, rule: &nimbus_objects::CorsRule, origin: &str) {
    let any = rule.allowed_origins.iter().any(|o| o == "*");
    set(
        response,
        "access-control-allow-origin",
        if any { "*" } else { origin },
    );
    if !any {
        set(response, "access-control-allow-credentials", "true");
    }
    if !rule.expose_headers.is_empty() {
        set(
            response,
            "access-control-expose-headers",
            &rule.expose_headers.join(", "),
        );
    }
    set(
        response,
        "vary",
        "Origin, Access-Control-Request-Headers, Access-Control-Request-Method",
    );
}

/// An actual request from a page: what its response needs to be shown to the page.
pub(crate) struct Actual {
    bucket: String,
    origin: String,
    method: Method,
}

impl Actual {
    pub(crate) fn of(parts: &Parts, domain: &str) -> Option<Self> {
        Some(Self {
            origin: header(parts, "origin")?.to_owned(),
            bucket: bucket_of(parts, domain)?,
            method: parts.method.clone(),
        })
    }

    pub(crate) fn decorate(&self, objects: &Objects, response: &mut Response) {
        let Some(record) = objects.bucket(&self.bucket).ok().flatten() else {
            return;
        };
        if let Some(rule) = cors_match(&record.cors, &self.origin, self.method.as_str(), &[]) {
            allow(response, rule, &self.origin);
        }
    }
}
