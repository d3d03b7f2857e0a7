//! The JSON 1.0/1.1 protocols: `POST /` with `X-Amz-Target: Service.Operation` and a JSON
//! body, answered with `application/x-amz-json-1.x`.

use axum::http::HeaderMap;
use axum::response::{IntoResponse, Response};

/// Which JSON protocol a service speaks (only the content type differs).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JsonVersion {
    V1_0,
    V1_1,
}

impl JsonVersion {
    /// The version the service of an `X-Amz-Target` value speaks: 1.0 for SQS and DynamoDB
    /// (and its streams), 1.1 for EventBridge and Cognito.
    pub fn of_target(target: &str) -> Self {
        if target.starts_with("DynamoDB") || target.starts_with("AmazonSQS") {
            Self::V1_0
        } else {
            Self::V1_1
        }
    }

    pub fn content_type(self) -> [(&'static str, &'static str); 1] {
        match self {
            Self::V1_0 => [("content-type", "application/x-amz-json-1.0")],
            Self::V1_1 => [("content-type", "application/x-amz-json-1.1")],
        }
    }
}

/// The service prefix and operation of an `X-Amz-Target` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target<'a> {
    pub service: &'a str,
    pub operation: &'a str,
}

impl<'a> Target<'a> {
    /// `AmazonSQS.SendMessage` → (`AmazonSQS`, `SendMessage`); the service may itself contain
    /// dots or underscores (`DynamoDB_20120810.GetItem`), the operation may not.
    pub fn parse(headers: &'a HeaderMap) -> Option<Self> {
        let value = headers.get("x-amz-target")?.to_str().ok()?;
        let (service, operation) = value.rsplit_once('.')?;
        let valid = !service.is_empty()
            && !operation.is_empty()
            && value.len() <= 256
            && operation.bytes().all(|b| b.is_ascii_alphanumeric());
        valid.then_some(Self { service, operation })
    }
}

/// Reads a JSON-protocol request's input: a JSON object of at most `limit` bytes (an empty
/// body is an empty object), or the protocol's error.
pub async fn read_input<E: crate::ErrorEnvelope>(
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: u64,
    operation: &str,
) -> Result<serde_json::Value, E> {
    let body = crate::body::read::<E>(headers, body, limit, operation).await?;
    if body.is_empty() {
        return Ok(serde_json::Value::Object(Default::default()));
    }
    match serde_json::from_slice(&body) {
        Ok(v @ serde_json::Value::Object(_)) => Ok(v),
        _ => Err(E::malformed(
            "The request body is not a JSON object.".into(),
        )),
    }
}

/// A request member, if present and not null.
pub fn field<'a>(input: &'a serde_json::Value, name: &str) -> Option<&'a serde_json::Value> {
    input.get(name).filter(|v| !v.is_null())
}

/// A string member, if present; another type is the protocol's malformed-request error.
pub fn string<'a, E: crate::ErrorEnvelope>(
    input: &'a serde_json::Value,
    name: &str,
) -> Result<Option<&'a str>, E> {
    match field(input, name) {
        None => Ok(None),
        Some(serde_json::Value::String(s)) => Ok(Some(s)),
        Some(_) => Err(E::malformed(format!("{name} must be a string"))),
    }
}

/// A successful JSON-protocol answer.
pub fn ok(version: JsonVersion, output: &serde_json::Value) -> Response {
    (version.content_type(), output.to_string()).into_response()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(target: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert("x-amz-target", target.parse().unwrap());
        h
    }

    #[test]
    fn targets_split_at_the_last_dot() {
        let h = headers("AmazonSQS.SendMessage");
        let t = Target::parse(&h).unwrap();
        assert_eq!((t.service, t.operation), ("AmazonSQS", "SendMessage"));
        let h = headers("DynamoDB_20120810.GetItem");
        let t = Target::parse(&h).unwrap();
        assert_eq!((t.service, t.operation), ("DynamoDB_20120810", "GetItem"));
        let h = headers("AWSCognitoIdentityProviderService.InitiateAuth");
        assert_eq!(Target::parse(&h).unwrap().operation, "InitiateAuth");
        for bad in ["", "NoDot", ".Op", "Svc.", "Svc.Op-x"] {
            let h = if bad.is_empty() {
                HeaderMap::new()
            } else {
                headers(bad)
            };
            assert!(Target::parse(&h).is_none(), "{bad:?} parsed");
        }
    }
}
