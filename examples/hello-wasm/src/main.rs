//! A nimbus function for the `wasm32-wasip1` runtime.
//!
//! The invocation event (JSON) arrives on stdin, the result is written to
//! stdout and anything written to stderr ends up in the function's log.

use std::io::{self, Read, Write};
use std::process::ExitCode;

use serde::{Deserialize, Serialize};

#[derive(Deserialize, Default)]
struct Event {
    name: Option<String>,
}

#[derive(Serialize)]
struct Response {
    message: String,
}

fn run() -> Result<(), Box<dyn std::error::Error>> {
    let mut input = String::new();
    io::stdin().read_to_string(&mut input)?;

    // An empty payload is treated like `{}`.
    let event: Event = if input.trim().is_empty() {
        Event::default()
    } else {
        serde_json::from_str(&input)?
    };
    let name = event.name.unwrap_or_else(|| "world".to_string());

    let function = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
    eprintln!("hello-wasm: function={function:?} greeting {name:?}");

    let response = Response {
        message: format!("Hello, {name}!"),
    };
    let mut out = io::stdout().lock();
    serde_json::to_writer(&mut out, &response)?;
    out.flush()?;
    Ok(())
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("hello-wasm: error: {err}");
            ExitCode::FAILURE
        }
    }
}
