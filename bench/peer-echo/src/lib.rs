//! Benchmark peer: a `wasi:http/proxy` component that answers every request
//! with `200 OK` and the request body echoed back as `application/json`.
//!
//! Serve it with:
//!
//! ```sh
//! wasmtime serve -S cli=y -O pooling-allocator=y target/wasm32-wasip2/release/peer_echo.wasm
//! ```

use std::io::{Read, Write};

use wasi::exports::http::incoming_handler::Guest;
use wasi::http::types::{
    Fields, IncomingBody, IncomingRequest, OutgoingBody, OutgoingResponse, ResponseOutparam,
};

struct PeerEcho;

wasi::http::proxy::export!(PeerEcho);

impl Guest for PeerEcho {
    fn handle(request: IncomingRequest, response_out: ResponseOutparam) {
        match read_body(&request) {
            Ok(body) => respond(response_out, 200, "application/json", &body),
            Err(msg) => respond(response_out, 400, "text/plain", msg.as_bytes()),
        }
    }
}

/// Reads the whole incoming request body.
fn read_body(request: &IncomingRequest) -> Result<Vec<u8>, String> {
    let body = request
        .consume()
        .map_err(|()| "request body already consumed".to_string())?;
    let mut data = Vec::new();
    {
        let mut stream = body
            .stream()
            .map_err(|()| "request body stream unavailable".to_string())?;
        stream
            .read_to_end(&mut data)
            .map_err(|e| format!("reading request body: {e}"))?;
        // The stream must be dropped before the body is finished.
    }
    drop(IncomingBody::finish(body));
    Ok(data)
}

/// Sends a complete response with the given status, content type and body.
fn respond(response_out: ResponseOutparam, status: u16, content_type: &str, body: &[u8]) {
    let headers = Fields::from_list(&[
        ("content-type".to_string(), content_type.as_bytes().to_vec()),
        (
            "content-length".to_string(),
            body.len().to_string().into_bytes(),
        ),
    ])
    .expect("valid response headers");
    let response = OutgoingResponse::new(headers);
    response.set_status_code(status).expect("valid status code");
    let outgoing = response.body().expect("response body taken once");
    ResponseOutparam::set(response_out, Ok(response));

    {
        let mut stream = outgoing.write().expect("response body stream taken once");
        // Errors here mean the client went away; nothing useful can be done.
        if stream.write_all(body).is_err() || stream.blocking_flush().is_err() {
            return;
        }
    }
    let _ = OutgoingBody::finish(outgoing, None);
}
