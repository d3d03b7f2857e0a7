//! CloudFormation's API over the Query protocol (a form-encoded `POST /` with `Action`,
//! answered in XML), the subset `aws cloudformation deploy`, `sam deploy` and `nimbus deploy`
//! use: change sets, stacks, their events, resources, templates and exports. Each operation
//! is authorized as `cloudformation:ACTION` on the stack's ARN; the resources a stack makes are
//! authorized again, one by one, by the APIs that make them.

#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_aws_wire::xml::Writer;
use nimbus_identity::Caller;
use nimbus_stacks::{Stack, StackError, Stacks};
use nimbus_types::time::iso8601;

/// The largest request: a 51,200-byte template body, form-encoded, and its parameters.
pub const MAX_REQUEST_BYTES: u64 = 1 << 20;

const XMLNS: &str = "http://cloudformation.amazonaws.com/doc/2010-05-15/";

/// The actions served; a form whose `Action` is one of these is CloudFormation's.
pub const ACTIONS: &[&str] = &[
    "CreateChangeSet",
    "DescribeChangeSet",
    "ExecuteChangeSet",
    "DeleteChangeSet",
    "ListChangeSets",
    "CreateStack",
    "UpdateStack",
    "DeleteStack",
    "DescribeStacks",
    "ListStacks",
    "DescribeStackEvents",
    "DescribeStackResources",
    "DescribeStackResource",
    "ListStackResources",
    "GetTemplate",
    "GetTemplateSummary",
    "ValidateTemplate",
    "ListExports",
];

#[derive(Debug)]
pub struct CfnError {
    status: StatusCode,
    code: String,
    message: String,
}

impl CfnError {
    fn new(status: StatusCode, code: &str, message: impl Into<String>) -> Self {
        Self {
            status,
            code: code.to_owned(),
            message: message.into(),
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }
}

impl From<StackError> for CfnError {
    fn from(e: StackError) -> Self {
        let status = match e.code {
            "InternalFailure" => StatusCode::INTERNAL_SERVER_ERROR,
            "ChangeSetNotFound" => StatusCode::NOT_FOUND,
            _ => StatusCode::BAD_REQUEST,
        };
        Self::new(
            status,
            if e.code == "ChangeSetNotFound" {
                "ChangeSetNotFoundException"
            } else {
                e.code
            },
            e.message,
        )
    }
}

impl IntoResponse for CfnError {
    fn into_response(self) -> Response {
        nimbus_aws_wire::envelope::query_xml(
            self.status,
            XMLNS,
            &self.code,
            &self.message,
            &uuid::Uuid::new_v4().to_string(),
        )
    }
}

impl ErrorEnvelope for CfnError {
    fn too_large(limit: u64, _operation: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "ValidationError",
            format!("The request must be smaller than {limit} bytes."),
        )
    }

    fn malformed(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MalformedQueryString", message)
    }

    fn unknown_operation(operation: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {operation} for version 2010-05-15"),
        )
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::query_auth_code(error);
        Self::new(status, code, error.to_string())
    }

    fn access_denied(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }
}

type Result<T, E = CfnError> = std::result::Result<T, E>;

struct Params(nimbus_aws_wire::query::Form);

impl Params {
    fn parse(body: &[u8]) -> Result<Self> {
        nimbus_aws_wire::query::Form::parse(body)
            .map(Self)
            .map_err(CfnError::malformed)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| CfnError::invalid(nimbus_aws_wire::query::missing(name)))
    }

    fn members(&self, name: &str, field: &str) -> Vec<(usize, String)> {
        self.0.members(name, field)
    }

    fn list(&self, name: &str) -> Vec<String> {
        self.0.list(name)
    }
}

/// The action of a Query-protocol form, if it is one of CloudFormation's.
pub fn is_cloudformation(body: &[u8]) -> bool {
    form_urlencoded::parse(body).any(|(k, v)| k == "Action" && ACTIONS.contains(&v.as_ref()))
}

/// Serves one CloudFormation request: `body` is the form, read by the gateway.
pub async fn handle(
    stacks: &Arc<Stacks>,
    caller: &Caller,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body = match nimbus_aws_wire::body::read::<CfnError>(
        headers,
        body,
        MAX_REQUEST_BYTES,
        "CloudFormation",
    )
    .await
    {
        Ok(b) => b,
        Err(e) => return e.into_response(),
    };
    let params = match Params::parse(&body) {
        Ok(p) => p,
        Err(e) => return e.into_response(),
    };
    match dispatch(stacks, caller, &params).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn stack_arn(stacks: &Stacks, caller: &Caller, name: &str) -> String {
    if name.starts_with("arn:") {
        name.to_owned()
    } else {
        format!(
            "arn:aws:cloudformation:{}:{}:stack/{name}/*",
            stacks.region(),
            caller.account
        )
    }
}

/// A response document: `<{Action}Response><{Action}Result>…</…><ResponseMetadata>…`.
fn reply(action: &str, result: impl FnOnce(&mut Writer)) -> Response {
    let mut w = Writer::new();
    w.open_ns(&format!("{action}Response"), XMLNS);
    w.open(&format!("{action}Result"));
    result(&mut w);
    w.close(&format!("{action}Result"));
    w.open("ResponseMetadata");
    w.element("RequestId", &uuid::Uuid::new_v4().to_string());
    w.close("ResponseMetadata");
    w.close(&format!("{action}Response"));
    (StatusCode::OK, [("content-type", "text/xml")], w.finish()).into_response()
}

fn find(stacks: &Stacks, caller: &Caller, name: &str) -> Result<Stack> {
    stacks
        .find(&caller.account, name)
        .ok_or_else(|| CfnError::invalid(format!("Stack with id {name} does not exist")))
}

async fn template_of(stacks: &Stacks, caller: &Caller, p: &Params) -> Result<String> {
    match (p.get("TemplateBody"), p.get("TemplateURL")) {
        (Some(body), None) => Ok(body.to_owned()),
        (None, Some(url)) => Ok(stacks.fetch_template(caller, url).await?),
        (Some(_), Some(_)) => Err(CfnError::invalid(
            "Specify exactly one of TemplateBody and TemplateURL.",
        )),
        (None, None) => Err(CfnError::invalid(
            "Either Template URL or Template Body must be specified.",
        )),
    }
}

/// The parameters given, those marked `UsePreviousValue` taken from the stack.
fn parameters_of(p: &Params, previous: Option<&Stack>) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for (i, key) in p.members("Parameters", "ParameterKey") {
        let use_previous =
            p.get(&format!("Parameters.member.{i}.UsePreviousValue")) == Some("true");
        let value = if use_previous {
            previous
                .and_then(|s| s.parameters.get(&key).cloned())
                .ok_or_else(|| CfnError::invalid(format!("Invalid input for parameter key {key}. Cannot specify usePreviousValue as true for a parameter key not in the previous template")))?
        } else {
            p.get(&format!("Parameters.member.{i}.ParameterValue"))
                .unwrap_or_default()
                .to_owned()
        };
        out.insert(key, value);
    }
    Ok(out)
}

fn tags_of(p: &Params) -> BTreeMap<String, String> {
    p.members("Tags", "Key")
        .into_iter()
        .map(|(i, k)| {
            (
                k,
                p.get(&format!("Tags.member.{i}.Value"))
                    .unwrap_or_default()
                    .to_owned(),
            )
        })
        .collect()
}

async fn dispatch(stacks: &Arc<Stacks>, caller: &Caller, p: &Params) -> Result<Response> {
    let action = p.required("Action")?;
    if !ACTIONS.contains(&action) {
        return Err(CfnError::unknown_operation(action));
    }
    let stack_name = p.get("StackName");
    let change_set_name = p.get("ChangeSetName");
    if stack_name.is_none() && change_set_name.is_some_and(|c| !c.starts_with("arn:")) {
        return Err(CfnError::invalid(
            "StackName must be specified if ChangeSetName is not specified as an ARN.",
        ));
    }
    // Authorized on the stack's real id when it exists, whichever way the request names it.
    let existing = match (stack_name, change_set_name) {
        (Some(n), _) => stacks.find(&caller.account, n).map(|s| s.id),
        (None, Some(c)) => stacks
            .change_set(&caller.account, None, c)
            .ok()
            .map(|(s, _)| s.id),
        (None, None) => None,
    };
    let resource = match (existing, stack_name) {
        (Some(id), _) => id,
        (None, Some(n)) => stack_arn(stacks, caller, n),
        (None, None) => format!(
            "arn:aws:cloudformation:{}:{}:stack/*",
            stacks.region(),
            caller.account
        ),
    };
    caller
        .authorize(&format!("cloudformation:{action}"), &resource)
        .map_err(|d| CfnError::access_denied(d.message))?;
    match action {
        "CreateChangeSet" => {
            let name = p.required("StackName")?;
            let change_set = p.required("ChangeSetName")?;
            let text = template_of(stacks, caller, p).await?;
            let previous = stacks.find(&caller.account, name);
            let parameters = parameters_of(p, previous.as_ref())?;
            let (id, stack_id) = stacks
                .create_change_set(
                    caller,
                    name,
                    change_set,
                    Some(p.get("ChangeSetType").unwrap_or("UPDATE")),
                    &text,
                    parameters,
                    p.get("Description").map(str::to_owned),
                    tags_of(p),
                )
                .await?;
            Ok(reply(action, |w| {
                w.element("Id", &id);
                w.element("StackId", &stack_id);
            }))
        }
        "CreateStack" | "UpdateStack" => {
            let name = p.required("StackName")?;
            let text = template_of(stacks, caller, p).await?;
            let previous = stacks.find(&caller.account, name);
            let parameters = parameters_of(p, previous.as_ref())?;
            let kind = if action == "CreateStack" {
                "CREATE"
            } else {
                "UPDATE"
            };
            let change_set = format!("{}-{}", action, uuid::Uuid::new_v4().simple());
            let (id, stack_id) = stacks
                .create_change_set(
                    caller,
                    name,
                    &change_set,
                    Some(kind),
                    &text,
                    parameters,
                    None,
                    tags_of(p),
                )
                .await?;
            let (_, c) = stacks.change_set(&caller.account, Some(name), &id)?;
            if c.status == "FAILED" {
                stacks
                    .delete_change_set(&caller.account, Some(name), &id)
                    .await?;
                return Err(CfnError::invalid("No updates are to be performed."));
            }
            stacks.execute_change_set(caller, Some(name), &id).await?;
            Ok(reply(action, |w| w.element("StackId", &stack_id)))
        }
        "DescribeChangeSet" => {
            let (stack, c) =
                stacks.change_set(&caller.account, stack_name, p.required("ChangeSetName")?)?;
            Ok(reply(action, |w| {
                w.element("ChangeSetName", &c.name);
                w.element("ChangeSetId", &c.id);
                w.element("StackId", &stack.id);
                w.element("StackName", &stack.name);
                if let Some(d) = &c.description {
                    w.element("Description", d);
                }
                w.element("CreationTime", &iso8601(c.created_ms));
                w.element("ExecutionStatus", &c.execution_status);
                w.element("Status", &c.status);
                if let Some(r) = &c.status_reason {
                    w.element("StatusReason", r);
                }
                w.element("ChangeSetType", &c.kind);
                pairs(
                    w,
                    "Parameters",
                    ("ParameterKey", "ParameterValue"),
                    &masked(&c.template_body, &c.parameters),
                );
                capabilities(w);
                w.open("Changes");
                for ch in &c.changes {
                    w.open("member");
                    w.element("Type", "Resource");
                    w.open("ResourceChange");
                    w.element("Action", &ch.action);
                    w.element("LogicalResourceId", &ch.logical_id);
                    if let Some(pid) = &ch.physical_id {
                        w.element("PhysicalResourceId", pid);
                    }
                    w.element("ResourceType", &ch.kind);
                    if let Some(r) = &ch.replacement {
                        w.element("Replacement", r);
                    }
                    w.open("Scope");
                    if ch.action == "Modify" {
                        w.element("member", "Properties");
                    }
                    w.close("Scope");
                    w.open("Details");
                    w.close("Details");
                    w.close("ResourceChange");
                    w.close("member");
                }
                w.close("Changes");
            }))
        }
        "ExecuteChangeSet" => {
            stacks
                .execute_change_set(caller, stack_name, p.required("ChangeSetName")?)
                .await?;
            Ok(reply(action, |_| {}))
        }
        "DeleteChangeSet" => {
            stacks
                .delete_change_set(&caller.account, stack_name, p.required("ChangeSetName")?)
                .await?;
            Ok(reply(action, |_| {}))
        }
        "ListChangeSets" => {
            let stack = find(stacks, caller, p.required("StackName")?)?;
            Ok(reply(action, |w| {
                w.open("Summaries");
                for c in &stack.change_sets {
                    w.open("member");
                    w.element("StackId", &stack.id);
                    w.element("StackName", &stack.name);
                    w.element("ChangeSetId", &c.id);
                    w.element("ChangeSetName", &c.name);
                    w.element("ExecutionStatus", &c.execution_status);
                    w.element("Status", &c.status);
                    w.element("CreationTime", &iso8601(c.created_ms));
                    w.close("member");
                }
                w.close("Summaries");
            }))
        }
        "DeleteStack" => {
            stacks
                .delete_stack(caller, p.required("StackName")?)
                .await?;
            Ok(reply(action, |_| {}))
        }
        "DescribeStacks" => {
            let list: Vec<Stack> = match stack_name {
                Some(n) => vec![find(stacks, caller, n)?],
                None => stacks
                    .list(&caller.account)
                    .into_iter()
                    .filter(|s| !s.is_deleted())
                    .collect(),
            };
            Ok(reply(action, |w| {
                w.open("Stacks");
                for s in &list {
                    w.open("member");
                    write_stack(w, s);
                    w.close("member");
                }
                w.close("Stacks");
            }))
        }
        "ListStacks" => {
            let filter = p.list("StackStatusFilter");
            let list: Vec<Stack> = stacks
                .list(&caller.account)
                .into_iter()
                .filter(|s| filter.is_empty() || filter.contains(&s.status))
                .collect();
            Ok(reply(action, |w| {
                w.open("StackSummaries");
                for s in &list {
                    w.open("member");
                    w.element("StackId", &s.id);
                    w.element("StackName", &s.name);
                    w.element("CreationTime", &iso8601(s.created_ms));
                    w.element("LastUpdatedTime", &iso8601(s.updated_ms));
                    if s.is_deleted() {
                        w.element("DeletionTime", &iso8601(s.updated_ms));
                    }
                    w.element("StackStatus", &s.status);
                    if let Some(d) = &s.description {
                        w.element("TemplateDescription", d);
                    }
                    w.close("member");
                }
                w.close("StackSummaries");
            }))
        }
        "DescribeStackEvents" => {
            let s = find(stacks, caller, p.required("StackName")?)?;
            Ok(reply(action, |w| {
                w.open("StackEvents");
                for e in s.events.iter().rev() {
                    w.open("member");
                    w.element("StackId", &s.id);
                    w.element("EventId", &e.id);
                    w.element("StackName", &s.name);
                    w.element("LogicalResourceId", &e.logical_id);
                    w.element("PhysicalResourceId", &e.physical_id);
                    w.element("ResourceType", &e.kind);
                    w.element("Timestamp", &iso8601_millis(e.time_ms));
                    w.element("ResourceStatus", &e.status);
                    if let Some(r) = &e.reason {
                        w.element("ResourceStatusReason", r);
                    }
                    w.close("member");
                }
                w.close("StackEvents");
            }))
        }
        "DescribeStackResources" | "ListStackResources" | "DescribeStackResource" => {
            let s = find(stacks, caller, p.required("StackName")?)?;
            let only = if action == "DescribeStackResource" {
                Some(p.required("LogicalResourceId")?)
            } else {
                None
            };
            if let Some(id) = only
                && !s.resources.contains_key(id)
            {
                return Err(CfnError::invalid(format!(
                    "Resource {id} does not exist for stack {}",
                    s.name
                )));
            }
            let (list, item) = match action {
                "DescribeStackResources" => ("StackResources", "member"),
                "ListStackResources" => ("StackResourceSummaries", "member"),
                _ => ("", "StackResourceDetail"),
            };
            Ok(reply(action, |w| {
                if !list.is_empty() {
                    w.open(list);
                }
                for (id, r) in s
                    .resources
                    .iter()
                    .filter(|(id, _)| only.is_none_or(|o| o == id.as_str()))
                {
                    w.open(item);
                    if action != "ListStackResources" {
                        w.element("StackName", &s.name);
                        w.element("StackId", &s.id);
                    }
                    w.element("LogicalResourceId", id);
                    w.element("PhysicalResourceId", &r.made.reference);
                    w.element("ResourceType", &r.kind);
                    w.element(
                        if action == "DescribeStackResources" {
                            "Timestamp"
                        } else {
                            "LastUpdatedTimestamp"
                        },
                        &iso8601(r.updated_ms),
                    );
                    w.element("ResourceStatus", &r.status);
                    w.close(item);
                }
                if !list.is_empty() {
                    w.close(list);
                }
            }))
        }
        "GetTemplate" => {
            let stage = p.get("TemplateStage").unwrap_or("Original");
            let text = match p.get("ChangeSetName") {
                Some(c) => {
                    stacks
                        .change_set(&caller.account, stack_name, c)?
                        .1
                        .template_body
                }
                None => find(stacks, caller, p.required("StackName")?)?.template_body,
            };
            let body = if stage == "Processed" {
                Stacks::processed(&text)?.to_string()
            } else {
                text
            };
            Ok(reply(action, |w| {
                w.element("TemplateBody", &body);
                w.open("StagesAvailable");
                w.element("member", "Original");
                w.element("member", "Processed");
                w.close("StagesAvailable");
            }))
        }
        "ValidateTemplate" | "GetTemplateSummary" => {
            let text = match (p.get("TemplateBody"), p.get("TemplateURL"), stack_name) {
                (None, None, Some(n)) => find(stacks, caller, n)?.template_body,
                _ => template_of(stacks, caller, p).await?,
            };
            let raw = nimbus_stacks::yaml::parse(&text)?;
            let processed = Stacks::processed(&text)?;
            nimbus_stacks::template::Template::from_raw(&processed)?;
            Ok(reply(action, |w| {
                w.open("Parameters");
                for (k, decl) in raw
                    .get("Parameters")
                    .and_then(|p| p.as_object())
                    .into_iter()
                    .flatten()
                {
                    w.open("member");
                    w.element("ParameterKey", k);
                    if action == "GetTemplateSummary" {
                        w.element(
                            "ParameterType",
                            decl.get("Type")
                                .and_then(|t| t.as_str())
                                .unwrap_or("String"),
                        );
                    }
                    if let Some(d) = decl
                        .get("Default")
                        .and_then(nimbus_stacks::intrinsic::scalar_text)
                        .filter(|_| !no_echo(decl))
                    {
                        w.element("DefaultValue", &d);
                    }
                    w.element("NoEcho", if no_echo(decl) { "true" } else { "false" });
                    if let Some(d) = decl.get("Description").and_then(|d| d.as_str()) {
                        w.element("Description", d);
                    }
                    w.close("member");
                }
                w.close("Parameters");
                if let Some(d) = raw.get("Description").and_then(|d| d.as_str()) {
                    w.element("Description", d);
                }
                capabilities(w);
                if action == "GetTemplateSummary" {
                    w.open("ResourceTypes");
                    let mut kinds: Vec<&str> = raw
                        .get("Resources")
                        .and_then(|r| r.as_object())
                        .into_iter()
                        .flatten()
                        .filter_map(|(_, r)| r.get("Type").and_then(|t| t.as_str()))
                        .collect();
                    kinds.sort_unstable();
                    kinds.dedup();
                    for k in kinds {
                        w.element("member", k);
                    }
                    w.close("ResourceTypes");
                    if raw.get("Transform").is_some() {
                        w.open("DeclaredTransforms");
                        w.element("member", nimbus_stacks::template::SAM_TRANSFORM);
                        w.close("DeclaredTransforms");
                    }
                }
            }))
        }
        "ListExports" => {
            let exports = stacks.exports(&caller.account);
            Ok(reply(action, |w| {
                w.open("Exports");
                for (name, (value, stack)) in &exports {
                    w.open("member");
                    w.element("ExportingStackId", stack);
                    w.element("Name", name);
                    w.element("Value", value);
                    w.close("member");
                }
                w.close("Exports");
            }))
        }
        other => Err(CfnError::unknown_operation(other)),
    }
}

fn iso8601_millis(ms: i64) -> String {
    let base = iso8601(ms);
    format!("{}.{:03}Z", base.trim_end_matches('Z'), ms.rem_euclid(1000))
}

/// Whether a parameter's declaration hides its value (`NoEcho`).
fn no_echo(decl: &serde_json::Value) -> bool {
    decl.get("NoEcho")
        .is_some_and(|v| v == true || v.as_str().is_some_and(|s| s.eq_ignore_ascii_case("true")))
}

/// Parameter values as they may be shown: those the template declares `NoEcho` as `****`.
fn masked(template: &str, values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    let declared = nimbus_stacks::yaml::parse(template).ok();
    values
        .iter()
        .map(|(k, v)| {
            let hidden = declared
                .as_ref()
                .and_then(|t| t.get("Parameters"))
                .and_then(|p| p.get(k))
                .is_some_and(no_echo);
            (
                k.clone(),
                if hidden { "****".to_owned() } else { v.clone() },
            )
        })
        .collect()
}

/// A list of key-value structures: `<list><member><K>…</K><V>…</V></member>…</list>`.
fn pairs(w: &mut Writer, list: &str, (key, value): (&str, &str), items: &BTreeMap<String, String>) {
    w.open(list);
    for (k, v) in items {
        w.open("member");
        w.element(key, k);
        w.element(value, v);
        w.close("member");
    }
    w.close(list);
}

/// The capabilities a stack's template needs: it may make roles.
fn capabilities(w: &mut Writer) {
    w.open("Capabilities");
    w.element("member", "CAPABILITY_IAM");
    w.close("Capabilities");
}

fn write_stack(w: &mut Writer, s: &Stack) {
    w.element("StackId", &s.id);
    w.element("StackName", &s.name);
    if let Some(d) = &s.description {
        w.element("Description", d);
    }
    pairs(
        w,
        "Parameters",
        ("ParameterKey", "ParameterValue"),
        &masked(&s.template_body, &s.parameters),
    );
    w.element("CreationTime", &iso8601(s.created_ms));
    w.element("LastUpdatedTime", &iso8601(s.updated_ms));
    w.element("StackStatus", &s.status);
    if let Some(r) = &s.reason {
        w.element("StackStatusReason", r);
    }
    w.element("DisableRollback", "false");
    w.element("EnableTerminationProtection", "false");
    w.open("NotificationARNs");
    w.close("NotificationARNs");
    w.open("RollbackConfiguration");
    w.close("RollbackConfiguration");
    w.open("DriftInformation");
    w.element("StackDriftStatus", "NOT_CHECKED");
    w.close("DriftInformation");
    w.open("Outputs");
    for o in &s.outputs {
        w.open("member");
        w.element("OutputKey", &o.key);
        w.element("OutputValue", &o.value);
        if let Some(d) = &o.description {
            w.element("Description", d);
        }
        if let Some(e) = &o.export_name {
            w.element("ExportName", e);
        }
        w.close("member");
    }
    w.close("Outputs");
    pairs(w, "Tags", ("Key", "Value"), &s.tags);
    capabilities(w);
}
