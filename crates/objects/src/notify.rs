//! Bucket notifications: which changes of a bucket's objects go where (a function, run as an
//! asynchronous event, or a queue), and the records S3 sends for them. A change that a rule
//! matches writes its record to an outbox table in the same transaction as the change itself,
//! so an acknowledged write always has its event; a dispatcher hands outbox entries to their
//! targets and removes each once its target has it on disk (at least once).

use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::Error;

/// Where a rule's events go: an ARN of a function or of a queue.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Target {
    Function(String),
    Queue(String),
}

impl Target {
    pub fn arn(&self) -> &str {
        match self {
            Self::Function(a) | Self::Queue(a) => a,
        }
    }
}

/// One rule of a bucket's notification configuration.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NotificationRule {
    pub id: String,
    pub target: Target,
    /// `s3:ObjectCreated:*`, `s3:ObjectRemoved:Delete`, …
    pub events: Vec<String>,
    pub prefix: String,
    pub suffix: String,
}

/// The event types a rule may name: those nimbus sends.
const EVENTS: [&str; 8] = [
    "s3:ObjectCreated:*",
    "s3:ObjectCreated:Put",
    "s3:ObjectCreated:Post",
    "s3:ObjectCreated:Copy",
    "s3:ObjectCreated:CompleteMultipartUpload",
    "s3:ObjectRemoved:*",
    "s3:ObjectRemoved:Delete",
    "s3:ObjectRemoved:DeleteMarkerCreated",
];

/// How an object came to be, or went.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Change {
    #[default]
    Put,
    Post,
    Copy,
    CompleteMultipartUpload,
    Delete,
    DeleteMarkerCreated,
}

impl Change {
    /// Whether the change makes an object (whose size and ETag its records carry).
    pub fn creates(self) -> bool {
        !matches!(self, Self::Delete | Self::DeleteMarkerCreated)
    }

    /// The record's `eventName` (without the `s3:` of a rule's event type).
    pub fn name(self) -> &'static str {
        match self {
            Self::Put => "ObjectCreated:Put",
            Self::Post => "ObjectCreated:Post",
            Self::Copy => "ObjectCreated:Copy",
            Self::CompleteMultipartUpload => "ObjectCreated:CompleteMultipartUpload",
            Self::Delete => "ObjectRemoved:Delete",
            Self::DeleteMarkerCreated => "ObjectRemoved:DeleteMarkerCreated",
        }
    }
}

/// Whether targets exist and may receive a bucket's events.
pub trait Targets: Send + Sync {
    /// `Err` with S3's reason when `target` cannot receive events of a bucket of `owner`.
    fn check(&self, owner: &str, target: &Target) -> Result<(), String>;
}

fn event_matches(pattern: &str, change: Change) -> bool {
    let name = change.name();
    match pattern.strip_prefix("s3:") {
        Some(p) => match p.strip_suffix('*') {
            Some(family) => name.starts_with(family),
            None => p == name,
        },
        None => false,
    }
}

fn events_overlap(a: &str, b: &str) -> bool {
    let family = |e: &str| e.rsplit_once(':').map_or(e, |(f, _)| f).to_owned();
    family(a) == family(b) && (a == b || a.ends_with('*') || b.ends_with('*'))
}

impl NotificationRule {
    fn matches(&self, change: Change, key: &str) -> bool {
        key.starts_with(&self.prefix)
            && key.ends_with(&self.suffix)
            && self.events.iter().any(|e| event_matches(e, change))
    }
}

/// Checks a configuration as S3 does: known event types, at most one prefix and one suffix per
/// rule, unique ids, and no two rules that could send the same event for the same key.
pub fn check_rules(rules: &[NotificationRule]) -> Result<(), Error> {
    let mut ids = std::collections::HashSet::new();
    for rule in rules {
        if rule.events.is_empty() {
            return Err(Error::InvalidArgument(
                "A notification configuration must name at least one event".into(),
            ));
        }
        for e in &rule.events {
            if !EVENTS.contains(&e.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "The event is not supported for notifications: {e}"
                )));
            }
        }
        if !ids.insert(rule.id.as_str()) {
            return Err(Error::InvalidArgument(format!(
                "Two notification configurations share the id {}",
                rule.id
            )));
        }
        if rule.prefix.len() > 1024 || rule.suffix.len() > 1024 {
            return Err(Error::InvalidArgument(
                "A filter rule's value is at most 1024 bytes".into(),
            ));
        }
    }
    for (i, a) in rules.iter().enumerate() {
        for b in &rules[i + 1..] {
            let prefixes = a.prefix.starts_with(&b.prefix) || b.prefix.starts_with(&a.prefix);
            let suffixes = a.suffix.ends_with(&b.suffix) || b.suffix.ends_with(&a.suffix);
            let events = a
                .events
                .iter()
                .any(|x| b.events.iter().any(|y| events_overlap(x, y)));
            if prefixes && suffixes && events {
                return Err(Error::InvalidArgument(
                    "Configurations overlap. Configurations on the same bucket cannot share a \
                     common event type."
                        .into(),
                ));
            }
        }
    }
    Ok(())
}

/// A record on its way to a target.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub target: Target,
    /// The `{"Records": [...]}` document.
    pub body: String,
}

/// What a record says of the change.
pub(crate) struct Event<'a> {
    pub change: Change,
    pub bucket: &'a str,
    pub key: &'a str,
    pub region: &'a str,
    pub owner: &'a str,
    pub principal: &'a str,
    /// Size and ETag of what was created.
    pub object: Option<(u64, &'a str)>,
    /// The version made or removed, in a versioned bucket.
    pub version_id: Option<&'a str>,
    pub sequencer: u64,
}

/// The notifications `rules` send for one change.
pub(crate) fn notifications(rules: &[NotificationRule], event: &Event<'_>) -> Vec<Notification> {
    rules
        .iter()
        .filter(|r| r.matches(event.change, event.key))
        .map(|r| Notification {
            target: r.target.clone(),
            body: record(r, event),
        })
        .collect()
}

fn record(rule: &NotificationRule, e: &Event<'_>) -> String {
    let mut object = json!({
        "key": encode_key(e.key),
        "sequencer": format!("{:016X}", e.sequencer),
    });
    if let Some((size, etag)) = e.object {
        object["size"] = json!(size);
        object["eTag"] = json!(etag);
    }
    if let Some(v) = e.version_id {
        object["versionId"] = json!(v);
    }
    let time = time::OffsetDateTime::now_utc();
    let event_time = format!(
        "{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z",
        time.year(),
        u8::from(time.month()),
        time.day(),
        time.hour(),
        time.minute(),
        time.second(),
        time.millisecond()
    );
    let record = json!({
        "eventVersion": "2.1",
        "eventSource": "aws:s3",
        "awsRegion": e.region,
        "eventTime": event_time,
        "eventName": e.change.name(),
        "userIdentity": { "principalId": e.principal },
        "requestParameters": { "sourceIPAddress": "127.0.0.1" },
        "responseElements": {
            "x-amz-request-id": format!("{:016X}", e.sequencer),
            "x-amz-id-2": format!("{:016X}", e.sequencer),
        },
        "s3": {
            "s3SchemaVersion": "1.0",
            "configurationId": rule.id,
            "bucket": {
                "name": e.bucket,
                "ownerIdentity": { "principalId": e.owner },
                "arn": format!("arn:aws:s3:::{}", e.bucket),
            },
            "object": object,
        },
    });
    json!({ "Records": [record] }).to_string()
}

/// A key as S3's event records carry it: form-encoded (a space is `+`), slashes kept.
fn encode_key(key: &str) -> String {
    form_urlencoded::byte_serialize(key.as_bytes())
        .collect::<String>()
        .replace("%2F", "/")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(id: &str, events: &[&str], prefix: &str, suffix: &str) -> NotificationRule {
        NotificationRule {
            id: id.into(),
            target: Target::Queue("arn:aws:sqs:us-east-1:000000000000:q".into()),
            events: events.iter().map(|e| (*e).to_owned()).collect(),
            prefix: prefix.into(),
            suffix: suffix.into(),
        }
    }

    #[test]
    fn rules_match_their_events_and_keys() {
        let r = rule("r", &["s3:ObjectCreated:*"], "images/", ".jpg");
        assert!(r.matches(Change::Put, "images/a.jpg"));
        assert!(r.matches(Change::CompleteMultipartUpload, "images/b/c.jpg"));
        assert!(!r.matches(Change::Delete, "images/a.jpg"));
        assert!(!r.matches(Change::Put, "images/a.png"));
        assert!(!r.matches(Change::Put, "docs/a.jpg"));
        let d = rule("d", &["s3:ObjectRemoved:Delete"], "", "");
        assert!(d.matches(Change::Delete, "anything"));
        assert!(!d.matches(Change::Copy, "anything"));
    }

    #[test]
    fn overlapping_rules_are_refused() {
        let ok = [
            rule("a", &["s3:ObjectCreated:*"], "images/", ""),
            rule("b", &["s3:ObjectCreated:*"], "docs/", ""),
            rule("c", &["s3:ObjectRemoved:*"], "images/", ""),
            rule("d", &["s3:ObjectCreated:Put"], "", ".png"),
            rule("e", &["s3:ObjectCreated:Copy"], "", ""),
        ];
        // d and e: same family, different types; d and a: a's prefix and d's suffix both
        // match images/x.png, and Put is within ObjectCreated:*.
        assert!(check_rules(&ok[..3]).is_ok());
        assert!(check_rules(&[ok[3].clone(), ok[4].clone()]).is_ok());
        assert!(matches!(
            check_rules(&[ok[0].clone(), ok[3].clone()]),
            Err(Error::InvalidArgument(m)) if m.contains("overlap")
        ));
        assert!(check_rules(&[rule("x", &["s3:ObjectRestore:Post"], "", "")]).is_err());
        assert!(
            check_rules(&[
                rule("x", &["s3:ObjectCreated:*"], "", ""),
                rule("x", &["s3:ObjectRemoved:*"], "", "")
            ])
            .is_err()
        );
    }

    #[test]
    fn records_have_s3s_shape() {
        let r = rule("thumbs", &["s3:ObjectCreated:*"], "", "");
        let event = Event {
            change: Change::Put,
            bucket: "photos",
            key: "my cat/ä.jpg",
            region: "us-east-1",
            owner: "000000000000",
            principal: "arn:aws:iam::000000000000:root",
            object: Some((42, "abc")),
            version_id: None,
            sequencer: 255,
        };
        let out = notifications(&[r], &event);
        assert_eq!(out.len(), 1);
        let v: serde_json::Value = serde_json::from_str(&out[0].body).unwrap();
        let rec = &v["Records"][0];
        assert_eq!(rec["eventVersion"], "2.1");
        assert_eq!(rec["eventName"], "ObjectCreated:Put");
        assert_eq!(rec["s3"]["configurationId"], "thumbs");
        assert_eq!(rec["s3"]["bucket"]["arn"], "arn:aws:s3:::photos");
        assert_eq!(rec["s3"]["object"]["key"], "my+cat/%C3%A4.jpg");
        assert_eq!(rec["s3"]["object"]["size"], 42);
        assert_eq!(rec["s3"]["object"]["sequencer"], "00000000000000FF");
    }
}
