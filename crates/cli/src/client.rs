//! The client commands: they talk to a node over its HTTP API, like any other client.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context, bail};
use base64::Engine;
use nimbus_types::UsageReport;
use serde_json::{Value, json};

use nimbus::config::{DEFAULT_ENDPOINT, ENV_ENDPOINT};

#[derive(Debug, clap::Args)]
pub struct EndpointArg {
    /// URL of the node's API.
    #[arg(long, env = ENV_ENDPOINT, default_value = DEFAULT_ENDPOINT)]
    pub(crate) endpoint: String,
}

#[derive(Debug, clap::Args)]
pub struct DeployArgs {
    /// Function name, to deploy one function (with --wasm or --zip). Without it, the
    /// application in template.yaml or serverless.yml is deployed as a stack.
    name: Option<String>,
    /// A WebAssembly module to deploy; it is packaged as `function.wasm`.
    #[arg(long, conflicts_with = "zip", requires = "name")]
    wasm: Option<PathBuf>,
    /// A zip package to deploy (with --handler).
    #[arg(long, requires = "handler")]
    zip: Option<PathBuf>,
    /// Path of the module inside the zip.
    #[arg(long)]
    handler: Option<String>,
    #[arg(long, default_value = "wasm32-wasip1")]
    runtime: String,
    /// Memory in MB (128–10240).
    #[arg(long)]
    memory: Option<u32>,
    /// Timeout in seconds (1–900).
    #[arg(long)]
    timeout: Option<u32>,
    /// An environment variable, KEY=VALUE; repeat for more. Replaces the function's variables.
    #[arg(long = "env", value_name = "KEY=VALUE")]
    env: Vec<String>,
    #[arg(long)]
    description: Option<String>,
    #[command(flatten)]
    manifest: crate::stack::ManifestArgs,
    /// Plan only: print the changes and stop before applying them.
    #[arg(long)]
    dry_run: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct InvokeArgs {
    name: String,
    /// The event, as JSON.
    #[arg(long, conflicts_with = "payload_file")]
    payload: Option<String>,
    /// A file holding the event.
    #[arg(long)]
    payload_file: Option<PathBuf>,
    /// Also print the invocation's log to stderr.
    #[arg(long)]
    log: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct LogsArgs {
    name: String,
    /// Keep printing new log entries as they arrive.
    #[arg(long, short)]
    follow: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct UsageArgs {
    /// Only count invocations since then: a duration back from now (30m, 12h, 7d) or unix milliseconds.
    #[arg(long)]
    since: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    /// List one function's usage records (one per invocation) instead of the report.
    #[arg(long, value_name = "NAME")]
    function: Option<String>,
    /// Report on this account (its 12-digit id; the node's operator only) instead of the
    /// caller's own.
    #[arg(long, value_name = "ID")]
    account: Option<String>,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct AccountsArgs {
    #[command(subcommand)]
    command: AccountsCommand,
}

#[derive(Debug, clap::Subcommand)]
enum AccountsCommand {
    /// Create an account and its administrator key; prints the key as an aws CLI profile.
    Create {
        /// A name for people: 1 to 50 of A-Z, a-z, 0-9, - and _.
        name: String,
        /// Print the answer as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        endpoint: EndpointArg,
    },
    /// List the node's accounts.
    List {
        /// Print the list as JSON.
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        endpoint: EndpointArg,
    },
}

#[derive(Debug, clap::Args)]
pub struct EventsArgs {
    name: String,
    /// Send this dead-lettered event (by id) back to the function.
    #[arg(long, value_name = "ID")]
    replay: Option<String>,
    /// Print the report as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct QueuesArgs {
    /// Print the list as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct StatusArgs {
    /// Print the status as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

pub(crate) struct Api {
    pub(crate) base: String,
    agent: ureq::Agent,
    /// The access key requests are signed with, if any was found.
    credentials: Option<(String, String)>,
}

/// The key the CLI signs with: `NIMBUS_ADMIN_ACCESS_KEY_ID` and
/// `NIMBUS_ADMIN_SECRET_ACCESS_KEY`, else the administrator key the node wrote to its data
/// directory (`NIMBUS_DATA_DIR`, or `./nimbus-data`), else `AWS_ACCESS_KEY_ID` and
/// `AWS_SECRET_ACCESS_KEY`.
fn credentials() -> Option<(String, String)> {
    use nimbus::config::{DEFAULT_DATA_DIR, ENV_ADMIN_KEY_ID, ENV_ADMIN_SECRET, ENV_DATA_DIR};
    let pair =
        |id: &str, secret: &str| Some((std::env::var(id).ok()?, std::env::var(secret).ok()?));
    pair(ENV_ADMIN_KEY_ID, ENV_ADMIN_SECRET)
        .or_else(|| {
            let dir = std::env::var(ENV_DATA_DIR).unwrap_or_else(|_| DEFAULT_DATA_DIR.to_owned());
            nimbus_identity::read_credentials(
                &std::path::Path::new(&dir).join(nimbus_identity::ADMIN_CREDENTIALS),
            )
        })
        .or_else(|| pair("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"))
}

/// The service a request to the node is signed for.
fn service_of(method: &str, path: &str, headers: &[(&str, &str)]) -> &'static str {
    let target = headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case("x-amz-target"))
        .map(|(_, v)| *v);
    nimbus_gateway::signing_service(method, path, target)
}

pub(crate) struct Reply {
    pub(crate) status: u16,
    headers: ureq::http::HeaderMap,
    pub(crate) body: Vec<u8>,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub(crate) fn ok(self) -> anyhow::Result<Reply> {
        if (200..300).contains(&self.status) {
            return Ok(self);
        }
        let kind = self
            .header("x-amzn-ErrorType")
            .unwrap_or("error")
            .to_owned();
        let message = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| {
                v.get("Message")
                    .or(v.get("message"))
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_else(|| String::from_utf8_lossy(&self.body).into_owned());
        bail!("{kind}: {message}")
    }

    pub(crate) fn json(&self) -> anyhow::Result<Value> {
        serde_json::from_slice(&self.body).context("the node answered with invalid JSON")
    }
}

impl Api {
    pub(crate) fn new(endpoint: &EndpointArg) -> Self {
        let agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .timeout_global(Some(Duration::from_secs(960)))
            .build()
            .into();
        Self {
            base: endpoint.endpoint.trim_end_matches('/').to_owned(),
            agent,
            credentials: credentials(),
        }
    }

    pub(crate) fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        self.call_as(
            service_of(method, path, headers),
            method,
            path,
            headers,
            body,
        )
    }

    /// A call signed for `service` (S3's and CloudFormation's, which the path does not tell).
    pub(crate) fn call_as(
        &self,
        service: &str,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Option<Vec<u8>>,
    ) -> anyhow::Result<Reply> {
        let url = format!("{}{path}", self.base);
        let body = body.unwrap_or_default();
        // S3 wants the payload's hash in a header of its own, signed with the rest.
        let content_hash = nimbus_aws_wire::sigv4::payload_hash(&body);
        let mut with_hash: Vec<(&str, &str)> = headers.to_vec();
        if service == "s3" {
            with_hash.push(("x-amz-content-sha256", content_hash.as_str()));
        }
        let headers = with_hash.as_slice();
        let mut builder = ureq::http::Request::builder().method(method).uri(&url);
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        if let Some((key, secret)) = &self.credentials {
            let uri: ureq::http::Uri = url.parse().context("the endpoint is not a URL")?;
            let host = uri
                .authority()
                .map(|a| a.as_str())
                .unwrap_or_default()
                .to_owned();
            let mut signed_headers = vec![("host", host.as_str())];
            signed_headers.extend(headers.iter().copied());
            let request = nimbus_aws_wire::sigv4::Request {
                method,
                raw_path: uri.path(),
                raw_query: uri.query(),
                headers: signed_headers,
                payload_hash: content_hash.clone(),
            };
            let now = nimbus_types::time::now_ms().div_euclid(1000);
            let (date, authorization) = nimbus_aws_wire::sigv4::sign(
                &request,
                key,
                secret,
                nimbus_types::name::DEFAULT_REGION,
                service,
                now,
            );
            builder = builder
                .header("x-amz-date", date)
                .header("authorization", authorization);
        }
        let request = builder.body(body)?;
        let mut response = self
            .agent
            .run(request)
            .with_context(|| format!("could not reach the node at {}", self.base))?;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response
            .body_mut()
            .with_config()
            .limit(64 << 20)
            .read_to_vec()
            .context("reading the node's answer")?;
        Ok(Reply {
            status,
            headers,
            body,
        })
    }
}

pub(crate) fn encode_path(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

fn wasm_zip(path: &PathBuf) -> anyhow::Result<Vec<u8>> {
    let module = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    zip.start_file(
        "function.wasm",
        zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated),
    )?;
    zip.write_all(&module)?;
    Ok(zip.finish()?.into_inner())
}

pub fn deploy(args: DeployArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let Some(function_name) = args.name.clone() else {
        return crate::stack::deploy(&api, &args.manifest, args.dry_run);
    };
    let (zip, handler) = match (&args.wasm, &args.zip) {
        (Some(wasm), _) => (wasm_zip(wasm)?, "function.wasm".to_owned()),
        (None, Some(zip)) => (
            std::fs::read(zip).with_context(|| format!("reading {}", zip.display()))?,
            args.handler.clone().unwrap_or_default(),
        ),
        (None, None) => bail!("give --wasm FILE or --zip FILE --handler PATH"),
    };
    let zip_b64 = base64::engine::general_purpose::STANDARD.encode(&zip);
    let mut env = BTreeMap::new();
    for pair in &args.env {
        let (k, v) = pair
            .split_once('=')
            .with_context(|| format!("--env {pair:?} is not KEY=VALUE"))?;
        env.insert(k.to_owned(), v.to_owned());
    }
    let mut config = serde_json::Map::new();
    config.insert("Handler".into(), json!(handler));
    config.insert("Runtime".into(), json!(args.runtime));
    if let Some(m) = args.memory {
        config.insert("MemorySize".into(), json!(m));
    }
    if let Some(t) = args.timeout {
        config.insert("Timeout".into(), json!(t));
    }
    if !args.env.is_empty() {
        config.insert("Environment".into(), json!({ "Variables": env }));
    }
    if let Some(d) = &args.description {
        config.insert("Description".into(), json!(d));
    }
    let name = encode_path(&function_name);
    let json_header = [("content-type", "application/json")];
    let existing = api.call(
        "GET",
        &format!("/2015-03-31/functions/{name}/configuration"),
        &[],
        None,
    )?;
    let result = if existing.status == 404 {
        let mut create = config.clone();
        create.insert("FunctionName".into(), json!(function_name));
        create.insert("Role".into(), json!(ensure_default_role(&api)?));
        create.insert("Code".into(), json!({ "ZipFile": zip_b64 }));
        api.call(
            "POST",
            "/2015-03-31/functions",
            &json_header,
            Some(serde_json::to_vec(&create)?),
        )?
        .ok()?
    } else {
        existing.ok()?;
        api.call(
            "PUT",
            &format!("/2015-03-31/functions/{name}/code"),
            &json_header,
            Some(serde_json::to_vec(&json!({ "ZipFile": zip_b64 }))?),
        )?
        .ok()?;
        api.call(
            "PUT",
            &format!("/2015-03-31/functions/{name}/configuration"),
            &json_header,
            Some(serde_json::to_vec(&config)?),
        )?
        .ok()?
    };
    let out = result.json()?;
    println!(
        "deployed {} ({}, {} MB, {} s, CodeSha256 {})",
        out["FunctionName"].as_str().unwrap_or(&function_name),
        out["Runtime"].as_str().unwrap_or("?"),
        out["MemorySize"],
        out["Timeout"],
        out["CodeSha256"].as_str().unwrap_or("?"),
    );
    Ok(ExitCode::SUCCESS)
}

pub fn invoke(args: InvokeArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let payload = match (&args.payload, &args.payload_file) {
        (Some(p), _) => p.clone().into_bytes(),
        (None, Some(f)) => std::fs::read(f).with_context(|| format!("reading {}", f.display()))?,
        (None, None) => b"{}".to_vec(),
    };
    let mut headers = vec![("content-type", "application/json")];
    if args.log {
        headers.push(("x-amz-log-type", "Tail"));
    }
    let reply = api
        .call(
            "POST",
            &format!(
                "/2015-03-31/functions/{}/invocations",
                encode_path(&args.name)
            ),
            &headers,
            Some(payload),
        )?
        .ok()?;
    if args.log
        && let Some(log) = reply
            .header("x-amz-log-result")
            .and_then(|l| base64::engine::general_purpose::STANDARD.decode(l).ok())
    {
        let _ = std::io::stderr().write_all(&log);
    }
    let mut out = std::io::stdout().lock();
    out.write_all(&reply.body)?;
    if !reply.body.ends_with(b"\n") {
        out.write_all(b"\n")?;
    }
    out.flush()?;
    Ok(if reply.header("x-amz-function-error").is_some() {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub fn logs(args: LogsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let name = encode_path(&args.name);
    let mut after = 0u64;
    loop {
        let reply = api
            .call(
                "GET",
                &format!("/nimbus/v1/functions/{name}/logs?after={after}&limit=1000"),
                &[],
                None,
            )?
            .ok()?;
        let page = reply.json()?;
        let entries = page["entries"].as_array().cloned().unwrap_or_default();
        let mut out = std::io::stdout().lock();
        for entry in &entries {
            if let Some(text) = entry["text"].as_str() {
                out.write_all(text.as_bytes())?;
                if !text.ends_with('\n') {
                    out.write_all(b"\n")?;
                }
            }
        }
        out.flush()?;
        after = page["next"].as_u64().unwrap_or(after);
        if entries.len() < 1000 {
            if !args.follow {
                return Ok(ExitCode::SUCCESS);
            }
            std::thread::sleep(Duration::from_millis(250));
        }
    }
}

/// Parses `--since`: `30s`, `15m`, `12h`, `7d`, or unix milliseconds.
fn since_ms(since: &str, now_ms: i64) -> anyhow::Result<i64> {
    if let Ok(ms) = since.parse::<i64>() {
        return Ok(ms);
    }
    let (number, unit) = since.split_at(since.len().saturating_sub(1));
    let n: i64 = number.parse().with_context(|| {
        format!("--since {since:?}: expected a duration like 30m, 12h, 7d or unix milliseconds")
    })?;
    let unit_ms = match unit {
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => bail!("--since {since:?}: unknown unit {unit:?} (use s, m, h or d)"),
    };
    Ok(now_ms - n.saturating_mul(unit_ms))
}

pub fn usage(args: UsageArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let since = match &args.since {
        Some(s) => since_ms(s, nimbus_types::time::now_ms())?,
        None => 0,
    };
    if let Some(function) = &args.function {
        return usage_records(&api, since, function, args.json);
    }
    let account = match &args.account {
        Some(a) if nimbus_types::name::valid_account(a) => format!("&account={a}"),
        Some(a) => bail!("{a:?} is not an account id: 12 digits"),
        None => String::new(),
    };
    let reply = api
        .call(
            "GET",
            &format!("/nimbus/v1/usage?since_ms={since}{account}"),
            &[],
            None,
        )?
        .ok()?;
    let report: UsageReport =
        serde_json::from_slice(&reply.body).context("the node answered with an invalid report")?;
    if args.json {
        return print_json(&report);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:>12} {:>8} {:>8} {:>16} {:>14}",
        "FUNCTION", "INVOCATIONS", "COLD", "ERRORS", "GB-SECONDS", "COST (USD)"
    )?;
    let row = |out: &mut std::io::StdoutLock<'_>,
               name: &str,
               t: &nimbus_types::telemetry::UsageTotals| {
        writeln!(
            out,
            "{:<40} {:>12} {:>8} {:>8} {:>16.6} {:>14.8}",
            name, t.invocations, t.cold_starts, t.errors, t.gb_seconds, t.cost
        )
    };
    for f in &report.functions {
        row(&mut out, &f.function, &f.totals)?;
    }
    row(&mut out, "TOTAL", &report.total)?;
    writeln!(
        out,
        "prices: ${} per million requests, ${} per GB-second",
        report.pricing.request_per_million, report.pricing.gb_second
    )?;
    Ok(ExitCode::SUCCESS)
}

pub fn accounts(args: AccountsArgs) -> anyhow::Result<ExitCode> {
    match args.command {
        AccountsCommand::Create {
            name,
            json,
            endpoint,
        } => {
            let api = Api::new(&endpoint);
            let body = serde_json::to_vec(&serde_json::json!({ "name": name }))?;
            let reply = api
                .call(
                    "POST",
                    "/nimbus/v1/accounts",
                    &[("content-type", "application/json")],
                    Some(body),
                )?
                .ok()?;
            let created: serde_json::Value = serde_json::from_slice(&reply.body)
                .context("the node answered with an invalid account")?;
            if json {
                return print_json(&created);
            }
            let field = |v: &serde_json::Value| v.as_str().unwrap_or_default().to_owned();
            let id = field(&created["account"]["id"]);
            println!(
                "# account {name} ({id}): its administrator key, as ~/.aws/credentials takes it
                 [{name}]
aws_access_key_id = {}
aws_secret_access_key = {}",
                field(&created["access_key_id"]),
                field(&created["secret_access_key"]),
            );
            eprintln!("the secret is shown only now; keep it");
            Ok(ExitCode::SUCCESS)
        }
        AccountsCommand::List { json, endpoint } => {
            let api = Api::new(&endpoint);
            let reply = api.call("GET", "/nimbus/v1/accounts", &[], None)?.ok()?;
            let list: serde_json::Value = serde_json::from_slice(&reply.body)
                .context("the node answered with an invalid list")?;
            if json {
                return print_json(&list);
            }
            let mut out = std::io::stdout().lock();
            writeln!(out, "{:<14} NAME", "ACCOUNT")?;
            for a in list["accounts"].as_array().into_iter().flatten() {
                writeln!(
                    out,
                    "{:<14} {}",
                    a["id"].as_str().unwrap_or_default(),
                    a["name"].as_str().unwrap_or_default()
                )?;
            }
            Ok(ExitCode::SUCCESS)
        }
    }
}

pub fn events(args: EventsArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let name = encode_path(&args.name);
    if let Some(id) = &args.replay {
        api.call(
            "POST",
            &format!(
                "/nimbus/v1/functions/{name}/events/{}/replay",
                encode_path(id)
            ),
            &[],
            None,
        )?
        .ok()?;
        println!("replayed {id}");
        return Ok(ExitCode::SUCCESS);
    }
    let report = api
        .call(
            "GET",
            &format!("/nimbus/v1/functions/{name}/events"),
            &[],
            None,
        )?
        .ok()?
        .json()?;
    if args.json {
        return print_json(&report);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{}: {} queued, {} in flight, {} dead-lettered",
        args.name, report["queued"], report["in_flight"], report["dead_lettered"]
    )?;
    for letter in report["dead_letters"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "  {}  request {}  attempts {}  {}  {}",
            letter["id"].as_str().unwrap_or("?"),
            letter["request_id"].as_str().unwrap_or("?"),
            letter["attempts"],
            letter["condition"].as_str().unwrap_or("?"),
            letter["error"]
                .get("errorType")
                .and_then(Value::as_str)
                .unwrap_or(""),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

pub fn queues(args: QueuesArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let report = api
        .call("GET", "/nimbus/v1/queues", &[], None)?
        .ok()?
        .json()?;
    if args.json {
        return print_json(&report);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<40} {:>10} {:>10} {:>10}  DEAD-LETTER QUEUE",
        "QUEUE", "VISIBLE", "IN FLIGHT", "DELAYED"
    )?;
    for q in report["queues"].as_array().into_iter().flatten() {
        writeln!(
            out,
            "{:<40} {:>10} {:>10} {:>10}  {}",
            q["queue"].as_str().unwrap_or("?"),
            q["visible"],
            q["in_flight"],
            q["delayed"],
            q["dead_letter_queue"].as_str().unwrap_or("-"),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

#[derive(Debug, clap::Args)]
pub struct CredentialsArgs {
    /// Name of the aws CLI profile.
    #[arg(long, default_value = "nimbus")]
    profile: String,
    /// Append the profile to ~/.aws/credentials and ~/.aws/config instead of printing it.
    #[arg(long)]
    write: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

/// An aws CLI profile for the node: its key (found as the CLI finds it) and its endpoint, so
/// that `aws --profile nimbus lambda list-functions` works.
pub fn credentials_profile(args: CredentialsArgs) -> anyhow::Result<ExitCode> {
    let Some((key, secret)) = credentials() else {
        bail!(
            "no key found: run this where the node's data directory is (./nimbus-data, or set \
             NIMBUS_DATA_DIR), or set NIMBUS_ADMIN_ACCESS_KEY_ID and NIMBUS_ADMIN_SECRET_ACCESS_KEY"
        );
    };
    let profile = &args.profile;
    if profile.is_empty()
        || !profile
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_".contains(&b))
    {
        bail!("a profile name is letters, digits, '-' and '_'");
    }
    let endpoint = args.endpoint.endpoint.trim_end_matches('/');
    let region = nimbus_types::name::DEFAULT_REGION;
    let credentials_text =
        format!("[{profile}]\naws_access_key_id = {key}\naws_secret_access_key = {secret}\n");
    let config_text =
        format!("[profile {profile}]\nregion = {region}\nendpoint_url = {endpoint}\n");
    if !args.write {
        println!("# ~/.aws/credentials\n{credentials_text}\n# ~/.aws/config\n{config_text}");
        return Ok(ExitCode::SUCCESS);
    }
    let home = std::env::var_os("HOME").context("HOME is not set")?;
    let dir = PathBuf::from(home).join(".aws");
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    for (file, text, header) in [
        ("credentials", &credentials_text, format!("[{profile}]")),
        ("config", &config_text, format!("[profile {profile}]")),
    ] {
        let path = dir.join(file);
        let existing = std::fs::read_to_string(&path).unwrap_or_default();
        if existing.lines().any(|l| l.trim() == header) {
            bail!(
                "{} already has {header}; choose another --profile",
                path.display()
            );
        }
        let mut options = std::fs::OpenOptions::new();
        options.create(true).append(true);
        if file == "credentials" {
            use std::os::unix::fs::OpenOptionsExt;
            options.mode(0o600);
        }
        let mut out = options
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        let separator = if existing.is_empty() || existing.ends_with("\n\n") {
            ""
        } else {
            "\n"
        };
        write!(out, "{separator}{text}").with_context(|| format!("writing {}", path.display()))?;
    }
    eprintln!("wrote profile {profile}: aws --profile {profile} lambda list-functions");
    Ok(ExitCode::SUCCESS)
}

pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let report = api
        .call("GET", "/nimbus/v1/cluster", &[], None)?
        .ok()?
        .json()?;
    if args.json {
        return print_json(&report);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<24} {:<22} {:>10} {:>10} {:>10} {:>9} {:>12} {:>10}",
        "WORKER", "ADDRESS", "CAPACITY", "USED", "FREE", "SANDBOXES", "INVOCATIONS", "HEARTBEAT"
    )?;
    for w in report["workers"].as_array().into_iter().flatten() {
        let heartbeat = match w["last_heartbeat_ms"].as_u64() {
            Some(ms) => format!("{ms}ms ago"),
            None => "built-in".to_owned(),
        };
        writeln!(
            out,
            "{:<24} {:<22} {:>8}MB {:>8}MB {:>8}MB {:>9} {:>12} {:>10}",
            w["name"].as_str().unwrap_or("?"),
            w["address"].as_str().unwrap_or("in-process"),
            w["capacity_mb"].as_u64().unwrap_or(0),
            w["used_mb"].as_u64().unwrap_or(0),
            w["free_mb"].as_u64().unwrap_or(0),
            w["sandboxes"].as_u64().unwrap_or(0),
            w["invocations"].as_u64().unwrap_or(0),
            heartbeat,
        )?;
    }
    let sandboxes = report["sandboxes"].as_array().cloned().unwrap_or_default();
    if !sandboxes.is_empty() {
        writeln!(out)?;
        writeln!(
            out,
            "{:<48} {:<24} {:>6} {:>6}",
            "FUNCTION:VERSION", "WORKER", "IDLE", "TOTAL"
        )?;
        for s in sandboxes {
            writeln!(
                out,
                "{:<48} {:<24} {:>6} {:>6}",
                s["function"].as_str().unwrap_or("?"),
                s["worker"].as_str().unwrap_or("?"),
                s["idle"].as_u64().unwrap_or(0),
                s["total"].as_u64().unwrap_or(0),
            )?;
        }
    }
    writeln!(
        out,
        "\nconcurrency: limit {}, unreserved {}",
        report["concurrency"]["limit"], report["concurrency"]["unreserved"]
    )?;
    Ok(ExitCode::SUCCESS)
}

fn usage_records(api: &Api, since: i64, function: &str, json: bool) -> anyhow::Result<ExitCode> {
    let reply = api
        .call(
            "GET",
            &format!(
                "/nimbus/v1/usage?since_ms={since}&function={}",
                encode_path(function)
            ),
            &[],
            None,
        )?
        .ok()?;
    let records = reply.json()?;
    if json {
        return print_json(&records);
    }
    let mut out = std::io::stdout().lock();
    writeln!(
        out,
        "{:<36} {:>10} {:>8} {:>7} {:>5} {:<14} INVOCATION",
        "REQUEST", "DURATION", "BILLED", "MEMORY", "COLD", "OUTCOME"
    )?;
    for r in records["records"].as_array().into_iter().flatten() {
        let invocation = match r["async_attempt"].as_u64() {
            Some(n) => format!("async, attempt {n}"),
            None => "sync".to_owned(),
        };
        writeln!(
            out,
            "{:<36} {:>8.2}ms {:>6}ms {:>5}MB {:>5} {:<14} {invocation}",
            r["request_id"].as_str().unwrap_or("?"),
            r["duration_us"].as_f64().unwrap_or(0.0) / 1000.0,
            r["billed_ms"],
            r["memory_mb"],
            if r["cold"].as_bool().unwrap_or(false) {
                "yes"
            } else {
                "no"
            },
            r["outcome"].as_str().unwrap_or("?"),
        )?;
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints a report as indented JSON (the `--json` of every listing command).
fn print_json(value: &impl serde::Serialize) -> anyhow::Result<ExitCode> {
    let mut out = std::io::stdout().lock();
    serde_json::to_writer_pretty(&mut out, value)?;
    writeln!(out)?;
    Ok(ExitCode::SUCCESS)
}

/// The role `nimbus deploy` gives new functions: `nimbus`, trusted by Lambda, with the basic
/// execution policy attached. Made the first time it is needed; returns its ARN.
fn ensure_default_role(api: &Api) -> anyhow::Result<String> {
    const NAME: &str = "nimbus";
    let form = |pairs: &[(&str, &str)]| {
        let mut f = form_urlencoded::Serializer::new(String::new());
        f.append_pair("Version", "2010-05-08");
        for (k, v) in pairs {
            f.append_pair(k, v);
        }
        f.finish().into_bytes()
    };
    let headers = [("content-type", "application/x-www-form-urlencoded")];
    let got = api.call(
        "POST",
        "/",
        &headers,
        Some(form(&[("Action", "GetRole"), ("RoleName", NAME)])),
    )?;
    let reply = if got.status == 404 {
        let trust = json!({
            "Version": "2012-10-17",
            "Statement": [{
                "Effect": "Allow",
                "Principal": {"Service": "lambda.amazonaws.com"},
                "Action": "sts:AssumeRole",
            }],
        })
        .to_string();
        let created = api
            .call(
                "POST",
                "/",
                &headers,
                Some(form(&[
                    ("Action", "CreateRole"),
                    ("RoleName", NAME),
                    ("AssumeRolePolicyDocument", &trust),
                ])),
            )?
            .ok()?;
        api.call(
            "POST",
            "/",
            &headers,
            Some(form(&[
                ("Action", "AttachRolePolicy"),
                ("RoleName", NAME),
                (
                    "PolicyArn",
                    "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
                ),
            ])),
        )?
        .ok()?;
        created
    } else {
        got.ok()?
    };
    let text = String::from_utf8_lossy(&reply.body);
    text.split_once("<Arn>")
        .and_then(|(_, rest)| rest.split_once("</Arn>"))
        .map(|(arn, _)| arn.to_owned())
        .ok_or_else(|| anyhow::anyhow!("the node's IAM answer names no role ARN: {text:.200}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_accepts_durations_and_milliseconds() {
        assert_eq!(since_ms("1700000000000", 0).unwrap(), 1_700_000_000_000);
        assert_eq!(since_ms("30s", 100_000).unwrap(), 70_000);
        assert_eq!(since_ms("2h", 10_000_000).unwrap(), 10_000_000 - 7_200_000);
        assert!(since_ms("3w", 0).is_err());
        assert!(since_ms("h", 0).is_err());
    }

    #[test]
    fn path_segments_are_escaped() {
        assert_eq!(encode_path("a:b/c"), "a%3Ab%2Fc");
        assert_eq!(encode_path("plain-name_1"), "plain-name_1");
    }
}
