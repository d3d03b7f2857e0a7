//! Change sets planned, executed and rolled back; stacks deleted.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use nimbus_identity::Caller;
use serde_json::Value;

use crate::intrinsic::{Made, Scope};
use crate::providers::{self, Ctx};
use crate::template::{self, Template};
use crate::{
    Change, ChangeSet, Deployed, Output, Stack, StackError, Stacks, Step, check_stack_name,
};

/// The most change sets a stack keeps (each holds a template).
const MAX_CHANGE_SETS: usize = 20;

/// A template loaded and bound: what planning and executing share.
pub struct Plan {
    pub template: Template,
    pub parameters: BTreeMap<String, Value>,
    pub conditions: BTreeMap<String, bool>,
    pub order: Vec<String>,
}

/// Parses and transforms a template's text.
pub fn load(text: &str) -> Result<Template, StackError> {
    let raw = crate::yaml::parse(text)?;
    let Value::Object(mut map) = raw else {
        return Err(StackError::validation(
            "Template format error: a template is a map.",
        ));
    };
    if template::wants_sam(&map)? {
        crate::sam::transform(&mut map)?;
    } else if map.contains_key("Globals") {
        return Err(StackError::validation(
            "Template format error: Globals needs Transform: AWS::Serverless-2016-10-31.",
        ));
    }
    Template::from_raw(&Value::Object(map))
}

/// The name a resource the template does not name gets: `{stack}-{logical id}-{random}`,
/// except a layer's, whose versions share one name (`{stack}-{logical id}`) so that a new
/// version of the same resource is the next number of the same layer.
fn made_name(ctx: &Ctx<'_>, kind: &str, id: &str) -> String {
    if kind == "AWS::Lambda::LayerVersion" {
        return format!("{}-{id}", ctx.stack_name)
            .chars()
            .take(140)
            .collect();
    }
    let (max, lower) = name_rules(kind);
    ctx.made_name(id, max, lower)
}

/// The most characters of a made-up name, and whether it must be lower case, per type.
fn name_rules(kind: &str) -> (usize, bool) {
    match kind {
        "AWS::Lambda::Function" | "AWS::IAM::Role" | "AWS::Events::Rule" => (64, false),
        "AWS::SQS::Queue" => (75, false),
        "AWS::S3::Bucket" => (63, true),
        "AWS::Lambda::Permission" => (100, false),
        _ => (128, false),
    }
}

impl Stacks {
    fn scope<'a>(&self, stack: &Stack, plan: &'a Plan, account: &str) -> Scope<'a> {
        let mut scope = Scope {
            parameters: plan.parameters.clone(),
            pseudo: Scope::pseudo_for(account, &self.region, &stack.name, &stack.id),
            mappings: Some(&plan.template.mappings),
            conditions: plan.conditions.clone(),
            declared: plan.template.resources.keys().cloned().collect(),
            ..Default::default()
        };
        scope.exports = self
            .exports(account)
            .into_iter()
            .filter(|(_, (_, owner))| *owner != stack.id)
            .map(|(k, (v, _))| (k, v))
            .collect();
        scope
    }

    /// Loads a template, binds its parameters and orders its resources; refuses types,
    /// properties and attributes this node does not have.
    pub fn plan(
        &self,
        stack: &Stack,
        account: &str,
        text: &str,
        given: &BTreeMap<String, String>,
    ) -> Result<Plan, StackError> {
        let template = load(text)?;
        let parameters = template.bind(given)?;
        let mut plan = Plan {
            template,
            parameters,
            conditions: BTreeMap::new(),
            order: Vec::new(),
        };
        let conditions = plan
            .template
            .evaluate_conditions(&self.scope(stack, &plan, account))?;
        plan.conditions = conditions;
        let scope = self.scope(stack, &plan, account);
        let mut names: BTreeSet<String> = plan.parameters.keys().cloned().collect();
        names.extend(scope.pseudo.keys().map(|k| (*k).to_owned()));
        names.insert(crate::intrinsic::NO_VALUE.to_owned());
        let order = plan.template.plan_order(&plan.conditions, &names)?;
        for id in &order {
            let r = &plan.template.resources[id];
            if !providers::TYPES.contains(&r.kind.as_str()) {
                return Err(StackError::validation(format!(
                    "Resource {id}: type {} is not supported by this node. Supported: {}.",
                    r.kind,
                    providers::TYPES.join(", ")
                )));
            }
            let known = providers::properties_of(&r.kind);
            if let Value::Object(p) = &r.properties
                && let Some(k) = p.keys().find(|k| !known.contains(&k.as_str()))
            {
                return Err(StackError::validation(format!(
                    "Resource {id} ({}): property {k} is not supported by this node.",
                    r.kind
                )));
            }
        }
        check_attributes(&plan.template)?;
        plan.order = order;
        Ok(plan)
    }

    /// What executing `plan` would change in `stack`.
    fn changes(
        &self,
        stack: &Stack,
        plan: &Plan,
        account: &str,
    ) -> Result<Vec<Change>, StackError> {
        let mut scope = self.scope(stack, plan, account);
        // Resources not made yet stand for placeholders, so a change that follows from theirs
        // shows as one.
        for (id, r) in &plan.template.resources {
            let made = match stack.resources.get(id) {
                Some(d) if d.kind == r.kind => d.made.clone(),
                _ => Made {
                    reference: format!("{{{{{id}}}}}"),
                    attributes: providers::attributes_of(&r.kind)
                        .iter()
                        .map(|a| ((*a).to_owned(), Value::String(format!("{{{{{id}.{a}}}}}"))))
                        .collect(),
                },
            };
            scope.resources.insert(id.clone(), made);
        }
        let mut changes = Vec::new();
        for id in &plan.order {
            let r = &plan.template.resources[id];
            let props = match scope.value(&r.properties, &format!("Resources.{id}.Properties")) {
                Ok(p) => p,
                // A value that depends on a resource not made yet (or about to change) can be
                // known only when the change set runs, which checks it then.
                Err(e) => {
                    let mut names = std::collections::BTreeSet::new();
                    crate::intrinsic::references(
                        &r.properties,
                        &plan.template.resources.keys().cloned().collect(),
                        &mut names,
                    );
                    if names.is_empty() {
                        return Err(e);
                    }
                    Value::String(format!(
                        "{{{{unknown until the change set runs: {}}}}}",
                        e.message
                    ))
                }
            };
            match stack.resources.get(id) {
                None => changes.push(Change {
                    action: "Add".into(),
                    logical_id: id.clone(),
                    physical_id: None,
                    kind: r.kind.clone(),
                    replacement: None,
                }),
                Some(d) if d.kind != r.kind => changes.push(Change {
                    action: "Modify".into(),
                    logical_id: id.clone(),
                    physical_id: Some(d.made.reference.clone()),
                    kind: r.kind.clone(),
                    replacement: Some("True".into()),
                }),
                Some(d) if d.properties != props => {
                    let unknown = props.to_string().contains("{{");
                    let replacement = if providers::replaces(&r.kind, &d.properties, &props) {
                        if unknown { "Conditional" } else { "True" }
                    } else {
                        "False"
                    };
                    changes.push(Change {
                        action: "Modify".into(),
                        logical_id: id.clone(),
                        physical_id: Some(d.made.reference.clone()),
                        kind: r.kind.clone(),
                        replacement: Some(replacement.into()),
                    });
                }
                Some(_) => {}
            }
        }
        for (id, d) in &stack.resources {
            if !plan.order.contains(id) {
                changes.push(Change {
                    action: "Remove".into(),
                    logical_id: id.clone(),
                    physical_id: Some(d.made.reference.clone()),
                    kind: d.kind.clone(),
                    replacement: None,
                });
            }
        }
        Ok(changes)
    }

    /// `CreateChangeSet`: plans `text` against the stack (made, in `REVIEW_IN_PROGRESS`, for
    /// a `CREATE`). Returns the change set's id and the stack's.
    #[allow(clippy::too_many_arguments)]
    pub async fn create_change_set(
        &self,
        caller: &Caller,
        stack_name: &str,
        change_set_name: &str,
        kind: Option<&str>,
        text: &str,
        parameters: BTreeMap<String, String>,
        description: Option<String>,
        tags: BTreeMap<String, String>,
    ) -> Result<(String, String), StackError> {
        check_stack_name(stack_name)?;
        check_stack_name(change_set_name).map_err(|_| {
            StackError::validation(format!(
                "1 validation error detected: Value '{change_set_name}' at 'changeSetName' failed to satisfy constraint: Member must satisfy regular expression pattern: [a-zA-Z][-a-zA-Z0-9]*"
            ))
        })?;
        let _gate = self.gate.lock().await;
        let account = caller.account.clone();
        let existing = self.find(&account, stack_name);
        let now = nimbus_types::time::now_ms();
        let mut stack = match (existing, kind.unwrap_or("UPDATE")) {
            (Some(s), "CREATE") if s.status != "REVIEW_IN_PROGRESS" => {
                return Err(StackError::exists(format!(
                    "Stack [{stack_name}] already exists"
                )));
            }
            (Some(s), _) => {
                if s.in_progress() {
                    return Err(StackError::validation(format!(
                        "Stack:{} is in {} state and can not be updated.",
                        s.id, s.status
                    )));
                }
                if s.status == "ROLLBACK_COMPLETE"
                    || s.status == "ROLLBACK_FAILED"
                    || s.status == "DELETE_FAILED"
                {
                    return Err(StackError::validation(format!(
                        "Stack:{} is in {} state and can not be updated.",
                        s.id, s.status
                    )));
                }
                s
            }
            (None, "CREATE") => Stack {
                id: format!(
                    "arn:aws:cloudformation:{}:{account}:stack/{stack_name}/{}",
                    self.region,
                    uuid::Uuid::new_v4()
                ),
                name: stack_name.to_owned(),
                account: account.clone(),
                status: "REVIEW_IN_PROGRESS".into(),
                reason: Some("User Initiated".into()),
                created_ms: now,
                updated_ms: now,
                description: None,
                template_body: String::new(),
                parameters: BTreeMap::new(),
                resources: BTreeMap::new(),
                order: Vec::new(),
                outputs: Vec::new(),
                change_sets: Vec::new(),
                events: Vec::new(),
                journal: Vec::new(),
                before: None,
                before_order: Vec::new(),
                tags,
            },
            (None, "UPDATE") => {
                return Err(StackError::validation(format!(
                    "Stack [{stack_name}] does not exist"
                )));
            }
            (None, other) => {
                return Err(StackError::validation(format!(
                    "ChangeSetType {other} is not CREATE or UPDATE."
                )));
            }
        };
        // A change set that found nothing to change leaves its name free again.
        stack
            .change_sets
            .retain(|c| !(c.name == change_set_name && c.status == "FAILED"));
        if stack.change_sets.iter().any(|c| c.name == change_set_name) {
            return Err(StackError::exists(format!(
                "ChangeSet {change_set_name} already exists"
            )));
        }
        let plan = self.plan(&stack, &account, text, &parameters)?;
        let changes = self.changes(&stack, &plan, &account)?;
        let id = format!(
            "arn:aws:cloudformation:{}:{account}:changeSet/{change_set_name}/{}",
            self.region,
            uuid::Uuid::new_v4()
        );
        let no_changes = changes.is_empty()
            && stack.status != "REVIEW_IN_PROGRESS"
            && stack.template_body == text;
        let (status, reason, execution) = if no_changes {
            (
                "FAILED",
                Some("The submitted information didn't contain changes. Submit different information to create a change set.".to_owned()),
                "UNAVAILABLE",
            )
        } else {
            ("CREATE_COMPLETE", None, "AVAILABLE")
        };
        if stack.change_sets.len() >= MAX_CHANGE_SETS {
            return Err(StackError::validation(format!(
                "Stack {} already has {MAX_CHANGE_SETS} change sets; delete some first.",
                stack.name
            )));
        }
        stack.change_sets.push(ChangeSet {
            id: id.clone(),
            name: change_set_name.to_owned(),
            created_ms: now,
            description,
            kind: if stack.status == "REVIEW_IN_PROGRESS" {
                "CREATE"
            } else {
                "UPDATE"
            }
            .into(),
            template_body: text.to_owned(),
            parameters,
            changes,
            status: status.into(),
            status_reason: reason,
            execution_status: execution.into(),
        });
        if stack.events.is_empty() {
            stack.set_status("REVIEW_IN_PROGRESS", Some("User Initiated".into()));
        }
        let stack_id = stack.id.clone();
        self.save(&stack);
        Ok((id, stack_id))
    }

    /// The change set named `name` (or by id) of a stack.
    pub fn change_set(
        &self,
        account: &str,
        stack_name: Option<&str>,
        name: &str,
    ) -> Result<(Stack, ChangeSet), StackError> {
        let stacks: Vec<Stack> = match stack_name {
            Some(s) => self.find(account, s).into_iter().collect(),
            None => self
                .list(account)
                .into_iter()
                .filter(|s| !s.is_deleted())
                .collect(),
        };
        for s in stacks {
            if let Some(c) = s
                .change_sets
                .iter()
                .find(|c| c.name == name || c.id == name)
            {
                let c = c.clone();
                return Ok((s, c));
            }
        }
        Err(StackError::missing_change_set(name))
    }

    pub async fn delete_change_set(
        &self,
        account: &str,
        stack_name: Option<&str>,
        name: &str,
    ) -> Result<(), StackError> {
        let _gate = self.gate.lock().await;
        let (mut stack, c) = self.change_set(account, stack_name, name)?;
        if stack.in_progress() || c.execution_status == "EXECUTE_IN_PROGRESS" {
            return Err(StackError::validation(
                "A change set that is executing cannot be deleted.",
            ));
        }
        stack.change_sets.retain(|x| x.id != c.id);
        self.save(&stack);
        Ok(())
    }

    /// `ExecuteChangeSet`: starts applying the change set; the stack's status and events tell
    /// how it goes.
    pub async fn execute_change_set(
        self: &Arc<Self>,
        caller: &Caller,
        stack_name: Option<&str>,
        name: &str,
    ) -> Result<(), StackError> {
        let dispatch = self.dispatch()?;
        let _gate = self.gate.lock().await;
        let (mut stack, c) = self.change_set(&caller.account, stack_name, name)?;
        if stack.in_progress() {
            return Err(StackError::validation(format!(
                "Stack:{} is in {} state and can not be updated.",
                stack.id, stack.status
            )));
        }
        if c.execution_status != "AVAILABLE" {
            return Err(StackError {
                code: "InvalidChangeSetStatus",
                message: format!(
                    "ChangeSet [{}] cannot be executed in its current execution status of [{}]",
                    c.id, c.execution_status
                ),
            });
        }
        let plan = self.plan(&stack, &caller.account, &c.template_body, &c.parameters)?;
        let creating = c.kind == "CREATE";
        for other in &mut stack.change_sets {
            other.execution_status = if other.id == c.id {
                "EXECUTE_IN_PROGRESS"
            } else {
                "OBSOLETE"
            }
            .into();
        }
        stack.before = Some(stack.resources.clone());
        stack.before_order = stack.order.clone();
        stack.journal.clear();
        stack.set_status(
            if creating {
                "CREATE_IN_PROGRESS"
            } else {
                "UPDATE_IN_PROGRESS"
            },
            Some("User Initiated".into()),
        );
        self.save(&stack);
        let this = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            this.run(stack, plan, c, caller, dispatch).await;
        });
        Ok(())
    }

    async fn run(
        &self,
        mut stack: Stack,
        plan: Plan,
        change_set: ChangeSet,
        caller: Caller,
        dispatch: Arc<dyn providers::Dispatch>,
    ) {
        let creating = change_set.kind == "CREATE";
        let stack_name = stack.name.clone();
        let ctx = Ctx {
            dispatch: dispatch.as_ref(),
            caller: &caller,
            region: &self.region,
            host: &self.host,
            shifts: &self.shifts,
            stack_name: &stack_name,
        };
        let mut scope = self.scope(&stack, &plan, &caller.account);
        let applied = self.apply(&mut stack, &plan, &ctx, &mut scope).await;
        let outputs = match applied {
            Ok(()) => outputs(&plan, &scope, &self.exports(&caller.account), &stack.id),
            Err(e) => Err(e),
        };
        match outputs {
            Ok(outputs) => {
                // The new state is recorded before the old resources go, so that a stop during
                // the cleanup resumes it (see `recover`).
                stack.outputs = outputs;
                stack.order = plan.order.clone();
                stack.template_body = change_set.template_body.clone();
                // Every parameter with the value it took (a default too), as DescribeStacks
                // shows them.
                stack.parameters = plan
                    .parameters
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.clone(),
                            crate::intrinsic::scalar_text(v).unwrap_or_default(),
                        )
                    })
                    .collect();
                stack.description = plan.template.description.clone();
                if !creating {
                    stack.set_status("UPDATE_COMPLETE_CLEANUP_IN_PROGRESS", None);
                    self.save(&stack);
                }
                self.cleanup(&mut stack, &ctx).await;
                stack.journal.clear();
                stack.before = None;
                // As CloudFormation does, an executed stack keeps no change sets.
                stack.change_sets.clear();
                stack.set_status(
                    if creating {
                        "CREATE_COMPLETE"
                    } else {
                        "UPDATE_COMPLETE"
                    },
                    None,
                );
                self.save(&stack);
            }
            Err(e) => {
                for c in &mut stack.change_sets {
                    if c.id == change_set.id {
                        c.execution_status = "EXECUTE_FAILED".into();
                    }
                }
                let reason = e.message.clone();
                stack.set_status(
                    if creating {
                        "ROLLBACK_IN_PROGRESS"
                    } else {
                        "UPDATE_ROLLBACK_IN_PROGRESS"
                    },
                    Some(format!("The following resource(s) failed: {reason}")),
                );
                self.save(&stack);
                self.rollback(&mut stack, &ctx, creating).await;
            }
        }
    }

    async fn apply(
        &self,
        stack: &mut Stack,
        plan: &Plan,
        ctx: &Ctx<'_>,
        scope: &mut Scope<'_>,
    ) -> Result<(), StackError> {
        let before = stack.before.clone().unwrap_or_default();
        for id in &plan.order {
            let r = &plan.template.resources[id];
            let fail = |stack: &mut Stack, status: &str, physical: &str, message: String| {
                stack.event(id, physical, &r.kind, status, Some(message.clone()));
                StackError::validation(format!("[{id}] {message}"))
            };
            let props = match scope.value(&r.properties, &format!("Resources.{id}.Properties")) {
                Ok(p) => p,
                Err(e) => return Err(fail(stack, "CREATE_FAILED", "", e.message)),
            };
            let previous = before.get(id);
            if let Some(d) = previous
                && d.kind == r.kind
                && d.properties == props
            {
                scope.resources.insert(id.clone(), d.made.clone());
                // Unchanged, but its policies are the template's as it is now.
                if let Some(current) = stack.resources.get_mut(id) {
                    current.retain = r.retain;
                    current.retain_on_replace = r.retain_on_replace;
                }
                continue;
            }
            match previous {
                Some(d)
                    if d.kind == r.kind && !providers::replaces(&r.kind, &d.properties, &props) =>
                {
                    stack.journal.push(Step::Update {
                        logical_id: id.clone(),
                        before: d.clone(),
                        after: props.clone(),
                    });
                    stack.event(id, &d.made.reference, &r.kind, "UPDATE_IN_PROGRESS", None);
                    self.save(stack);
                    match providers::update(ctx, &r.kind, &d.made, &d.properties, &props).await {
                        Ok(made) => {
                            self.record(stack, scope, id, r, props, made, "UPDATE_COMPLETE");
                        }
                        Err(e) => {
                            return Err(fail(stack, "UPDATE_FAILED", &d.made.reference, e.message));
                        }
                    }
                }
                Some(d) => {
                    if let Some(np) = providers::name_property(&r.kind)
                        && d.kind == r.kind
                        && props.get(np).is_some()
                        && props.get(np) == d.properties.get(np)
                    {
                        let name = props.get(np).map(|v| v.to_string()).unwrap_or_default();
                        return Err(fail(
                            stack,
                            "UPDATE_FAILED",
                            &d.made.reference,
                            format!(
                                "CloudFormation cannot update a stack when a custom-named resource requires replacing. Rename {name} and update the stack again."
                            ),
                        ));
                    }
                    let name = made_name(ctx, &r.kind, id);
                    stack.journal.push(Step::Replace {
                        logical_id: id.clone(),
                        before: d.clone(),
                        kind: r.kind.clone(),
                        name: name.clone(),
                        properties: props.clone(),
                        made: None,
                    });
                    stack.event(id, &d.made.reference, &r.kind, "UPDATE_IN_PROGRESS", Some("Requested update requires the creation of a new physical resource; hence creating one.".into()));
                    self.save(stack);
                    match providers::create(ctx, &r.kind, &name, &props).await {
                        Ok(made) => {
                            if let Some(Step::Replace { made: m, .. }) = stack.journal.last_mut() {
                                *m = Some(made.clone());
                            }
                            self.record(stack, scope, id, r, props, made, "UPDATE_COMPLETE");
                        }
                        Err(e) => {
                            // Refused by its API: nothing was made (providers undo their own
                            // partial work), so there is nothing to undo, and nothing that
                            // merely has the name may be deleted.
                            stack.journal.pop();
                            return Err(fail(stack, "UPDATE_FAILED", "", e.message));
                        }
                    }
                }
                None => {
                    let name = made_name(ctx, &r.kind, id);
                    stack.journal.push(Step::Create {
                        logical_id: id.clone(),
                        kind: r.kind.clone(),
                        name: name.clone(),
                        properties: props.clone(),
                        made: None,
                    });
                    stack.event(id, "", &r.kind, "CREATE_IN_PROGRESS", None);
                    self.save(stack);
                    match providers::create(ctx, &r.kind, &name, &props).await {
                        Ok(made) => {
                            if let Some(Step::Create { made: m, .. }) = stack.journal.last_mut() {
                                *m = Some(made.clone());
                            }
                            self.record(stack, scope, id, r, props, made, "CREATE_COMPLETE");
                        }
                        Err(e) => {
                            // As above: nothing made, nothing to undo.
                            stack.journal.pop();
                            return Err(fail(stack, "CREATE_FAILED", "", e.message));
                        }
                    }
                }
            }
        }
        Ok(())
    }

    /// Records a resource made or changed by `apply`.
    #[allow(clippy::too_many_arguments)]
    fn record(
        &self,
        stack: &mut Stack,
        scope: &mut Scope<'_>,
        id: &str,
        r: &crate::template::Resource,
        properties: Value,
        made: Made,
        status: &str,
    ) {
        stack.event(id, &made.reference, &r.kind, status, None);
        scope.resources.insert(id.to_owned(), made.clone());
        stack.resources.insert(
            id.to_owned(),
            Deployed {
                kind: r.kind.clone(),
                properties,
                made,
                status: status.into(),
                updated_ms: nimbus_types::time::now_ms(),
                retain: r.retain,
                retain_on_replace: r.retain_on_replace,
            },
        );
        self.save(stack);
    }

    /// Deletes what the new template no longer has and what was replaced, newest first.
    /// The stack's record says what it has now (`resources`, `order`); what it had before the
    /// operation is in `before` and the journal's replacements, so a node that stops in the
    /// middle of this resumes it.
    async fn cleanup(&self, stack: &mut Stack, ctx: &Ctx<'_>) {
        let before = stack.before.clone().unwrap_or_default();
        let replaced: BTreeMap<String, Deployed> = stack
            .journal
            .iter()
            .filter_map(|s| match s {
                Step::Replace {
                    logical_id, before, ..
                } => Some((logical_id.clone(), before.clone())),
                _ => None,
            })
            .collect();
        let mut order = stack.before_order.clone();
        for id in before.keys() {
            if !order.contains(id) {
                order.push(id.clone());
            }
        }
        let current = stack.order.clone();
        for id in order.iter().rev() {
            let (old, retained) = match (replaced.get(id), current.contains(id)) {
                (Some(old), _) => (old.clone(), old.retain_on_replace),
                (None, false) => match before.get(id) {
                    Some(d) => (d.clone(), d.retain),
                    None => continue,
                },
                (None, true) => continue,
            };
            if !current.contains(id) {
                stack.resources.remove(id);
            }
            // Two resources of the stack can name one physical resource (a version published
            // again unchanged is the same version): one still in use is not deleted.
            let shared = stack
                .resources
                .values()
                .any(|d| d.kind == old.kind && d.made.reference == old.made.reference);
            if retained || shared {
                stack.event(id, &old.made.reference, &old.kind, "DELETE_SKIPPED", None);
                continue;
            }
            stack.event(
                id,
                &old.made.reference,
                &old.kind,
                "DELETE_IN_PROGRESS",
                None,
            );
            match providers::delete(ctx, &old.kind, &old.made, &old.properties).await {
                Ok(()) => stack.event(id, &old.made.reference, &old.kind, "DELETE_COMPLETE", None),
                Err(e) => {
                    tracing::warn!(stack = %stack.name, resource = %id, error = %e.message, "a resource the stack no longer has could not be deleted");
                    stack.event(
                        id,
                        &old.made.reference,
                        &old.kind,
                        "DELETE_FAILED",
                        Some(e.message),
                    );
                }
            }
            self.save(stack);
        }
    }

    /// Undoes the journal's steps, newest first, and puts the stack's resources back as they
    /// were.
    async fn rollback(&self, stack: &mut Stack, ctx: &Ctx<'_>, creating: bool) {
        let mut failed = None;
        // Each step leaves the journal once undone, so a stop during the rollback resumes it.
        while let Some(step) = stack.journal.last().cloned() {
            match &step {
                Step::Create {
                    logical_id,
                    kind,
                    name,
                    properties,
                    made,
                }
                | Step::Replace {
                    logical_id,
                    kind,
                    name,
                    properties,
                    made,
                    ..
                } => {
                    // Records from before `Replace` kept its kind had the old one's.
                    let kind = match &step {
                        Step::Replace { before, kind, .. } if kind.is_empty() => &before.kind,
                        _ => kind,
                    };
                    let named_by_template = providers::name_property(kind)
                        .and_then(|p| providers::text(properties, p))
                        .is_some();
                    let shared = matches!(&step, Step::Replace { before, made: Some(m), .. }
                        if before.kind == *kind && before.made.reference == m.reference);
                    let target = match made {
                        Some(m) if !shared => m.clone(),
                        // The same physical resource as the one it replaced: nothing to undo.
                        Some(_) => {
                            stack.journal.pop();
                            self.save(stack);
                            continue;
                        }
                        // Cut short before the API answered: if it made the resource, it has
                        // the name it was given. A name the template chose may be another
                        // resource's, made before the stack: that is left alone.
                        None if named_by_template => {
                            stack.event(
                                logical_id,
                                "",
                                kind,
                                "DELETE_SKIPPED",
                                Some("The step was cut short; a resource named by the template is not deleted by its name.".into()),
                            );
                            stack.journal.pop();
                            self.save(stack);
                            continue;
                        }
                        None => Made {
                            reference: name.clone(),
                            attributes: BTreeMap::new(),
                        },
                    };
                    stack.event(
                        logical_id,
                        &target.reference,
                        kind,
                        "DELETE_IN_PROGRESS",
                        None,
                    );
                    match providers::delete(ctx, kind, &target, properties).await {
                        Ok(()) => stack.event(
                            logical_id,
                            &target.reference,
                            kind,
                            "DELETE_COMPLETE",
                            None,
                        ),
                        Err(e) if made.is_none() => {
                            tracing::debug!(error = %e.message, "nothing to undo for a step cut short");
                            stack.event(
                                logical_id,
                                &target.reference,
                                kind,
                                "DELETE_COMPLETE",
                                None,
                            );
                        }
                        Err(e) => {
                            stack.event(
                                logical_id,
                                &target.reference,
                                kind,
                                "DELETE_FAILED",
                                Some(e.message.clone()),
                            );
                            failed.get_or_insert(format!("[{logical_id}] {}", e.message));
                        }
                    }
                }
                Step::Update {
                    logical_id,
                    before,
                    after,
                } => {
                    stack.event(
                        logical_id,
                        &before.made.reference,
                        &before.kind,
                        "UPDATE_IN_PROGRESS",
                        None,
                    );
                    // Back at once: a rollback does not shift traffic step by step.
                    let mut target = before.properties.clone();
                    if let Some(props) = target.as_object_mut() {
                        props.remove("DeploymentPreference");
                    }
                    match providers::update(ctx, &before.kind, &before.made, after, &target).await {
                        Ok(_) => stack.event(
                            logical_id,
                            &before.made.reference,
                            &before.kind,
                            "UPDATE_COMPLETE",
                            None,
                        ),
                        Err(e) => {
                            stack.event(
                                logical_id,
                                &before.made.reference,
                                &before.kind,
                                "UPDATE_FAILED",
                                Some(e.message.clone()),
                            );
                            failed.get_or_insert(format!("[{logical_id}] {}", e.message));
                        }
                    }
                }
            }
            stack.journal.pop();
            self.save(stack);
        }
        stack.resources = stack.before.take().unwrap_or_default();
        stack.order = std::mem::take(&mut stack.before_order);
        let status = match (creating, &failed) {
            (true, None) => "ROLLBACK_COMPLETE",
            (true, Some(_)) => "ROLLBACK_FAILED",
            (false, None) => "UPDATE_ROLLBACK_COMPLETE",
            (false, Some(_)) => "UPDATE_ROLLBACK_FAILED",
        };
        stack.set_status(status, failed);
        self.save(stack);
    }

    /// Finishes an operation a stop cut short: a delete goes on, anything else rolls back.
    pub(crate) async fn recover(&self, mut stack: Stack, caller: Caller) {
        let Ok(dispatch) = self.dispatch() else {
            return;
        };
        let _gate = self.gate.lock().await;
        let stack_name = stack.name.clone();
        let ctx = Ctx {
            dispatch: dispatch.as_ref(),
            caller: &caller,
            region: &self.region,
            host: &self.host,
            shifts: &self.shifts,
            stack_name: &stack_name,
        };
        if stack.status == "DELETE_IN_PROGRESS" {
            self.delete_resources(&mut stack, &ctx).await;
            return;
        }
        let creating = stack.status.starts_with("CREATE") || stack.status.starts_with("ROLLBACK");
        if stack.status == "UPDATE_COMPLETE_CLEANUP_IN_PROGRESS" {
            // Everything new is in place and recorded; the old resources' deletes go on.
            self.cleanup(&mut stack, &ctx).await;
            stack.journal.clear();
            stack.before = None;
            stack.change_sets.clear();
            stack.set_status("UPDATE_COMPLETE", None);
            self.save(&stack);
            return;
        }
        stack.set_status(
            if creating {
                "ROLLBACK_IN_PROGRESS"
            } else {
                "UPDATE_ROLLBACK_IN_PROGRESS"
            },
            Some("The node stopped during the operation.".into()),
        );
        self.save(&stack);
        self.rollback(&mut stack, &ctx, creating).await;
    }

    /// `DeleteStack`: starts deleting every resource the stack made.
    pub async fn delete_stack(
        self: &Arc<Self>,
        caller: &Caller,
        name: &str,
    ) -> Result<(), StackError> {
        let dispatch = self.dispatch()?;
        let _gate = self.gate.lock().await;
        // Deleting a stack that does not exist succeeds, as CloudFormation's does.
        let Some(mut stack) = self.find(&caller.account, name) else {
            return Ok(());
        };
        if stack.is_deleted() {
            return Ok(());
        }
        if stack.in_progress() && stack.status != "DELETE_IN_PROGRESS" {
            return Err(StackError::validation(format!(
                "Stack [{}] cannot be deleted while in status {}",
                stack.name, stack.status
            )));
        }
        if stack.status == "DELETE_IN_PROGRESS" {
            return Ok(());
        }
        stack.set_status("DELETE_IN_PROGRESS", Some("User Initiated".into()));
        self.save(&stack);
        let this = self.clone();
        let caller = caller.clone();
        tokio::spawn(async move {
            let stack_name = stack.name.clone();
            let ctx = Ctx {
                dispatch: dispatch.as_ref(),
                caller: &caller,
                region: &this.region,
                host: &this.host,
                shifts: &this.shifts,
                stack_name: &stack_name,
            };
            this.delete_resources(&mut stack, &ctx).await;
        });
        Ok(())
    }

    async fn delete_resources(&self, stack: &mut Stack, ctx: &Ctx<'_>) {
        let mut order = stack.order.clone();
        for id in stack.resources.keys() {
            if !order.contains(id) {
                order.push(id.clone());
            }
        }
        let mut failed = None;
        for id in order.iter().rev() {
            let Some(d) = stack.resources.get(id).cloned() else {
                continue;
            };
            if d.retain {
                stack.event(id, &d.made.reference, &d.kind, "DELETE_SKIPPED", None);
                stack.resources.remove(id);
                continue;
            }
            stack.event(id, &d.made.reference, &d.kind, "DELETE_IN_PROGRESS", None);
            match providers::delete(ctx, &d.kind, &d.made, &d.properties).await {
                Ok(()) => {
                    stack.event(id, &d.made.reference, &d.kind, "DELETE_COMPLETE", None);
                    stack.resources.remove(id);
                }
                Err(e) => {
                    stack.event(
                        id,
                        &d.made.reference,
                        &d.kind,
                        "DELETE_FAILED",
                        Some(e.message.clone()),
                    );
                    failed.get_or_insert(format!(
                        "The following resource(s) failed to delete: [{id}]. {}",
                        e.message
                    ));
                }
            }
            self.save(stack);
        }
        match failed {
            None => {
                stack.order.clear();
                stack.outputs.clear();
                stack.change_sets.clear();
                stack.journal.clear();
                stack.set_status("DELETE_COMPLETE", None);
            }
            Some(reason) => stack.set_status("DELETE_FAILED", Some(reason)),
        }
        self.save(stack);
    }
}

/// Refuses `Fn::GetAtt` (and `${Res.Attr}`) of an attribute the resource's type does not have.
fn check_attributes(template: &Template) -> Result<(), StackError> {
    fn walk(v: &Value, template: &Template, at: &str) -> Result<(), StackError> {
        match v {
            Value::Array(a) => a.iter().try_for_each(|x| walk(x, template, at)),
            Value::Object(m) => {
                for (k, x) in m {
                    let pairs: Vec<(String, String)> = match (k.as_str(), x) {
                        ("Fn::GetAtt", Value::Array(a)) if a.len() == 2 => {
                            match (a[0].as_str(), a[1].as_str()) {
                                (Some(r), Some(attr)) => vec![(r.to_owned(), attr.to_owned())],
                                _ => vec![],
                            }
                        }
                        ("Fn::Sub", s) => {
                            let text = s
                                .as_str()
                                .or_else(|| s.get(0).and_then(Value::as_str))
                                .unwrap_or_default();
                            let mut out = Vec::new();
                            let mut rest = text;
                            while let Some(start) = rest.find("${") {
                                let after = &rest[start + 2..];
                                let Some(end) = after.find('}') else { break };
                                if let Some((r, attr)) = after[..end].split_once('.')
                                    && !r.starts_with('!')
                                    && template.resources.contains_key(r)
                                {
                                    out.push((r.to_owned(), attr.to_owned()));
                                }
                                rest = &after[end + 1..];
                            }
                            out
                        }
                        _ => vec![],
                    };
                    for (r, attr) in pairs {
                        if let Some(res) = template.resources.get(&r)
                            && providers::TYPES.contains(&res.kind.as_str())
                            && !providers::attributes_of(&res.kind).contains(&attr.as_str())
                        {
                            return Err(StackError::validation(format!(
                                "Template error: resource {r} does not support attribute type {attr} in Fn::GetAtt (at {at})."
                            )));
                        }
                    }
                    walk(x, template, &format!("{at}.{k}"))?;
                }
                Ok(())
            }
            _ => Ok(()),
        }
    }
    for (id, r) in &template.resources {
        walk(&r.properties, template, &format!("Resources.{id}"))?;
    }
    for (name, o) in &template.outputs {
        walk(o, template, &format!("Outputs.{name}"))?;
    }
    Ok(())
}

fn outputs(
    plan: &Plan,
    scope: &Scope<'_>,
    exports: &BTreeMap<String, (String, String)>,
    stack_id: &str,
) -> Result<Vec<Output>, StackError> {
    let mut out = Vec::new();
    for (key, o) in &plan.template.outputs {
        if let Some(c) = o.get("Condition").and_then(Value::as_str)
            && !scope.condition(c, &format!("Outputs.{key}"))?
        {
            continue;
        }
        let at = format!("Outputs.{key}.Value");
        let value = o.get("Value").ok_or_else(|| {
            StackError::validation(format!(
                "Template format error: Output {key} is malformed: every output needs a Value."
            ))
        })?;
        let value = crate::intrinsic::scalar_text(&scope.value(value, &at)?).ok_or_else(|| {
            StackError::validation(format!("Template error: {at} is not a string."))
        })?;
        let export_name = match o.get("Export").and_then(|e| e.get("Name")) {
            Some(n) => Some(
                crate::intrinsic::scalar_text(
                    &scope.value(n, &format!("Outputs.{key}.Export.Name"))?,
                )
                .ok_or_else(|| {
                    StackError::validation(format!(
                        "Template error: Outputs.{key}.Export.Name is not a string."
                    ))
                })?,
            ),
            None => None,
        };
        if let Some(n) = &export_name
            && let Some((_, owner)) = exports.get(n)
            && owner != stack_id
        {
            return Err(StackError::validation(format!(
                "Export with name {n} is already exported by stack {owner}"
            )));
        }
        out.push(Output {
            key: key.clone(),
            value,
            description: o
                .get("Description")
                .and_then(Value::as_str)
                .map(str::to_owned),
            export_name,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use axum::body::Body;
    use axum::http::{Request, Response};
    use nimbus_identity::Caller;

    use super::*;

    /// Answers the node's APIs from a script: tables and queues are made and deleted; a queue
    /// named `boom` is refused. Every call is remembered as `Service.Operation`.
    #[derive(Default)]
    struct Fake {
        calls: Mutex<Vec<String>>,
    }

    #[async_trait::async_trait]
    impl providers::Dispatch for Fake {
        async fn call(&self, request: Request<Body>) -> Response<Body> {
            let target = request
                .headers()
                .get("x-amz-target")
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_owned();
            let body = axum::body::to_bytes(request.into_body(), 1 << 20)
                .await
                .unwrap_or_default();
            let input: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
            self.calls.lock().unwrap().push(target.clone());
            let (status, answer) = match target.as_str() {
                "AmazonSQS.CreateQueue" if input["QueueName"] == "boom" => (
                    400,
                    serde_json::json!({"__type": "InvalidAttributeValue", "message": "no booms"}),
                ),
                "AmazonSQS.CreateQueue" => (
                    200,
                    serde_json::json!({"QueueUrl": format!("http://node/000000000000/{}", input["QueueName"].as_str().unwrap_or(""))}),
                ),
                "DynamoDB_20120810.DescribeTable" => (
                    200,
                    serde_json::json!({"Table": {"TableArn": format!("arn:aws:dynamodb:us-east-1:000000000000:table/{}", input["TableName"].as_str().unwrap_or(""))}}),
                ),
                _ => (200, serde_json::json!({})),
            };
            Response::builder()
                .status(status)
                .body(Body::from(answer.to_string()))
                .unwrap()
        }
    }

    fn stacks() -> (Arc<Stacks>, Arc<Fake>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let store =
            Arc::new(nimbus_store::EmbeddedStore::open(&dir.path().join("s.redb")).unwrap());
        let stacks = Stacks::open(
            store,
            "us-east-1",
            "node:9000",
            providers::Shifts::default(),
        )
        .unwrap();
        let fake = Arc::new(Fake::default());
        let dispatch: Arc<dyn providers::Dispatch> = fake.clone();
        // `fake` (the same allocation) keeps it alive for the test.
        stacks.connect(&dispatch);
        (stacks, fake, dir)
    }

    async fn settle(stacks: &Stacks, name: &str) -> Stack {
        for _ in 0..500 {
            let s = stacks.find("000000000000", name).unwrap();
            if !s.in_progress() {
                return s;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        panic!("stack {name} did not settle");
    }

    const TWO: &str = "Resources:\n  Table:\n    Type: AWS::DynamoDB::Table\n    Properties:\n      KeySchema: [{AttributeName: id, KeyType: HASH}]\n      AttributeDefinitions: [{AttributeName: id, AttributeType: S}]\n  Queue:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: QNAME\n      Tags: [{Key: t, Value: !Ref Table}]\n";

    #[tokio::test]
    async fn a_failed_step_deletes_what_was_made_before_it() {
        let (stacks, fake, _dir) = stacks();
        let root = Caller::root("000000000000");
        stacks
            .create_change_set(
                &root,
                "app",
                "c1",
                Some("CREATE"),
                &TWO.replace("QNAME", "boom"),
                BTreeMap::new(),
                None,
                BTreeMap::new(),
            )
            .await
            .unwrap();
        stacks
            .execute_change_set(&root, Some("app"), "c1")
            .await
            .unwrap();
        let stack = settle(&stacks, "app").await;
        assert_eq!(stack.status, "ROLLBACK_COMPLETE");
        assert!(stack.resources.is_empty() && stack.journal.is_empty());
        let calls = fake.calls.lock().unwrap().clone();
        assert_eq!(
            calls,
            vec![
                "DynamoDB_20120810.CreateTable",
                "DynamoDB_20120810.DescribeTable",
                "AmazonSQS.CreateQueue",
                // The queue was refused: nothing called `boom` is deleted (it may be someone
                // else's).
                "DynamoDB_20120810.DeleteTable",
            ]
        );
        let failed: Vec<_> = stack
            .events
            .iter()
            .filter(|e| e.status == "CREATE_FAILED")
            .collect();
        assert_eq!(failed.len(), 1);
        assert_eq!(failed[0].logical_id, "Queue");
        assert!(
            failed[0]
                .reason
                .as_deref()
                .unwrap_or_default()
                .contains("no booms")
        );
    }

    #[tokio::test]
    async fn change_sets_say_what_is_added_modified_replaced_and_removed() {
        let (stacks, _fake, _dir) = stacks();
        let root = Caller::root("000000000000");
        stacks
            .create_change_set(
                &root,
                "app",
                "c1",
                Some("CREATE"),
                &TWO.replace("QNAME", "jobs"),
                BTreeMap::new(),
                None,
                BTreeMap::new(),
            )
            .await
            .unwrap();
        stacks
            .execute_change_set(&root, Some("app"), "c1")
            .await
            .unwrap();
        assert_eq!(settle(&stacks, "app").await.status, "CREATE_COMPLETE");
        // Rename the queue (a replacement), drop the table's reference, add a second queue.
        let next = "Resources:\n  Queue:\n    Type: AWS::SQS::Queue\n    Properties:\n      QueueName: work\n  Extra:\n    Type: AWS::SQS::Queue\n";
        stacks
            .create_change_set(
                &root,
                "app",
                "c2",
                None,
                next,
                BTreeMap::new(),
                None,
                BTreeMap::new(),
            )
            .await
            .unwrap();
        let (_, c) = stacks
            .change_set("000000000000", Some("app"), "c2")
            .unwrap();
        let summary: Vec<(String, String, Option<String>)> = c
            .changes
            .iter()
            .map(|x| {
                (
                    x.action.clone(),
                    x.logical_id.clone(),
                    x.replacement.clone(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            vec![
                ("Add".to_owned(), "Extra".to_owned(), None),
                (
                    "Modify".to_owned(),
                    "Queue".to_owned(),
                    Some("True".to_owned())
                ),
                ("Remove".to_owned(), "Table".to_owned(), None),
            ]
        );
        // The same template again is no change at all.
        stacks
            .execute_change_set(&root, Some("app"), "c2")
            .await
            .unwrap();
        let stack = settle(&stacks, "app").await;
        assert_eq!(stack.status, "UPDATE_COMPLETE");
        assert_eq!(
            stack.resources["Queue"].made.reference,
            "http://node/000000000000/work"
        );
        stacks
            .create_change_set(
                &root,
                "app",
                "c3",
                None,
                next,
                BTreeMap::new(),
                None,
                BTreeMap::new(),
            )
            .await
            .unwrap();
        let (_, c) = stacks
            .change_set("000000000000", Some("app"), "c3")
            .unwrap();
        assert_eq!(c.status, "FAILED");
        assert!(c.changes.is_empty());
        // A change set that changes nothing cannot be executed.
        let err = stacks
            .execute_change_set(&root, Some("app"), "c3")
            .await
            .unwrap_err();
        assert_eq!(err.code, "InvalidChangeSetStatus");
    }
}
