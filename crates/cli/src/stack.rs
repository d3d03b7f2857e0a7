//! `nimbus deploy` (without a function name), `nimbus info`, `nimbus remove` and `nimbus
//! stacks`: an application's template packaged here (code zipped with its dependencies and
//! uploaded to the node's S3, as `sam build` and `sam package` do) and deployed as a stack
//! through the node's CloudFormation API, whose change set is printed before it is applied.

use std::collections::BTreeMap;
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::client::{Api, EndpointArg, encode_path};

#[derive(Debug, clap::Args)]
pub struct ManifestArgs {
    /// The template: template.yaml (AWS SAM or CloudFormation) or serverless.yml [default:
    /// whichever of template.yaml, template.yml, template.json, serverless.yml is here].
    #[arg(long, short = 'f')]
    file: Option<PathBuf>,
    /// The stage: part of the stack's name (`NAME-STAGE`), and `${sls:stage}` in
    /// serverless.yml [default: dev].
    #[arg(long)]
    stage: Option<String>,
    /// The stack's name [default: the service (serverless.yml) or the directory's name, then
    /// `-STAGE`].
    #[arg(long)]
    stack_name: Option<String>,
    /// Template parameters, KEY=VALUE; repeat for more.
    #[arg(long = "parameter-overrides", value_name = "KEY=VALUE", num_args = 1..)]
    parameter_overrides: Vec<String>,
}

#[derive(Debug, clap::Args)]
pub struct InfoArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct RemoveArgs {
    #[command(flatten)]
    manifest: ManifestArgs,
    #[command(flatten)]
    endpoint: EndpointArg,
}

#[derive(Debug, clap::Args)]
pub struct StacksArgs {
    /// Print as JSON.
    #[arg(long)]
    json: bool,
    #[command(flatten)]
    endpoint: EndpointArg,
}

/// A template found and read.
struct Manifest {
    path: PathBuf,
    dir: PathBuf,
    /// The template as JSON (short forms expanded).
    template: Value,
    stack_name: String,
    stage: String,
    parameters: BTreeMap<String, String>,
}

const STAGE_PATTERN: &str = "letters, digits and hyphens, starting with a letter, at most 64";

fn check_stage(stage: &str) -> anyhow::Result<()> {
    let ok = !stage.is_empty()
        && stage.len() <= 64
        && stage
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic())
        && stage.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        bail!("the stage {stage:?} is not a valid stage name ({STAGE_PATTERN})")
    }
}

fn sanitize(name: &str) -> String {
    let mut out: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '-'
            }
        })
        .collect();
    if !out.chars().next().is_some_and(|c| c.is_ascii_alphabetic()) {
        out.insert_str(0, "app-");
    }
    out
}

impl Manifest {
    fn read(args: &ManifestArgs) -> anyhow::Result<Self> {
        let path = match &args.file {
            Some(f) => f.clone(),
            None => [
                "template.yaml",
                "template.yml",
                "template.json",
                "serverless.yml",
                "serverless.yaml",
            ]
            .iter()
            .map(PathBuf::from)
            .find(|p| p.is_file())
            .context("no template.yaml or serverless.yml here (give one with -f)")?,
        };
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?;
        let dir = path
            .parent()
            .map(Path::to_path_buf)
            .filter(|d| !d.as_os_str().is_empty())
            .unwrap_or_else(|| PathBuf::from("."));
        let dir = dir
            .canonicalize()
            .with_context(|| format!("finding {}", dir.display()))?;
        let stage = args.stage.clone().unwrap_or_else(|| "dev".to_owned());
        check_stage(&stage)?;
        let mut parameters = BTreeMap::new();
        for pair in &args.parameter_overrides {
            let (k, v) = pair
                .split_once('=')
                .with_context(|| format!("--parameter-overrides {pair:?} is not KEY=VALUE"))?;
            parameters.insert(k.to_owned(), v.to_owned());
        }
        let raw = nimbus_stacks::yaml::parse(&text)
            .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
        let is_serverless = raw.get("service").is_some() && raw.get("provider").is_some();
        let (template, base) = if is_serverless {
            let compiled =
                nimbus_stacks::serverless::compile(&raw, &stage, &|name| std::env::var(name).ok())
                    .map_err(|e| anyhow::anyhow!("{}: {}", path.display(), e.message))?;
            let service = compiled.service.clone();
            (compiled.template, service)
        } else {
            let base = dir
                .file_name()
                .and_then(|n| n.to_str())
                .unwrap_or("app")
                .to_owned();
            (raw, base)
        };
        let stack_name = match &args.stack_name {
            Some(n) => n.clone(),
            None => format!("{}-{stage}", sanitize(&base)),
        };
        Ok(Self {
            path,
            dir,
            template,
            stack_name,
            stage,
            parameters,
        })
    }
}

/// A CloudFormation call; the answer's XML.
fn cfn(api: &Api, action: &str, params: &[(&str, &str)]) -> anyhow::Result<String> {
    let reply = cfn_raw(api, action, params)?;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    if !(200..300).contains(&reply.status) {
        let code = xml_text(&text, "Code").unwrap_or_default();
        let message = xml_text(&text, "Message").unwrap_or(text.clone());
        bail!("{code}: {message}");
    }
    Ok(text)
}

fn cfn_raw(
    api: &Api,
    action: &str,
    params: &[(&str, &str)],
) -> anyhow::Result<crate::client::Reply> {
    let mut form = form_urlencoded::Serializer::new(String::new());
    form.append_pair("Action", action);
    form.append_pair("Version", "2010-05-15");
    for (k, v) in params {
        form.append_pair(k, v);
    }
    api.call_as(
        "cloudformation",
        "POST",
        "/",
        &[(
            "content-type",
            "application/x-www-form-urlencoded; charset=utf-8",
        )],
        Some(form.finish().into_bytes()),
    )
}

fn unescape(s: &str) -> String {
    s.replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&quot;", "\"")
        .replace("&apos;", "'")
        .replace("&amp;", "&")
}

fn xml_text(xml: &str, tag: &str) -> Option<String> {
    let (open, close) = (format!("<{tag}>"), format!("</{tag}>"));
    let start = xml.find(&open)? + open.len();
    let end = xml[start..].find(&close)? + start;
    Some(unescape(&xml[start..end]))
}

/// The `<member>` elements directly inside the first `<list>`.
fn members(xml: &str, list: &str) -> Vec<String> {
    let Some(start) = xml.find(&format!("<{list}>")) else {
        return Vec::new();
    };
    let Some(end) = xml.find(&format!("</{list}>")) else {
        return Vec::new();
    };
    let inner = &xml[start + list.len() + 2..end];
    let mut out = Vec::new();
    let mut depth = 0usize;
    let mut item_start = 0;
    let mut i = 0;
    while i < inner.len() {
        if inner[i..].starts_with("<member>") {
            if depth == 0 {
                item_start = i + 8;
            }
            depth += 1;
            i += 8;
        } else if inner[i..].starts_with("</member>") {
            depth = depth.saturating_sub(1);
            if depth == 0 {
                out.push(inner[item_start..i].to_owned());
            }
            i += 9;
        } else {
            i += inner[i..].chars().next().map_or(1, char::len_utf8);
        }
    }
    out
}

/// The stack's status, or `None` if there is no such stack.
fn stack_status(api: &Api, name: &str) -> anyhow::Result<Option<String>> {
    let reply = cfn_raw(api, "DescribeStacks", &[("StackName", name)])?;
    let text = String::from_utf8_lossy(&reply.body).into_owned();
    if reply.status == 400 && text.contains("does not exist") {
        return Ok(None);
    }
    if !(200..300).contains(&reply.status) {
        bail!("{}", xml_text(&text, "Message").unwrap_or(text));
    }
    Ok(xml_text(&text, "StackStatus"))
}

fn terminal(status: &str) -> bool {
    !status.ends_with("_IN_PROGRESS")
}

pub fn deploy(api: &Api, args: &ManifestArgs, dry_run: bool) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let manifest = Manifest::read(args)?;
    let name = manifest.stack_name.clone();
    println!(
        "Deploying {} as stack {name} (stage {})",
        manifest.path.display(),
        manifest.stage
    );
    check_runtimes(api, &manifest.template)?;
    let template = package(api, &manifest)?;
    let mut status = stack_status(api, &name)?;
    if status.as_deref().is_some_and(|s| !terminal(s)) {
        bail!(
            "stack {name} is {}: another deploy or remove is running",
            status.unwrap_or_default()
        );
    }
    if status.as_deref() == Some("ROLLBACK_COMPLETE") {
        // A first deploy that failed leaves nothing behind but the stack's record.
        println!("The stack's first deploy was rolled back; starting it afresh.");
        cfn(api, "DeleteStack", &[("StackName", &name)])?;
        wait(api, &name, None)?;
        status = None;
    }
    let kind = match status.as_deref() {
        None | Some("REVIEW_IN_PROGRESS") => "CREATE",
        _ => "UPDATE",
    };
    let change_set = format!("nimbus-deploy-{}", nimbus_types::time::now_ms());
    let mut params: Vec<(String, String)> = vec![
        ("StackName".into(), name.clone()),
        ("ChangeSetName".into(), change_set.clone()),
        ("ChangeSetType".into(), kind.into()),
        ("TemplateBody".into(), template),
        ("Capabilities.member.1".into(), "CAPABILITY_IAM".into()),
        (
            "Capabilities.member.2".into(),
            "CAPABILITY_AUTO_EXPAND".into(),
        ),
    ];
    for (i, (k, v)) in manifest.parameters.iter().enumerate() {
        params.push((
            format!("Parameters.member.{}.ParameterKey", i + 1),
            k.clone(),
        ));
        params.push((
            format!("Parameters.member.{}.ParameterValue", i + 1),
            v.clone(),
        ));
    }
    let borrowed: Vec<(&str, &str)> = params
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    cfn(api, "CreateChangeSet", &borrowed)?;
    let described = cfn(
        api,
        "DescribeChangeSet",
        &[("StackName", &name), ("ChangeSetName", &change_set)],
    )?;
    if xml_text(&described, "Status").as_deref() == Some("FAILED") {
        cfn(
            api,
            "DeleteChangeSet",
            &[("StackName", &name), ("ChangeSetName", &change_set)],
        )?;
        println!(
            "No changes: the stack is up to date ({:.2} s).",
            started.elapsed().as_secs_f64()
        );
        return Ok(ExitCode::SUCCESS);
    }
    let changes = members(&described, "Changes");
    println!("Changes ({}):", changes.len());
    for c in &changes {
        let action = xml_text(c, "Action").unwrap_or_default();
        let replacement = xml_text(c, "Replacement").filter(|r| action == "Modify" && r != "False");
        println!(
            "  {:<7} {:<40} {}{}",
            action,
            xml_text(c, "LogicalResourceId").unwrap_or_default(),
            xml_text(c, "ResourceType").unwrap_or_default(),
            replacement
                .map(|r| format!("  (replacement: {r})"))
                .unwrap_or_default()
        );
    }
    if dry_run {
        cfn(
            api,
            "DeleteChangeSet",
            &[("StackName", &name), ("ChangeSetName", &change_set)],
        )?;
        if kind == "CREATE" {
            cfn(api, "DeleteStack", &[("StackName", &name)])?;
        }
        println!("Dry run: nothing applied.");
        return Ok(ExitCode::SUCCESS);
    }
    let events_before = members(
        &cfn(api, "DescribeStackEvents", &[("StackName", &name)])?,
        "StackEvents",
    )
    .len();
    cfn(
        api,
        "ExecuteChangeSet",
        &[("StackName", &name), ("ChangeSetName", &change_set)],
    )?;
    let final_status = wait(api, &name, Some((events_before, changes.len())))?;
    let ok = matches!(final_status.as_str(), "CREATE_COMPLETE" | "UPDATE_COMPLETE");
    println!(
        "Stack {name}: {final_status} ({:.2} s)",
        started.elapsed().as_secs_f64()
    );
    if ok {
        print_info(api, &name, false)?;
        Ok(ExitCode::SUCCESS)
    } else {
        Ok(ExitCode::FAILURE)
    }
}

/// Refuses runtimes the node does not run, listing those it does, before anything is made;
/// prints the ones it runs on another runtime by the operator's choice.
fn check_runtimes(api: &Api, template: &Value) -> anyhow::Result<()> {
    // Only an administrator may read the node's runtimes; others learn at CreateFunction.
    let Ok(info) = api
        .call("GET", "/nimbus/v1/runtimes", &[], None)
        .and_then(|r| r.ok())
        .and_then(|r| r.json())
    else {
        return Ok(());
    };
    let available: Vec<&str> = info["available"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_str)
        .collect();
    let aliases = info["aliases"].as_object().cloned().unwrap_or_default();
    let global = template
        .pointer("/Globals/Function/Runtime")
        .and_then(Value::as_str);
    let mut seen = std::collections::BTreeSet::new();
    for (id, r) in template
        .get("Resources")
        .and_then(Value::as_object)
        .into_iter()
        .flatten()
    {
        let kind = r.get("Type").and_then(Value::as_str).unwrap_or_default();
        if kind != "AWS::Serverless::Function" && kind != "AWS::Lambda::Function" {
            continue;
        }
        let Some(runtime) = r
            .pointer("/Properties/Runtime")
            .and_then(Value::as_str)
            .or(global)
        else {
            continue;
        };
        if available.contains(&runtime) {
            continue;
        }
        match aliases.get(runtime).and_then(Value::as_str) {
            Some(target) => {
                if seen.insert(runtime.to_owned()) {
                    println!(
                        "  runtime {runtime} runs on {target} here (the node's [worker] runtime_aliases)"
                    );
                }
            }
            None => bail!(
                "{id}: the runtime {runtime} is not available on this node. Available: {}. An operator can run it on one of those with [worker] runtime_aliases in the node's configuration.",
                available.join(", ")
            ),
        }
    }
    Ok(())
}

/// Waits for the stack to reach a final status, printing its events as they come (when
/// `progress` gives how many events to skip and how many changes there are).
fn wait(api: &Api, name: &str, progress: Option<(usize, usize)>) -> anyhow::Result<String> {
    let (mut seen, total) = progress.unwrap_or((usize::MAX, 0));
    let mut done = 0usize;
    loop {
        let events = match cfn_raw(api, "DescribeStackEvents", &[("StackName", name)]) {
            Ok(r) if (200..300).contains(&r.status) => {
                members(&String::from_utf8_lossy(&r.body), "StackEvents")
            }
            Ok(r) if String::from_utf8_lossy(&r.body).contains("does not exist") => {
                return Ok("DELETE_COMPLETE".into());
            }
            Ok(r) => bail!("{}", String::from_utf8_lossy(&r.body)),
            Err(e) => return Err(e),
        };
        // Newest first: print the new ones oldest first.
        if seen != usize::MAX && events.len() > seen {
            let mut out = std::io::stdout().lock();
            for e in events[..events.len() - seen].iter().rev() {
                let status = xml_text(e, "ResourceStatus").unwrap_or_default();
                let kind = xml_text(e, "ResourceType").unwrap_or_default();
                if kind != "AWS::CloudFormation::Stack"
                    && (status.ends_with("_COMPLETE")
                        || status.ends_with("_FAILED")
                        || status == "DELETE_SKIPPED")
                {
                    done += 1;
                }
                let bar = if total > 0 {
                    format!("[{:>3}/{total}] ", done.min(total))
                } else {
                    String::new()
                };
                let reason = xml_text(e, "ResourceStatusReason")
                    .map(|r| format!("  {r}"))
                    .unwrap_or_default();
                let _ = writeln!(
                    out,
                    "  {bar}{:<28} {:<36} {}{reason}",
                    status,
                    xml_text(e, "LogicalResourceId").unwrap_or_default(),
                    kind
                );
            }
            seen = events.len();
        }
        match stack_status(api, name)? {
            None => return Ok("DELETE_COMPLETE".into()),
            Some(s) if terminal(&s) && s != "REVIEW_IN_PROGRESS" => return Ok(s),
            _ => std::thread::sleep(Duration::from_millis(100)),
        }
    }
}

pub fn info(args: InfoArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let manifest = Manifest::read(&args.manifest)?;
    print_info(&api, &manifest.stack_name, args.json)?;
    Ok(ExitCode::SUCCESS)
}

/// The stack's status, outputs and endpoints.
fn print_info(api: &Api, name: &str, as_json: bool) -> anyhow::Result<()> {
    let described = cfn(api, "DescribeStacks", &[("StackName", name)])?;
    let outputs: Vec<(String, String)> = members(&described, "Outputs")
        .iter()
        .map(|o| {
            (
                xml_text(o, "OutputKey").unwrap_or_default(),
                xml_text(o, "OutputValue").unwrap_or_default(),
            )
        })
        .collect();
    let resources = cfn(api, "DescribeStackResources", &[("StackName", name)])?;
    let mut endpoints: Vec<(String, String, String)> = Vec::new();
    let mut apis = Vec::new();
    for r in members(&resources, "StackResources") {
        let id = xml_text(&r, "LogicalResourceId").unwrap_or_default();
        let physical = xml_text(&r, "PhysicalResourceId").unwrap_or_default();
        let kind = xml_text(&r, "ResourceType").unwrap_or_default();
        let label = match kind.as_str() {
            "AWS::Lambda::Function" => "function",
            "AWS::SQS::Queue" => "queue",
            "AWS::S3::Bucket" => "bucket",
            "AWS::DynamoDB::Table" => "table",
            "AWS::Cognito::UserPool" => "user pool",
            "AWS::Cognito::UserPoolClient" => "user pool client",
            "AWS::Lambda::Url" => {
                let (function, qualifier) = match physical.rsplit_once(':') {
                    Some((f, q)) if f.contains(":function:") => (f.to_owned(), Some(q.to_owned())),
                    _ => (physical.clone(), None),
                };
                let path = match &qualifier {
                    Some(q) => format!(
                        "/2021-10-31/functions/{}/url?Qualifier={}",
                        encode_path(&function),
                        encode_path(q)
                    ),
                    None => format!("/2021-10-31/functions/{}/url", encode_path(&function)),
                };
                if let Ok(v) = api
                    .call("GET", &path, &[], None)
                    .and_then(|r| r.ok())
                    .and_then(|r| r.json())
                {
                    endpoints.push((
                        "function URL".into(),
                        id.clone(),
                        v["FunctionUrl"].as_str().unwrap_or_default().to_owned(),
                    ));
                }
                continue;
            }
            "AWS::ApiGatewayV2::Api" => {
                apis.push((id.clone(), physical.clone()));
                continue;
            }
            _ => continue,
        };
        endpoints.push((label.into(), id, physical));
    }
    for (id, api_id) in &apis {
        let got = |path: String| {
            api.call("GET", &path, &[], None)
                .and_then(|r| r.ok())
                .and_then(|r| r.json())
        };
        let Ok(a) = got(format!("/v2/apis/{}", encode_path(api_id))) else {
            continue;
        };
        let base = a["apiEndpoint"]
            .as_str()
            .unwrap_or_default()
            .trim_end_matches('/')
            .to_owned();
        let stages: Vec<String> = got(format!("/v2/apis/{}/stages", encode_path(api_id)))
            .map(|s| {
                s["items"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|i| i["stageName"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        let prefix = match stages.iter().find(|s| *s != "$default") {
            Some(s) if !stages.iter().any(|x| x == "$default") => format!("/{s}"),
            _ => String::new(),
        };
        let routes = got(format!("/v2/apis/{}/routes", encode_path(api_id))).unwrap_or_default();
        let mut keys: Vec<String> = routes["items"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|r| r["routeKey"].as_str().map(str::to_owned))
            .collect();
        keys.sort();
        for key in keys {
            let line = match key.split_once(' ') {
                Some((method, path)) => format!("{method} {base}{prefix}{path}"),
                None => format!("{key} {base}{prefix}/"),
            };
            endpoints.push(("API route".into(), id.clone(), line));
        }
    }
    if as_json {
        let out = json!({
            "stack": name,
            "status": xml_text(&described, "StackStatus"),
            "outputs": outputs.iter().cloned().collect::<BTreeMap<_, _>>(),
            "endpoints": endpoints.iter().map(|(k, id, v)| json!({"kind": k, "resource": id, "value": v})).collect::<Vec<_>>(),
        });
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(());
    }
    println!(
        "Stack {name}: {}",
        xml_text(&described, "StackStatus").unwrap_or_default()
    );
    if !outputs.is_empty() {
        println!("Outputs:");
        for (k, v) in &outputs {
            println!("  {k}: {v}");
        }
    }
    if !endpoints.is_empty() {
        println!("Resources and endpoints:");
        for (kind, id, value) in &endpoints {
            println!("  {kind:<16} {id:<36} {value}");
        }
    }
    Ok(())
}

pub fn remove(args: RemoveArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let manifest = Manifest::read(&args.manifest)?;
    let name = manifest.stack_name;
    if stack_status(&api, &name)?.is_none() {
        println!("There is no stack {name}.");
        return Ok(ExitCode::SUCCESS);
    }
    let events_before = members(
        &cfn(&api, "DescribeStackEvents", &[("StackName", &name)])?,
        "StackEvents",
    )
    .len();
    cfn(&api, "DeleteStack", &[("StackName", &name)])?;
    let status = wait(&api, &name, Some((events_before, 0)))?;
    println!("Stack {name}: {status}");
    Ok(if status == "DELETE_COMPLETE" {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}

pub fn stacks(args: StacksArgs) -> anyhow::Result<ExitCode> {
    let api = Api::new(&args.endpoint);
    let listed = cfn(&api, "ListStacks", &[])?;
    let rows: Vec<(String, String, String)> = members(&listed, "StackSummaries")
        .iter()
        .map(|s| {
            (
                xml_text(s, "StackName").unwrap_or_default(),
                xml_text(s, "StackStatus").unwrap_or_default(),
                xml_text(s, "LastUpdatedTime").unwrap_or_default(),
            )
        })
        .filter(|(_, status, _)| status != "DELETE_COMPLETE")
        .collect();
    if args.json {
        let out: Vec<Value> = rows
            .iter()
            .map(|(n, s, t)| json!({"name": n, "status": s, "updated": t}))
            .collect();
        println!("{}", serde_json::to_string_pretty(&out)?);
        return Ok(ExitCode::SUCCESS);
    }
    println!("{:<40} {:<28} UPDATED", "STACK", "STATUS");
    for (n, s, t) in rows {
        println!("{n:<40} {s:<28} {t}");
    }
    Ok(ExitCode::SUCCESS)
}

// --- packaging ---------------------------------------------------------------------------

/// The bucket a caller's packages go to.
fn artifact_bucket(api: &Api) -> anyhow::Result<String> {
    let reply = api
        .call(
            "POST",
            "/",
            &[("content-type", "application/x-www-form-urlencoded")],
            Some(b"Action=GetCallerIdentity&Version=2011-06-15".to_vec()),
        )?
        .ok()?;
    let text = String::from_utf8_lossy(&reply.body);
    let account =
        xml_text(&text, "Account").context("the node did not say which account this key is of")?;
    let bucket = format!("nimbus-deployments-{account}");
    let head = api.call_as("s3", "HEAD", &format!("/{bucket}"), &[], None)?;
    if head.status == 404 {
        api.call_as("s3", "PUT", &format!("/{bucket}"), &[], None)?
            .ok()
            .context("making the deployment bucket")?;
    }
    Ok(bucket)
}

/// Packages every local code location of the template and returns it, as JSON, with those
/// locations replaced by the uploaded packages.
fn package(api: &Api, manifest: &Manifest) -> anyhow::Result<String> {
    let mut template = manifest.template.clone();
    let global_code = template.pointer("/Globals/Function/CodeUri").cloned();
    let mut bucket = None;
    let resources = template
        .get_mut("Resources")
        .and_then(Value::as_object_mut)
        .context("the template has no Resources")?;
    for (id, r) in resources.iter_mut() {
        let kind = r
            .get("Type")
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned();
        let Some(props) = r.get_mut("Properties").and_then(Value::as_object_mut) else {
            continue;
        };
        let (key, local) = match kind.as_str() {
            "AWS::Serverless::Function" if props.contains_key("InlineCode") => continue,
            "AWS::Serverless::Function" => (
                "CodeUri",
                props
                    .get("CodeUri")
                    .cloned()
                    .or_else(|| global_code.clone())
                    .unwrap_or(json!(".")),
            ),
            "AWS::Lambda::Function" => ("Code", props.get("Code").cloned().unwrap_or(Value::Null)),
            "AWS::Serverless::LayerVersion" => (
                "ContentUri",
                props.get("ContentUri").cloned().unwrap_or(Value::Null),
            ),
            "AWS::Lambda::LayerVersion" => (
                "Content",
                props.get("Content").cloned().unwrap_or(Value::Null),
            ),
            _ => continue,
        };
        let Some(local) = local.as_str().filter(|s| !s.starts_with("s3://")) else {
            continue;
        };
        let runtime = props
            .get("Runtime")
            .and_then(Value::as_str)
            .map(str::to_owned)
            .or_else(|| {
                manifest
                    .template
                    .pointer("/Globals/Function/Runtime")
                    .and_then(Value::as_str)
                    .map(str::to_owned)
            })
            .unwrap_or_default();
        let patterns = props
            .remove("x-nimbus-patterns")
            .map(|p| p.as_array().cloned().unwrap_or_default())
            .unwrap_or_default();
        let patterns: Vec<String> = patterns
            .iter()
            .filter_map(|p| p.as_str().map(str::to_owned))
            .collect();
        let source = manifest.dir.join(local);
        let handler = props
            .get("Handler")
            .and_then(Value::as_str)
            .map(str::to_owned);
        let zip = build(
            manifest,
            id,
            &source,
            &runtime,
            &patterns,
            handler.as_deref(),
        )?;
        let digest = hex(&Sha256::digest(&zip));
        let bucket = match &bucket {
            Some(b) => b,
            None => bucket.insert(artifact_bucket(api)?),
        };
        let object = format!("{}/{digest}.zip", manifest.stack_name);
        let path = format!("/{bucket}/{object}");
        if api.call_as("s3", "HEAD", &path, &[], None)?.status != 200 {
            api.call_as(
                "s3",
                "PUT",
                &path,
                &[("content-type", "application/zip")],
                Some(zip),
            )?
            .ok()
            .with_context(|| format!("uploading the package of {id}"))?;
        }
        let location = match kind.as_str() {
            "AWS::Lambda::Function" | "AWS::Lambda::LayerVersion" => {
                json!({"S3Bucket": bucket, "S3Key": object})
            }
            _ => json!(format!("s3://{bucket}/{object}")),
        };
        props.insert(key.into(), location);
    }
    if let Some(g) = template
        .pointer_mut("/Globals/Function")
        .and_then(Value::as_object_mut)
    {
        // Packaged per function above when it was a local path; an S3 location stays.
        if g.get("CodeUri")
            .and_then(Value::as_str)
            .is_some_and(|u| !u.starts_with("s3://"))
        {
            g.remove("CodeUri");
        }
    }
    Ok(serde_json::to_string(&template)?)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Builds a function's package as `sam build` does: the code directory, Python's
/// `requirements.txt` installed into it, Node's production dependencies installed with npm;
/// zipped with fixed times and in name order, so the same code gives the same package.
fn build(
    manifest: &Manifest,
    id: &str,
    source: &Path,
    runtime: &str,
    patterns: &[String],
    handler: Option<&str>,
) -> anyhow::Result<Vec<u8>> {
    if !source.is_dir() {
        bail!(
            "{id}: the code directory {} does not exist",
            source.display()
        );
    }
    let root = manifest.dir.join(".nimbus").join("build").join(id);
    let requirements = source.join("requirements.txt");
    let package_json = source.join("package.json");
    let mut extra: Option<PathBuf> = None;
    if runtime.starts_with("python") && requirements.is_file() {
        let wanted = hex(&Sha256::digest(std::fs::read(&requirements)?));
        let deps = std::path::absolute(root.join("python-deps"))?;
        let stamp = deps.join(".nimbus-requirements");
        if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
            let _ = std::fs::remove_dir_all(&deps);
            std::fs::create_dir_all(&deps)?;
            println!("  {id}: installing requirements.txt");
            let status = std::process::Command::new("python3")
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                    "--no-compile",
                    "--root-user-action=ignore",
                    "-r",
                ])
                .arg(requirements.canonicalize()?)
                .arg("--target")
                .arg(&deps)
                // Relative paths in requirements.txt (local wheels) are the project's, as for
                // `sam build`.
                .current_dir(&manifest.dir)
                .status()
                .context("running pip")?;
            if !status.success() {
                bail!("{id}: pip could not install {}", requirements.display());
            }
            std::fs::write(&stamp, &wanted)?;
        }
        extra = Some(deps);
    } else if runtime.starts_with("nodejs") && package_json.is_file() {
        let manifest_json: Value = serde_json::from_slice(&std::fs::read(&package_json)?)
            .context("package.json is not JSON")?;
        let has_deps = manifest_json
            .get("dependencies")
            .and_then(Value::as_object)
            .is_some_and(|d| !d.is_empty());
        if has_deps {
            let lock = source.join("package-lock.json");
            let mut hasher = Sha256::new();
            hasher.update(std::fs::read(&package_json)?);
            if lock.is_file() {
                hasher.update(std::fs::read(&lock)?);
            }
            let wanted = hex(&hasher.finalize());
            let deps = root.join("node-deps");
            let stamp = deps.join(".nimbus-dependencies");
            if std::fs::read_to_string(&stamp).ok().as_deref() != Some(wanted.as_str()) {
                let _ = std::fs::remove_dir_all(&deps);
                std::fs::create_dir_all(&deps)?;
                std::fs::copy(&package_json, deps.join("package.json"))?;
                if lock.is_file() {
                    std::fs::copy(&lock, deps.join("package-lock.json"))?;
                }
                println!("  {id}: installing the package's dependencies");
                let args: &[&str] = if lock.is_file() {
                    &["ci", "--omit=dev", "--no-audit", "--no-fund"]
                } else {
                    &["install", "--omit=dev", "--no-audit", "--no-fund"]
                };
                let status = std::process::Command::new("npm")
                    .args(args)
                    .current_dir(&deps)
                    .stdout(std::process::Stdio::null())
                    .status()
                    .context("running npm")?;
                if !status.success() {
                    bail!(
                        "{id}: npm could not install the dependencies of {}",
                        package_json.display()
                    );
                }
                std::fs::write(&stamp, &wanted)?;
            }
            extra = Some(deps.join("node_modules"));
        }
    }
    let mut files: BTreeMap<String, PathBuf> = BTreeMap::new();
    collect(source, source, &manifest.dir, patterns, &mut files)?;
    if let Some(extra) = &extra {
        let prefix = if extra.ends_with("node_modules") {
            "node_modules/"
        } else {
            ""
        };
        let mut deps = BTreeMap::new();
        collect(extra, extra, extra, &[], &mut deps)?;
        for (name, path) in deps {
            if !name.starts_with(".nimbus-") {
                files.insert(format!("{prefix}{name}"), path);
            }
        }
    }
    if files.is_empty() {
        bail!("{id}: {} has no files to package", source.display());
    }
    if let Some(handler) = handler {
        check_handler(id, runtime, handler, &files)?;
    }
    let mut zip = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    for (name, path) in &files {
        let meta = std::fs::metadata(path)?;
        let mode = std::os::unix::fs::PermissionsExt::mode(&meta.permissions());
        let options = zip::write::SimpleFileOptions::default()
            .compression_method(zip::CompressionMethod::Deflated)
            .last_modified_time(zip::DateTime::default())
            .unix_permissions(if mode & 0o111 != 0 { 0o755 } else { 0o644 });
        zip.start_file(name.as_str(), options)?;
        zip.write_all(&std::fs::read(path)?)?;
    }
    Ok(zip.finish()?.into_inner())
}

/// A handler's module must be in the package (`app.handler` → `app.py` or `app.js`/`.mjs`/`.cjs`).
fn check_handler(
    id: &str,
    runtime: &str,
    handler: &str,
    files: &BTreeMap<String, PathBuf>,
) -> anyhow::Result<()> {
    let Some((module, _)) = handler.rsplit_once('.') else {
        bail!("{id}: the handler {handler:?} is not MODULE.FUNCTION");
    };
    let candidates: Vec<String> = if runtime.starts_with("python") {
        vec![
            format!("{}.py", module.replace('.', "/")),
            format!("{}/__init__.py", module.replace('.', "/")),
        ]
    } else if runtime.starts_with("nodejs") {
        ["js", "mjs", "cjs"]
            .iter()
            .map(|e| format!("{module}.{e}"))
            .collect()
    } else {
        return Ok(());
    };
    if candidates.iter().any(|c| files.contains_key(c)) {
        Ok(())
    } else {
        bail!(
            "{id}: the handler {handler} names {}, which is not in the package",
            candidates[0]
        )
    }
}

/// Files under `dir`, by their path relative to `base`, leaving out build output, version
/// control and caches, and (when `patterns` are given, as serverless.yml's
/// `package.patterns`) what they exclude.
fn collect(
    base: &Path,
    dir: &Path,
    project: &Path,
    patterns: &[String],
    out: &mut BTreeMap<String, PathBuf>,
) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir).with_context(|| format!("reading {}", dir.display()))? {
        let entry = entry?;
        let path = entry.path();
        let name = entry.file_name().to_string_lossy().into_owned();
        if [
            ".nimbus",
            ".aws-sam",
            ".git",
            ".serverless",
            "__pycache__",
            ".venv",
        ]
        .contains(&name.as_str())
            || name.ends_with(".pyc")
        {
            continue;
        }
        if path == project.join(".nimbus") {
            continue;
        }
        let file_type = entry.file_type()?;
        let relative = path
            .strip_prefix(base)
            .unwrap_or(&path)
            .to_string_lossy()
            .replace('\\', "/");
        if file_type.is_dir() {
            collect(base, &path, project, patterns, out)?;
        } else if (file_type.is_file() || file_type.is_symlink() && path.is_file())
            && included(&relative, patterns)
        {
            out.insert(relative, path);
        }
    }
    Ok(())
}

/// serverless.yml's `package.patterns`: each pattern includes what it matches, a `!` pattern
/// excludes it, the last match wins; without patterns everything is in.
fn included(path: &str, patterns: &[String]) -> bool {
    let mut inside = true;
    for p in patterns {
        let (negated, glob) = match p.strip_prefix('!') {
            Some(g) => (true, g),
            None => (false, p.as_str()),
        };
        if glob_matches(glob, path) {
            inside = !negated;
        }
    }
    inside
}

/// Glob matching with `*` (within a segment), `**` (any segments) and `?`.
fn glob_matches(glob: &str, path: &str) -> bool {
    fn inner(g: &[u8], p: &[u8]) -> bool {
        match g.first() {
            None => p.is_empty(),
            Some(b'*') if g.get(1) == Some(&b'*') => {
                let rest = if g.get(2) == Some(&b'/') {
                    &g[3..]
                } else {
                    &g[2..]
                };
                (0..=p.len()).any(|i| inner(rest, &p[i..]))
            }
            Some(b'*') => (0..=p.len())
                .take_while(|i| *i == 0 || p[i - 1] != b'/')
                .any(|i| inner(&g[1..], &p[i..])),
            Some(b'?') => !p.is_empty() && p[0] != b'/' && inner(&g[1..], &p[1..]),
            Some(c) => p.first() == Some(c) && inner(&g[1..], &p[1..]),
        }
    }
    let glob = glob.trim_start_matches("./");
    inner(glob.as_bytes(), path.as_bytes())
        || (glob.ends_with("/**") && path.starts_with(glob.trim_end_matches("/**")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn globs_and_patterns() {
        assert!(glob_matches("src/**", "src/a/b.py"));
        assert!(glob_matches("*.py", "app.py"));
        assert!(!glob_matches("*.py", "lib/app.py"));
        assert!(glob_matches("**/*.py", "lib/app.py"));
        let patterns = vec![
            "!node_modules/**".to_owned(),
            "!tests/**".to_owned(),
            "tests/keep.js".to_owned(),
        ];
        assert!(included("handler.js", &patterns));
        assert!(!included("node_modules/x/index.js", &patterns));
        assert!(!included("tests/a.js", &patterns));
        assert!(included("tests/keep.js", &patterns));
    }

    #[test]
    fn members_reads_nested_lists() {
        let xml = "<Stacks><member><StackName>a</StackName><Outputs><member><OutputKey>k</OutputKey></member></Outputs></member><member><StackName>b</StackName></member></Stacks>";
        let m = members(xml, "Stacks");
        assert_eq!(m.len(), 2);
        assert_eq!(members(&m[0], "Outputs").len(), 1);
        assert!(check_stage("dev").is_ok() && check_stage("prod-2").is_ok());
        assert!(
            check_stage("2x").is_err() && check_stage("a b").is_err() && check_stage("").is_err()
        );
    }
}
