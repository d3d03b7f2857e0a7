//! Scheduled rules: each due time of a rule's schedule sends one event to each of its targets,
//! as an asynchronous invocation. The due time is stored before the events are sent, so a fire
//! that already ran is never repeated after a restart. Fires missed while the node was down
//! collapse into one: at start, a rule whose due times passed fires once, for the latest.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use bytes::Bytes;
use nimbus_store::RuleStore;
use nimbus_types::queue::ScheduleRule;
use serde_json::json;

use crate::AsyncInvoker;
use crate::schedule::Schedule;

pub struct Scheduler {
    store: Arc<dyn RuleStore>,
    invoker: Arc<AsyncInvoker>,
    region: String,
    rules: RwLock<HashMap<String, ScheduleRule>>,
}

impl Scheduler {
    pub fn load(
        store: Arc<dyn RuleStore>,
        invoker: Arc<AsyncInvoker>,
        region: String,
    ) -> nimbus_store::Result<Arc<Self>> {
        let rules = store.rules()?.into_iter().map(|r| (r.key(), r)).collect();
        Ok(Arc::new(Self {
            store,
            invoker,
            region,
            rules: RwLock::new(rules),
        }))
    }

    /// The ARN of the rule held under `key` ([`nimbus_types::name::scoped`]).
    pub fn rule_arn(&self, key: &str) -> String {
        nimbus_types::arn::RuleArn::new(&self.region, key).to_string()
    }

    /// A rule by key.
    pub fn get(&self, name: &str) -> Option<ScheduleRule> {
        self.rules.read().ok()?.get(name).cloned()
    }

    pub fn all(&self) -> Vec<ScheduleRule> {
        let mut rules: Vec<_> = self
            .rules
            .read()
            .map(|r| r.values().cloned().collect())
            .unwrap_or_default();
        rules.sort_by(|a, b| a.name.cmp(&b.name));
        rules
    }

    /// An account's rules, by name.
    pub fn of(&self, account: &str) -> Vec<ScheduleRule> {
        let mut rules = self.all();
        rules.retain(|r| r.account == account);
        rules
    }

    pub fn save(&self, rule: ScheduleRule) -> nimbus_store::Result<()> {
        self.store.put_rule(&rule)?;
        if let Ok(mut rules) = self.rules.write() {
            rules.insert(rule.key(), rule);
        }
        Ok(())
    }

    /// Deletes a rule by key.
    pub fn delete(&self, name: &str) -> nimbus_store::Result<bool> {
        let existed = self.store.delete_rule(name)?;
        if let Ok(mut rules) = self.rules.write() {
            rules.remove(name);
        }
        Ok(existed)
    }

    /// EventBridge's scheduled-event JSON.
    fn event(&self, rule: &ScheduleRule, due_ms: i64) -> serde_json::Value {
        let time = time::OffsetDateTime::from_unix_timestamp(due_ms / 1000)
            .ok()
            .and_then(|t| {
                t.format(&time::format_description::well_known::Rfc3339)
                    .ok()
            })
            .unwrap_or_default();
        json!({
            "version": "0",
            "id": nimbus_queue::new_id(),
            "detail-type": "Scheduled Event",
            "source": "aws.events",
            "account": rule.account,
            "time": time,
            "region": self.region,
            "resources": [self.rule_arn(&rule.key())],
            "detail": {},
        })
    }

    async fn tick(&self) {
        let now = nimbus_types::time::now_ms();
        for mut rule in self.all() {
            if !rule.enabled || rule.targets.is_empty() {
                continue;
            }
            let Ok(schedule) = Schedule::parse(&rule.schedule_expression) else {
                continue;
            };
            let after = rule
                .last_fire_ms
                .unwrap_or(rule.enabled_ms)
                .max(rule.enabled_ms);
            let Some(mut due) = schedule.next_after(after, rule.created_ms) else {
                continue;
            };
            if due > now {
                continue;
            }
            // Several due times passed (the node was down): fire once, for the latest.
            while let Some(next) = schedule.next_after(due, rule.created_ms) {
                if next > now {
                    break;
                }
                due = next;
            }
            rule.last_fire_ms = Some(due);
            if let Err(e) = self.save(rule.clone()) {
                tracing::error!(rule = %rule.name, error = %e, "could not record a fire; skipping it");
                continue;
            }
            let event = self.event(&rule, due);
            for target in &rule.targets {
                let Ok(function) = nimbus_types::arn::FunctionArn::parse(&target.arn) else {
                    continue;
                };
                // A version or alias target is resolved when the event runs.
                let function = function.target();
                let payload = match &target.input {
                    Some(input) => Bytes::from(input.clone().into_bytes()),
                    None => Bytes::from(serde_json::to_vec(&event).unwrap_or_default()),
                };
                if let Err(e) = self
                    .invoker
                    .submit(&function, &nimbus_queue::new_id(), payload)
                    .await
                {
                    tracing::error!(rule = %rule.name, %function, error = %e, "could not send a scheduled event");
                }
            }
            tracing::info!(rule = %rule.name, due_ms = due, targets = rule.targets.len(), "schedule fired");
        }
    }

    /// Fires due rules until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        tokio::pin!(shutdown);
        loop {
            self.tick().await;
            tokio::select! {
                _ = &mut shutdown => break,
                _ = tokio::time::sleep(Duration::from_millis(250)) => {}
            }
        }
    }
}
