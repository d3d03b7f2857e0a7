//! An in-process test harness: a whole node (every component the binary wires) on a loopback
//! port chosen by the kernel, with a temporary data directory, driven through its real HTTP
//! APIs. It runs WebAssembly functions only (process sandboxes need root and the `nimbus`
//! executable as their helper), so it needs no privileges and no network beyond loopback.
//!
//! Function fixtures are the wasm modules `tests/fixtures/build.sh` builds into
//! `target/fixtures` (the test command builds them before the unit tests).

#![allow(dead_code)]

use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

pub struct TestNode {
    pub endpoint: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<anyhow::Result<()>>>,
    agent: ureq::Agent,
    _dir: tempfile::TempDir,
}

pub struct Reply {
    pub status: u16,
    pub headers: ureq::http::HeaderMap,
    pub body: Vec<u8>,
}

impl Reply {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(&self.body)))
    }

    /// Asserts the status, showing the body when it is another.
    pub fn expect_status(&self, status: u16) -> &Self {
        assert_eq!(
            self.status,
            status,
            "{}",
            String::from_utf8_lossy(&self.body)
        );
        self
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The text of the first `<tag>` element of an XML body, unescaped for `&amp;`-style
    /// entities only as far as the tests need.
    pub fn xml(&self, tag: &str) -> Option<String> {
        let text = String::from_utf8_lossy(&self.body);
        let open = format!("<{tag}>");
        let start = text.find(&open)? + open.len();
        let end = text[start..].find(&format!("</{tag}>"))? + start;
        Some(
            text[start..end]
                .replace("&quot;", "\"")
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&apos;", "'")
                .replace("&amp;", "&"),
        )
    }

    /// The error code of an AWS JSON-protocol error (`__type`, last segment) or Lambda's
    /// `x-amzn-ErrorType`.
    pub fn error_code(&self) -> String {
        if let Some(t) = self.header("x-amzn-ErrorType") {
            return t.split(':').next().unwrap_or(t).to_owned();
        }
        let v = self.json();
        v["__type"]
            .as_str()
            .map(|t| t.rsplit('#').next().unwrap_or(t).to_owned())
            .unwrap_or_default()
    }
}

/// A trust policy that lets Lambda assume a role.
pub const LAMBDA_TRUST: &str = r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Principal":{"Service":"lambda.amazonaws.com"},"Action":"sts:AssumeRole"}]}"#;

/// The administrator key every test node is started with; requests are signed with it.
pub const TEST_KEY_ID: &str = "NKIATESTADMIN0000001";
pub const TEST_SECRET: &str = "testsecret/0123456789abcdefghijklmnopqrstu";

/// The service a request to the node is signed for.
fn service_of(method: &str, path: &str, headers: &[(&str, &str)]) -> &'static str {
    let target = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
        .map(|(_, v)| *v);
    nimbus_gateway::signing_service(method, path, target)
}

impl TestNode {
    /// Starts a node with the default configuration, process sandboxes off.
    pub fn start() -> Self {
        Self::start_with(|_| {})
    }

    pub fn start_with(configure: impl FnOnce(&mut nimbus::config::NodeConfig)) -> Self {
        let dir = tempfile::tempdir().expect("a temporary directory");
        let mut config = nimbus::config::NodeConfig {
            data_dir: dir.path().join("data"),
            ..Default::default()
        };
        config.sandboxes.process = false;
        config.auth.admin_access_key_id = Some(TEST_KEY_ID.to_owned());
        config.auth.admin_secret_access_key = Some(TEST_SECRET.to_owned());
        configure(&mut config);
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
        let (addr_tx, addr_rx) = std::sync::mpsc::channel();
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()?;
            runtime.block_on(async move {
                let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
                let shutdown = async move {
                    let _ = stop_rx.await;
                };
                let served = nimbus::node::serve(config, listener, shutdown, move |addr| {
                    let _ = addr_tx.send(addr);
                    Ok(())
                })
                .await;
                if let Err(e) = &served {
                    eprintln!("the node stopped: {e:#}");
                }
                served
            })
        });
        let addr = addr_rx
            .recv_timeout(Duration::from_secs(60))
            .expect("the node did not start");
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(60)))
            .build()
            .into();
        let node = Self {
            endpoint: format!("http://{addr}"),
            stop: Some(stop_tx),
            thread: Some(thread),
            agent,
            _dir: dir,
        };
        // The execution role [`TestNode::deploy`] names.
        let role = node.iam(
            "CreateRole",
            &[
                ("RoleName", "test"),
                ("AssumeRolePolicyDocument", LAMBDA_TRUST),
            ],
        );
        // A node started again on the same data already has it.
        assert!(
            role.status == 200 || role.status == 409,
            "{}",
            String::from_utf8_lossy(&role.body)
        );
        node
    }

    /// An IAM Query-protocol request signed as the administrator.
    pub fn iam(&self, action: &str, params: &[(&str, &str)]) -> Reply {
        self.iam_as(Some((TEST_KEY_ID, TEST_SECRET)), action, params)
    }

    /// An IAM request signed with `key`.
    pub fn iam_as(
        &self,
        key: Option<(&str, &str)>,
        action: &str,
        params: &[(&str, &str)],
    ) -> Reply {
        let mut form = form_urlencoded::Serializer::new(String::new());
        form.append_pair("Action", action);
        form.append_pair("Version", "2010-05-08");
        for (k, v) in params {
            form.append_pair(k, v);
        }
        let body = form.finish();
        self.call_as(
            key,
            "POST",
            "/",
            &[(
                "content-type",
                "application/x-www-form-urlencoded; charset=utf-8",
            )],
            body.as_bytes(),
        )
    }

    /// A request signed with the administrator key.
    pub fn call(&self, method: &str, path: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.call_as(
            Some((TEST_KEY_ID, TEST_SECRET)),
            method,
            path,
            headers,
            body,
        )
    }

    /// A request signed with `key` (id and secret), or not signed at all.
    pub fn call_as(
        &self,
        key: Option<(&str, &str)>,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Reply {
        let mut builder = ureq::http::Request::builder()
            .method(method)
            .uri(format!("{}{path}", self.endpoint));
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if let Some((id, secret)) = key {
            let host = self.endpoint.trim_start_matches("http://").to_owned();
            let mut signed: Vec<(&str, &str)> = headers.to_vec();
            if !signed.iter().any(|(k, _)| k.eq_ignore_ascii_case("host")) {
                signed.push(("host", &host));
            }
            let (raw_path, raw_query) = match path.split_once('?') {
                Some((p, q)) => (p, Some(q)),
                None => (path, None),
            };
            let request = nimbus_aws_wire::sigv4::Request {
                method,
                raw_path,
                raw_query,
                headers: signed,
                payload_hash: nimbus_aws_wire::sigv4::payload_hash(body),
            };
            let now = nimbus_types::time::now_ms().div_euclid(1000);
            let (date, authorization) = nimbus_aws_wire::sigv4::sign(
                &request,
                id,
                secret,
                "us-east-1",
                service_of(method, raw_path, headers),
                now,
            );
            builder = builder
                .header("x-amz-date", date)
                .header("authorization", authorization);
        }
        let request = builder.body(body.to_vec()).expect("a request");
        let mut response = self.agent.run(request).expect("the node answers");
        Reply {
            status: response.status().as_u16(),
            headers: response.headers().clone(),
            body: response
                .body_mut()
                .with_config()
                .limit(64 << 20)
                .read_to_vec()
                .expect("a body"),
        }
    }

    pub fn lambda(&self, method: &str, path: &str, body: Value) -> Reply {
        self.lambda_as((TEST_KEY_ID, TEST_SECRET), method, path, body)
    }

    /// A JSON request (Lambda's, nimbus's) signed with `key`.
    pub fn lambda_as(&self, key: (&str, &str), method: &str, path: &str, body: Value) -> Reply {
        let bytes = if body.is_null() {
            Vec::new()
        } else {
            body.to_string().into_bytes()
        };
        self.call_as(
            Some(key),
            method,
            path,
            &[("content-type", "application/json")],
            &bytes,
        )
    }

    /// An operation of a JSON-protocol service (`X-Amz-Target: SERVICE.OPERATION`).
    pub fn target(&self, service: &str, version: &str, operation: &str, input: Value) -> Reply {
        self.target_as(
            (TEST_KEY_ID, TEST_SECRET),
            service,
            version,
            operation,
            input,
        )
    }

    /// An operation of a JSON-protocol service signed with `key`.
    pub fn target_as(
        &self,
        key: (&str, &str),
        service: &str,
        version: &str,
        operation: &str,
        input: Value,
    ) -> Reply {
        let target = format!("{service}.{operation}");
        let content_type = format!("application/x-amz-json-{version}");
        self.call_as(
            Some(key),
            "POST",
            "/",
            &[("x-amz-target", &target), ("content-type", &content_type)],
            input.to_string().as_bytes(),
        )
    }

    pub fn sqs(&self, operation: &str, input: Value) -> Reply {
        self.target("AmazonSQS", "1.0", operation, input)
    }

    /// Deploys a wasm fixture as a function; returns its name.
    pub fn deploy(&self, name: &str, fixture: &str, extra: Value) -> String {
        let mut body = json!({
            "FunctionName": name,
            "Runtime": "wasm32-wasip1",
            "Handler": "function.wasm",
            "Role": "arn:aws:iam::000000000000:role/test",
            "Code": {"ZipFile": wasm_zip_base64(fixture)},
        });
        if let (Some(b), Some(e)) = (body.as_object_mut(), extra.as_object()) {
            for (k, v) in e {
                b.insert(k.clone(), v.clone());
            }
        }
        let reply = self.lambda("POST", "/2015-03-31/functions", body);
        assert_eq!(
            reply.status,
            201,
            "{}",
            String::from_utf8_lossy(&reply.body)
        );
        name.to_owned()
    }

    pub fn invoke(&self, name: &str, payload: &[u8]) -> Reply {
        self.call(
            "POST",
            &format!("/2015-03-31/functions/{name}/invocations"),
            &[],
            payload,
        )
    }

    /// Stops the node as SIGTERM would, and waits for it.
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            match thread.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => panic!("the node failed: {e:#}"),
                Err(_) => panic!("the node panicked"),
            }
        }
    }
}

impl Drop for TestNode {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.shutdown();
        } else if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

pub fn fixture(name: &str) -> PathBuf {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = root.join("target/fixtures").join(format!("{name}.wasm"));
    assert!(
        path.exists(),
        "{} is missing: build the fixtures first (bash tests/fixtures/build.sh)",
        path.display()
    );
    path
}

pub fn wasm_zip_base64(name: &str) -> String {
    use base64::Engine;
    use std::io::Write;
    let module = std::fs::read(fixture(name)).expect("the fixture");
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file("function.wasm", zip::write::SimpleFileOptions::default())
        .expect("a zip entry");
    zip.write_all(&module).expect("zip");
    let bytes = zip.finish().expect("a zip").into_inner();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

/// Polls `check` until it returns Some, for up to `timeout`.
pub fn eventually<T>(timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = check() {
            return v;
        }
        assert!(
            Instant::now() < deadline,
            "condition not reached in {timeout:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}
