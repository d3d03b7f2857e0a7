//! Requests made inside the node (by a stack, by the console) and sent through its router,
//! where they meet the same routing, validation and authorization as a client's.

use axum::body::Body;
use axum::http::{Request, Response};

/// Sends a request through the node's router. The request carries its caller as an
/// extension (`nimbus_identity::InProcess`) instead of a signature.
#[async_trait::async_trait]
pub trait Dispatch: Send + Sync {
    async fn call(&self, request: Request<Body>) -> Response<Body>;
}
