//! Request bodies under limits: read whole for operations whose input is a document, or
//! streamed chunk by chunk for operations whose input is data (an object upload must not be
//! held in memory whole).

use axum::body::Body;
use axum::http::HeaderMap;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};

use crate::ErrorEnvelope;

/// The `Content-Length` a request declares, if any.
pub fn declared_length(headers: &HeaderMap) -> Option<u64> {
    headers
        .get(axum::http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok())
}

/// Reads a whole request body, refusing more than `limit` bytes (before reading anything if
/// `Content-Length` already says so) with the protocol's own error.
pub async fn read<E: ErrorEnvelope>(
    headers: &HeaderMap,
    body: Body,
    limit: u64,
    operation: &str,
) -> Result<Bytes, E> {
    if declared_length(headers).is_some_and(|len| len > limit) {
        return Err(E::too_large(limit, operation));
    }
    axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|e| {
            let is_limit = std::error::Error::source(&e)
                .is_some_and(|s| s.is::<http_body_util::LengthLimitError>());
            if is_limit {
                E::too_large(limit, operation)
            } else {
                E::malformed(format!("could not read the request body: {e}"))
            }
        })
}

/// Why a streamed body stopped.
#[derive(Debug)]
pub enum StreamError {
    /// More than the limit arrived.
    TooLarge(u64),
    /// The connection failed or the client stopped sending.
    Read(String),
}

impl std::fmt::Display for StreamError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::TooLarge(limit) => write!(f, "the body is larger than {limit} bytes"),
            Self::Read(e) => write!(f, "could not read the body: {e}"),
        }
    }
}

impl std::error::Error for StreamError {}

/// A request body as a stream of chunks, failing with [`StreamError::TooLarge`] as soon as
/// more than `limit` bytes have arrived. Nothing is buffered beyond the chunk in hand.
pub fn stream(body: Body, limit: u64) -> impl Stream<Item = Result<Bytes, StreamError>> + Send {
    let mut seen = 0u64;
    body.into_data_stream().map(move |chunk| {
        let chunk = chunk.map_err(|e| StreamError::Read(e.to_string()))?;
        seen += chunk.len() as u64;
        if seen > limit {
            return Err(StreamError::TooLarge(limit));
        }
        Ok(chunk)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use axum::response::{IntoResponse, Response};

    #[derive(Debug, PartialEq)]
    enum Failure {
        TooLarge(u64, String),
        Malformed,
        Unknown,
    }

    impl IntoResponse for Failure {
        fn into_response(self) -> Response {
            axum::http::StatusCode::BAD_REQUEST.into_response()
        }
    }

    impl ErrorEnvelope for Failure {
        fn too_large(limit: u64, operation: &str) -> Self {
            Self::TooLarge(limit, operation.to_owned())
        }
        fn malformed(_: String) -> Self {
            Self::Malformed
        }
        fn unknown_operation(_: &str) -> Self {
            Self::Unknown
        }
        fn unauthenticated(_: &crate::sigv4::AuthError) -> Self {
            Self::Malformed
        }
        fn access_denied(_: String) -> Self {
            Self::Malformed
        }
    }

    fn chunked(parts: Vec<&'static [u8]>) -> Body {
        let chunks = futures_util::stream::iter(
            parts
                .into_iter()
                .map(|p| Ok::<_, std::io::Error>(Bytes::from_static(p))),
        );
        Body::from_stream(chunks)
    }

    #[tokio::test]
    async fn a_declared_length_over_the_limit_is_refused_unread() {
        let mut headers = HeaderMap::new();
        headers.insert("content-length", "11".parse().unwrap());
        let got = read::<Failure>(&headers, Body::from("hello world"), 10, "Op").await;
        assert_eq!(got, Err(Failure::TooLarge(10, "Op".into())));
    }

    #[tokio::test]
    async fn an_undeclared_body_over_the_limit_is_refused() {
        let body = chunked(vec![b"hello ", b"world"]);
        let got = read::<Failure>(&HeaderMap::new(), body, 10, "Op").await;
        assert_eq!(got, Err(Failure::TooLarge(10, "Op".into())));
        let body = chunked(vec![b"hello ", b"you"]);
        let got = read::<Failure>(&HeaderMap::new(), body, 10, "Op").await;
        assert_eq!(got.unwrap(), Bytes::from_static(b"hello you"));
    }

    #[tokio::test]
    async fn a_stream_yields_chunks_until_the_limit() {
        let body = chunked(vec![b"aaaa", b"bbbb", b"cccc"]);
        let got: Vec<_> = stream(body, 10).collect().await;
        assert_eq!(got.len(), 3);
        assert_eq!(got[0].as_ref().unwrap(), &Bytes::from_static(b"aaaa"));
        assert_eq!(got[1].as_ref().unwrap(), &Bytes::from_static(b"bbbb"));
        assert!(matches!(got[2], Err(StreamError::TooLarge(10))));
        let body = chunked(vec![b"aaaa", b"bbbb"]);
        let total: usize = stream(body, 8)
            .map(|c| c.unwrap().len())
            .fold(0, |a, b| async move { a + b })
            .await;
        assert_eq!(total, 8);
    }
}
