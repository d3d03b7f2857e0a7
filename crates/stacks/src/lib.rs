//! Stacks: an application's resources declared in a template (CloudFormation, with the SAM
//! transform) and kept as one unit. A template is planned into a change set (what would be
//! added, modified, replaced or removed), which is then executed in dependency order through
//! the node's own APIs as the caller who asked, and rolled back to the stack's previous state
//! when a step fails. Every step is recorded before it is taken, so a node that stops in the
//! middle rolls the stack back when it starts again.

#![forbid(unsafe_code)]

mod engine;
pub mod intrinsic;
pub mod providers;
pub mod sam;
pub mod serverless;
pub mod template;
pub mod yaml;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, OnceLock};

use intrinsic::Made;
use nimbus_identity::Caller;
use nimbus_store::StackStore;
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use engine::Plan;
pub use providers::Dispatch;

/// A refusal, with CloudFormation's error code.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct StackError {
    pub code: &'static str,
    pub message: String,
}

impl StackError {
    pub fn validation(message: impl Into<String>) -> Self {
        Self {
            code: "ValidationError",
            message: message.into(),
        }
    }

    pub fn exists(message: impl Into<String>) -> Self {
        Self {
            code: "AlreadyExistsException",
            message: message.into(),
        }
    }

    pub fn missing_change_set(name: &str) -> Self {
        Self {
            code: "ChangeSetNotFound",
            message: format!("ChangeSet [{name}] does not exist"),
        }
    }

    pub fn internal(message: impl Into<String>) -> Self {
        Self {
            code: "InternalFailure",
            message: message.into(),
        }
    }
}

/// A resource the stack made.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Deployed {
    pub kind: String,
    /// Its properties as they were applied (every intrinsic resolved).
    pub properties: Value,
    pub made: Made,
    pub status: String,
    pub updated_ms: i64,
    pub retain: bool,
    /// Left in place when a replacement takes its place (`UpdateReplacePolicy: Retain`).
    #[serde(default)]
    pub retain_on_replace: bool,
}

/// One planned change.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Change {
    /// `Add`, `Modify` or `Remove`.
    pub action: String,
    pub logical_id: String,
    pub physical_id: Option<String>,
    pub kind: String,
    /// `True`, `False` or `Conditional` (for `Modify`).
    pub replacement: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct ChangeSet {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
    pub description: Option<String>,
    /// `CREATE` or `UPDATE`.
    pub kind: String,
    pub template_body: String,
    pub parameters: BTreeMap<String, String>,
    pub changes: Vec<Change>,
    /// `CREATE_COMPLETE` or `FAILED`.
    pub status: String,
    pub status_reason: Option<String>,
    /// `AVAILABLE`, `EXECUTE_IN_PROGRESS`, `EXECUTE_COMPLETE`, `EXECUTE_FAILED`,
    /// `UNAVAILABLE`, `OBSOLETE`.
    pub execution_status: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct StackEvent {
    pub id: String,
    pub time_ms: i64,
    pub logical_id: String,
    pub physical_id: String,
    pub kind: String,
    pub status: String,
    pub reason: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Output {
    pub key: String,
    pub value: String,
    pub description: Option<String>,
    pub export_name: Option<String>,
}

/// One step taken during an operation, kept so that it can be undone.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum Step {
    /// A resource about to be made (`made` is `None` until the API answered), under the name
    /// it was given.
    Create {
        logical_id: String,
        kind: String,
        name: String,
        properties: Value,
        made: Option<Made>,
    },
    /// A resource changed in place from `before`.
    Update {
        logical_id: String,
        before: Deployed,
        after: Value,
    },
    /// A new resource (of type `kind`) made beside `before`, which stays until the operation
    /// completes.
    Replace {
        logical_id: String,
        before: Deployed,
        #[serde(default)]
        kind: String,
        name: String,
        properties: Value,
        made: Option<Made>,
    },
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Stack {
    pub id: String,
    pub name: String,
    pub account: String,
    pub status: String,
    pub reason: Option<String>,
    pub created_ms: i64,
    pub updated_ms: i64,
    pub description: Option<String>,
    /// The text of the template last applied.
    pub template_body: String,
    pub parameters: BTreeMap<String, String>,
    pub resources: BTreeMap<String, Deployed>,
    /// The order the resources were made in; deletes go the other way.
    pub order: Vec<String>,
    pub outputs: Vec<Output>,
    pub change_sets: Vec<ChangeSet>,
    pub events: Vec<StackEvent>,
    /// The steps of the operation in progress.
    pub journal: Vec<Step>,
    /// The resources as they were when the operation in progress began.
    pub before: Option<BTreeMap<String, Deployed>>,
    pub before_order: Vec<String>,
    pub tags: BTreeMap<String, String>,
}

/// The most events a stack keeps (the oldest go first).
const MAX_EVENTS: usize = 2000;

impl Stack {
    pub fn in_progress(&self) -> bool {
        self.status.ends_with("_IN_PROGRESS") && self.status != "REVIEW_IN_PROGRESS"
    }

    pub fn is_deleted(&self) -> bool {
        self.status == "DELETE_COMPLETE"
    }

    fn event(
        &mut self,
        logical_id: &str,
        physical_id: &str,
        kind: &str,
        status: &str,
        reason: Option<String>,
    ) {
        self.events.push(StackEvent {
            id: uuid::Uuid::new_v4().to_string(),
            time_ms: nimbus_types::time::now_ms(),
            logical_id: logical_id.to_owned(),
            physical_id: physical_id.to_owned(),
            kind: kind.to_owned(),
            status: status.to_owned(),
            reason,
        });
        if self.events.len() > MAX_EVENTS {
            let extra = self.events.len() - MAX_EVENTS;
            self.events.drain(..extra);
        }
    }

    /// Sets the stack's status, with its event.
    fn set_status(&mut self, status: &str, reason: Option<String>) {
        self.status = status.to_owned();
        self.reason = reason.clone();
        self.updated_ms = nimbus_types::time::now_ms();
        let (name, id) = (self.name.clone(), self.id.clone());
        self.event(&name, &id, "AWS::CloudFormation::Stack", status, reason);
    }
}

/// The node's stacks.
pub struct Stacks {
    store: Arc<dyn StackStore>,
    /// The node's router, which holds the stacks in turn: held weakly, so that a stopped
    /// node's parts (and its store's file lock) are released; the node keeps it alive.
    dispatch: OnceLock<std::sync::Weak<dyn Dispatch>>,
    region: String,
    /// The node's `host:port`, sent as the `Host` of the stack's requests (queue URLs and the
    /// like are made from it).
    host: String,
    shifts: providers::Shifts,
    stacks: Mutex<HashMap<String, Stack>>,
    /// Held while a stack's record changes, so that two requests cannot both start an operation.
    gate: tokio::sync::Mutex<()>,
}

impl Stacks {
    /// Reads the stacks from `store`.
    pub fn open(
        store: Arc<dyn StackStore>,
        region: &str,
        host: &str,
        shifts: providers::Shifts,
    ) -> Result<Arc<Self>, StackError> {
        let mut stacks = HashMap::new();
        for v in store
            .stacks()
            .map_err(|e| StackError::internal(e.to_string()))?
        {
            match serde_json::from_value::<Stack>(v) {
                Ok(s) => {
                    stacks.insert(s.id.clone(), s);
                }
                Err(e) => tracing::error!(error = %e, "a stack record could not be read"),
            }
        }
        Ok(Arc::new(Self {
            store,
            dispatch: OnceLock::new(),
            region: region.to_owned(),
            host: host.to_owned(),
            shifts,
            stacks: Mutex::new(stacks),
            gate: tokio::sync::Mutex::new(()),
        }))
    }

    /// Connects the stacks to the node's APIs, and rolls back any operation a stop cut short.
    /// The caller keeps `dispatch` alive for as long as the node serves.
    pub fn connect(self: &Arc<Self>, dispatch: &Arc<dyn Dispatch>) {
        if self.dispatch.set(Arc::downgrade(dispatch)).is_err() {
            return;
        }
        let interrupted: Vec<Stack> = self
            .lock()
            .values()
            .filter(|s| s.in_progress())
            .cloned()
            .collect();
        for stack in interrupted {
            let this = self.clone();
            tokio::spawn(async move {
                tracing::warn!(stack = %stack.name, status = %stack.status, "an operation was cut short; rolling it back");
                let caller = Caller::root(&stack.account);
                this.recover(stack, caller).await;
            });
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Stack>> {
        self.stacks.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn save(&self, stack: &Stack) {
        let value = serde_json::to_value(stack).unwrap_or(Value::Null);
        if let Err(e) = self.store.put_stack(&stack.id, &value) {
            tracing::error!(error = %e, stack = %stack.name, "a stack record could not be written");
        }
        self.lock().insert(stack.id.clone(), stack.clone());
    }

    /// The live (not deleted) stack of `account` named `name_or_id` (a name or a stack id).
    pub fn find(&self, account: &str, name_or_id: &str) -> Option<Stack> {
        let stacks = self.lock();
        if let Some(s) = stacks.get(name_or_id).filter(|s| s.account == account) {
            return Some(s.clone());
        }
        stacks
            .values()
            .find(|s| s.account == account && s.name == name_or_id && !s.is_deleted())
            .cloned()
    }

    /// Every stack of `account`, deleted ones included, newest first.
    pub fn list(&self, account: &str) -> Vec<Stack> {
        let mut out: Vec<Stack> = self
            .lock()
            .values()
            .filter(|s| s.account == account)
            .cloned()
            .collect();
        out.sort_by(|a, b| b.created_ms.cmp(&a.created_ms).then(a.name.cmp(&b.name)));
        out
    }

    /// Exported output values of `account`'s live stacks.
    pub fn exports(&self, account: &str) -> BTreeMap<String, (String, String)> {
        let mut out = BTreeMap::new();
        for s in self
            .lock()
            .values()
            .filter(|s| s.account == account && !s.is_deleted())
        {
            for o in &s.outputs {
                if let Some(name) = &o.export_name {
                    out.insert(name.clone(), (o.value.clone(), s.id.clone()));
                }
            }
        }
        out
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    fn dispatch(&self) -> Result<Arc<dyn Dispatch>, StackError> {
        self.dispatch
            .get()
            .and_then(std::sync::Weak::upgrade)
            .ok_or_else(|| StackError::internal("The node's APIs are not ready."))
    }
}

/// `v` with the first letter of every key upper-cased (`upper`) or lower-cased, except inside
/// the values of `keep` (maps of the user's own keys).
pub(crate) fn recase(v: &Value, upper: bool, keep: &[&str]) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let mut c = k.chars();
                    let first = c.next().map(|f| {
                        if upper {
                            f.to_ascii_uppercase()
                        } else {
                            f.to_ascii_lowercase()
                        }
                    });
                    let key = first
                        .map(|f| f.to_string() + c.as_str())
                        .unwrap_or_default();
                    let value = if keep.contains(&k.as_str()) {
                        v.clone()
                    } else {
                        recase(v, upper, keep)
                    };
                    (key, value)
                })
                .collect(),
        ),
        Value::Array(a) => Value::Array(a.iter().map(|x| recase(x, upper, keep)).collect()),
        other => other.clone(),
    }
}

/// A stack name as CloudFormation takes them: a letter, then letters, digits and hyphens, up
/// to 128 characters.
pub fn check_stack_name(name: &str) -> Result<(), StackError> {
    let ok = name.len() <= 128
        && name.chars().next().is_some_and(|c| c.is_ascii_alphabetic())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '-');
    if ok {
        Ok(())
    } else {
        Err(StackError::validation(format!(
            "1 validation error detected: Value '{name}' at 'stackName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*"
        )))
    }
}

impl Stacks {
    /// A template stored in the node's S3, named by `url` (`https://s3.amazonaws.com/B/K`,
    /// `https://B.s3.amazonaws.com/K`, or the node's own `http://HOST/B/K`), read as `caller`.
    pub async fn fetch_template(&self, caller: &Caller, url: &str) -> Result<String, StackError> {
        let invalid = || {
            StackError::validation(format!(
                "TemplateURL must be a URL of an object in this node's S3: {url}"
            ))
        };
        let rest = url
            .strip_prefix("https://")
            .or_else(|| url.strip_prefix("http://"))
            .ok_or_else(invalid)?;
        let (host, path) = rest.split_once('/').ok_or_else(invalid)?;
        let host = host.split(':').next().unwrap_or(host);
        let path = path.split('?').next().unwrap_or(path);
        let object = match host.split_once(".s3") {
            Some((bucket, _))
                if !bucket.is_empty() && !host.starts_with("s3.") && !host.starts_with("s3-") =>
            {
                format!("/{bucket}/{path}")
            }
            _ => format!("/{path}"),
        };
        let dispatch = self.dispatch()?;
        let ctx = providers::Ctx {
            dispatch: dispatch.as_ref(),
            caller,
            region: &self.region,
            host: &self.host,
            shifts: &self.shifts,
            stack_name: "",
        };
        let reply = ctx
            .s3(axum::http::Method::GET, &object, Vec::new())
            .await
            .map_err(|e| {
                StackError::validation(format!(
                    "TemplateURL {url} could not be read: {}",
                    e.message
                ))
            })?;
        if reply.body.len() > yaml::MAX_TEMPLATE_BYTES {
            return Err(StackError::validation(
                "The template at TemplateURL is larger than 1 MB.",
            ));
        }
        String::from_utf8(reply.body)
            .map_err(|_| StackError::validation("The template at TemplateURL is not UTF-8 text."))
    }

    /// A template after the SAM transform, as `GetTemplate` shows its `Processed` stage.
    pub fn processed(text: &str) -> Result<Value, StackError> {
        let raw = yaml::parse(text)?;
        let Value::Object(mut map) = raw else {
            return Ok(raw);
        };
        if template::wants_sam(&map)? {
            sam::transform(&mut map)?;
        }
        Ok(Value::Object(map))
    }
}
