//! A function's configuration as nimbus stores it.

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::InvalidParameter;
use crate::limits::*;

/// A function's runtime. Which of these a node can actually run depends on the host (the
/// Python and Node.js versions installed); the worker checks that when code is prepared.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(try_from = "String", into = "String")]
pub enum Runtime {
    /// A WASI preview 1 command module: event on stdin, result on stdout, log on stderr.
    Wasm32Wasip1,
    /// A component exporting `wasi:http/incoming-handler`: served HTTP requests directly.
    WasiHttp,
    /// A custom runtime: an executable `bootstrap` at the root of the package.
    Provided(ProvidedFlavor),
    /// `python3.N`, run by nimbus's Python bootstrap.
    Python { minor: u8 },
    /// `nodejsN.x`, run by nimbus's Node.js bootstrap.
    Node { major: u8 },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ProvidedFlavor {
    Provided,
    Al2,
    Al2023,
}

impl Runtime {
    pub fn parse(s: &str) -> Result<Self, InvalidParameter> {
        let parsed = match s {
            "wasm32-wasip1" => Some(Self::Wasm32Wasip1),
            "wasi-http" => Some(Self::WasiHttp),
            "provided" => Some(Self::Provided(ProvidedFlavor::Provided)),
            "provided.al2" => Some(Self::Provided(ProvidedFlavor::Al2)),
            "provided.al2023" => Some(Self::Provided(ProvidedFlavor::Al2023)),
            _ => {
                if let Some(minor) = s.strip_prefix("python3.") {
                    minor
                        .parse()
                        .ok()
                        .filter(|m| *m >= 8)
                        .map(|minor| Self::Python { minor })
                } else if let Some(major) =
                    s.strip_prefix("nodejs").and_then(|r| r.strip_suffix(".x"))
                {
                    major
                        .parse()
                        .ok()
                        .filter(|m| *m >= 16)
                        .map(|major| Self::Node { major })
                } else {
                    None
                }
            }
        };
        parsed.ok_or_else(|| {
            InvalidParameter::new(format!(
                "The runtime parameter of {s} is not supported. Runtimes: wasm32-wasip1, \
                 wasi-http, provided, provided.al2, provided.al2023, python3.N and nodejsN.x for \
                 the versions installed on the node"
            ))
        })
    }

    pub fn name(self) -> String {
        match self {
            Self::Wasm32Wasip1 => "wasm32-wasip1".to_owned(),
            Self::WasiHttp => "wasi-http".to_owned(),
            Self::Provided(ProvidedFlavor::Provided) => "provided".to_owned(),
            Self::Provided(ProvidedFlavor::Al2) => "provided.al2".to_owned(),
            Self::Provided(ProvidedFlavor::Al2023) => "provided.al2023".to_owned(),
            Self::Python { minor } => format!("python3.{minor}"),
            Self::Node { major } => format!("nodejs{major}.x"),
        }
    }

    /// Whether functions of this runtime run as processes speaking the Runtime API.
    pub fn is_process(self) -> bool {
        !matches!(self, Self::Wasm32Wasip1 | Self::WasiHttp)
    }

    /// Whether functions of this runtime serve HTTP requests themselves, without an event.
    pub fn serves_http(self) -> bool {
        self == Self::WasiHttp
    }
}

impl TryFrom<String> for Runtime {
    type Error = InvalidParameter;
    fn try_from(s: String) -> Result<Self, Self::Error> {
        Self::parse(&s)
    }
}

impl From<Runtime> for String {
    fn from(r: Runtime) -> String {
        r.name()
    }
}

impl fmt::Display for Runtime {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.name())
    }
}

/// A code package in the content-addressed code store.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct CodeRef {
    /// Lowercase hex sha256 of the zip as uploaded.
    pub sha256: String,
    /// Size of the zip in bytes.
    pub size: u64,
}

/// Everything nimbus knows about one function version.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FunctionConfig {
    pub name: String,
    /// The account the function belongs to.
    #[serde(default = "default_account")]
    pub account: String,
    pub runtime: Runtime,
    pub handler: String,
    pub role: String,
    pub description: String,
    pub memory_mb: u32,
    pub timeout_s: u32,
    pub environment: BTreeMap<String, String>,
    pub ephemeral_storage_mb: u32,
    pub code: CodeRef,
    /// Changes on every update; sandboxes are keyed by it so an update never reuses old ones.
    pub revision_id: String,
    /// Unix time in milliseconds of the last change.
    pub last_modified_ms: i64,
    pub version: String,
    /// How asynchronous invocations are retried and where their results go.
    #[serde(default)]
    pub event_invoke: Option<EventInvokeConfig>,
    /// The number of the newest published version (0: none yet). Versions are never renumbered.
    #[serde(default)]
    pub last_published: u32,
    /// Reserved concurrency of the function (all its versions): both a guarantee and a cap.
    /// Kept on the `$LATEST` record only.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reserved_concurrency: Option<u32>,
    /// Provisioned concurrency requested per published version. Kept on the `$LATEST` record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub provisioned: BTreeMap<String, ProvisionedRequest>,
    /// The function's tags; [`EGRESS_TAG`] is read by nimbus.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub tags: BTreeMap<String, String>,
    /// Function URLs by qualifier (`$LATEST` or an alias). Kept on the `$LATEST` record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub urls: BTreeMap<String, crate::url::FunctionUrl>,
    /// The resource-based policy's statements. Kept on the `$LATEST` record.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub permissions: Vec<crate::url::Permission>,
    /// Aliases by name. Kept on the `$LATEST` record.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub aliases: BTreeMap<String, crate::alias::Alias>,
    /// Whether published versions start from a snapshot of their initialised state.
    #[serde(default, skip_serializing_if = "SnapStart::is_off")]
    pub snap_start: SnapStart,
    /// The layers under `/opt`, bottom first.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<crate::layer::FunctionLayer>,
}

/// Lambda's SnapStart setting (`ApplyOn`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub enum SnapStart {
    #[default]
    None,
    PublishedVersions,
}

impl SnapStart {
    pub fn parse(s: &str) -> Result<Self, InvalidParameter> {
        match s {
            "None" => Ok(Self::None),
            "PublishedVersions" => Ok(Self::PublishedVersions),
            other => Err(InvalidParameter::constraint(
                "snapStart.applyOn",
                Some(&other),
                "Member must satisfy enum value set: [PublishedVersions, None]",
            )),
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "None",
            Self::PublishedVersions => "PublishedVersions",
        }
    }

    pub fn is_off(&self) -> bool {
        *self == Self::None
    }
}

/// Checks that a runtime can start from snapshots on this platform: Python and Node.js (a
/// template process forked into each environment's jail) and WebAssembly modules (pre-initialised through their
/// `wizer.initialize` export). Other runtimes are refused rather than accepted and run as usual.
pub fn validate_snap_start(
    runtime: Runtime,
    snap_start: SnapStart,
) -> Result<(), InvalidParameter> {
    let supported = matches!(
        runtime,
        Runtime::Wasm32Wasip1 | Runtime::Python { .. } | Runtime::Node { .. }
    );
    if snap_start == SnapStart::PublishedVersions && !supported {
        return Err(InvalidParameter::new(format!(
            "SnapStart is not supported for runtime {runtime} on this node: it applies to \
             Python and Node.js functions and to wasm32-wasip1 modules that export `wizer.initialize`"
        )));
    }
    Ok(())
}

/// The tag that gives a function outbound internet access (`internet`) or takes it away
/// (`none`) whatever the node's default.
pub const EGRESS_TAG: &str = "nimbus:egress";

/// A provisioned-concurrency request for one version of a function.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ProvisionedRequest {
    pub requested: u32,
    pub last_modified_ms: i64,
}

fn default_account() -> String {
    crate::name::DEFAULT_ACCOUNT.to_owned()
}

impl FunctionConfig {
    /// The key the function is held under in the node: its name scoped by its account
    /// ([`crate::name::scoped`]). Logs, usage, queues and sandbox pools use it.
    pub fn key(&self) -> String {
        crate::name::scoped(&self.account, &self.name)
    }

    /// The key a function version's sandboxes are pooled under: `key:version`.
    pub fn qualified_name(&self) -> String {
        format!("{}:{}", self.key(), self.version)
    }

    /// Whether the function's tags ask for outbound access (`Some(true)`), forbid it
    /// (`Some(false)`) or leave it to the node (`None`).
    pub fn egress(&self) -> Option<bool> {
        match self.tags.get(EGRESS_TAG).map(String::as_str) {
            Some("internet") => Some(true),
            Some("none") => Some(false),
            _ => None,
        }
    }

    /// Whether this version starts from a snapshot: a published version with SnapStart on.
    pub fn starts_from_snapshot(&self) -> bool {
        self.snap_start == SnapStart::PublishedVersions && self.version != crate::name::LATEST
    }

    /// The function's unqualified ARN.
    pub fn arn(&self, region: &str) -> String {
        crate::name::function_arn(region, &self.account, &self.name)
    }
}

/// Lambda's event-invoke configuration of a function.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventInvokeConfig {
    pub maximum_retry_attempts: u32,
    pub maximum_event_age_s: u32,
    pub on_success: Option<String>,
    pub on_failure: Option<String>,
    pub last_modified_ms: i64,
}

impl Default for EventInvokeConfig {
    fn default() -> Self {
        Self {
            maximum_retry_attempts: 2,
            maximum_event_age_s: 21_600,
            on_success: None,
            on_failure: None,
            last_modified_ms: 0,
        }
    }
}

/// Environment variable names Lambda sets itself and does not let users override.
pub const RESERVED_ENV_KEYS: &[&str] = &[
    "_HANDLER",
    "_X_AMZN_TRACE_ID",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_EXECUTION_ENV",
    "AWS_LAMBDA_FUNCTION_NAME",
    "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
    "AWS_LAMBDA_FUNCTION_VERSION",
    "AWS_LAMBDA_INITIALIZATION_TYPE",
    "AWS_LAMBDA_LOG_GROUP_NAME",
    "AWS_LAMBDA_LOG_STREAM_NAME",
    "AWS_ACCESS_KEY",
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_LAMBDA_RUNTIME_API",
    "LAMBDA_TASK_ROOT",
    "LAMBDA_RUNTIME_DIR",
];

pub fn validate_memory(mb: u32) -> Result<(), InvalidParameter> {
    if (MIN_MEMORY_MB..=MAX_MEMORY_MB).contains(&mb) {
        Ok(())
    } else {
        Err(InvalidParameter::range(
            "memorySize",
            &mb,
            MIN_MEMORY_MB.into(),
            MAX_MEMORY_MB.into(),
        ))
    }
}

pub fn validate_timeout(s: u32) -> Result<(), InvalidParameter> {
    if (MIN_TIMEOUT_S..=MAX_TIMEOUT_S).contains(&s) {
        Ok(())
    } else {
        Err(InvalidParameter::range(
            "timeout",
            &s,
            MIN_TIMEOUT_S.into(),
            MAX_TIMEOUT_S.into(),
        ))
    }
}

pub fn validate_description(d: &str) -> Result<(), InvalidParameter> {
    if d.chars().count() <= MAX_DESCRIPTION_CHARS {
        Ok(())
    } else {
        Err(InvalidParameter::new(format!(
            "description must be at most {MAX_DESCRIPTION_CHARS} characters"
        )))
    }
}

pub fn validate_ephemeral_storage(mb: u32) -> Result<(), InvalidParameter> {
    if (512..=10_240).contains(&mb) {
        Ok(())
    } else {
        Err(InvalidParameter::range(
            "ephemeralStorage.size",
            &mb,
            512,
            10_240,
        ))
    }
}

/// Checks tags as Lambda does (at most 50; keys 1–128 characters not starting with `aws:`,
/// values at most 256), and [`EGRESS_TAG`]'s value.
pub fn validate_tags(tags: &BTreeMap<String, String>) -> Result<(), InvalidParameter> {
    if tags.len() > 50 {
        return Err(InvalidParameter::new("A function can have at most 50 tags"));
    }
    for (key, value) in tags {
        if key.is_empty()
            || key.chars().count() > 128
            || key.to_ascii_lowercase().starts_with("aws:")
        {
            return Err(InvalidParameter::new(format!(
                "tag key {key:?} must be 1 to 128 characters and not start with aws:"
            )));
        }
        if value.chars().count() > 256 {
            return Err(InvalidParameter::new(format!(
                "the value of tag {key} is longer than 256 characters"
            )));
        }
        if key == EGRESS_TAG && value != "internet" && value != "none" {
            return Err(InvalidParameter::new(format!(
                "tag {EGRESS_TAG} must be \"internet\" or \"none\", not {value:?}"
            )));
        }
    }
    Ok(())
}

/// Checks keys against Lambda's pattern, the reserved names and the 4 KB total.
pub fn validate_environment(env: &BTreeMap<String, String>) -> Result<(), InvalidParameter> {
    let mut total = 0usize;
    let mut reserved = Vec::new();
    for (key, value) in env {
        let mut bytes = key.bytes();
        let valid = key.len() >= 2
            && bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
            && bytes.all(|b| b.is_ascii_alphanumeric() || b == b'_');
        if !valid {
            return Err(InvalidParameter::new(format!(
                "environment variable name {key:?} must match [a-zA-Z]([a-zA-Z0-9_])+"
            )));
        }
        if RESERVED_ENV_KEYS.contains(&key.as_str()) {
            reserved.push(key.as_str());
        }
        if value.contains('\0') {
            return Err(InvalidParameter::new(format!(
                "environment variable {key} contains a NUL character"
            )));
        }
        total += key.len() + value.len();
    }
    if !reserved.is_empty() {
        return Err(InvalidParameter::new(format!(
            "Lambda was unable to configure your environment variables because the environment \
             variables you have provided contains reserved keys that are currently not supported \
             for modification. Reserved keys used in this request: {}",
            reserved.join(", ")
        )));
    }
    if total > MAX_ENVIRONMENT_BYTES {
        return Err(InvalidParameter::new(format!(
            "Lambda was unable to configure your environment variables because the environment \
             variables you have provided exceeded the 4KB limit. String measured: {total} bytes"
        )));
    }
    Ok(())
}

/// Checks a handler for a runtime: a file path inside the package for wasm, Lambda's
/// `[^\s]+` (up to 128 characters) for the others.
pub fn validate_handler(runtime: Runtime, handler: &str) -> Result<(), InvalidParameter> {
    if !runtime.is_process() {
        return validate_handler_path(handler);
    }
    if handler.is_empty()
        || handler.len() > 128
        || handler.chars().any(|c| c.is_whitespace() || c == '\0')
    {
        return Err(InvalidParameter::constraint(
            "handler",
            Some(&handler),
            "Member must satisfy regular expression pattern: [^\\s]+",
        ));
    }
    Ok(())
}

/// Checks that a handler names a file inside the package without leaving it.
pub fn validate_handler_path(handler: &str) -> Result<(), InvalidParameter> {
    let ok = !handler.is_empty()
        && handler.len() <= 128
        && !handler.starts_with('/')
        && !handler.contains('\\')
        && !handler.contains('\0')
        && handler
            .split('/')
            .all(|c| !c.is_empty() && c != "." && c != "..");
    if ok {
        Ok(())
    } else {
        Err(InvalidParameter::new(format!(
            "handler {handler:?} must be a relative path of a file inside the code package"
        )))
    }
}

/// Lambda shows `CodeSha256` as the base64 of the digest; the code store keys code by hex.
pub fn sha256_base64(hex: &str) -> String {
    use base64::Engine;
    base64::engine::general_purpose::STANDARD.encode(crate::hex::decode(hex).unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn environment_rules_follow_lambda() {
        let mut env = BTreeMap::new();
        env.insert("GREETING".to_owned(), "hi".to_owned());
        assert!(validate_environment(&env).is_ok());
        env.insert("AWS_REGION".to_owned(), "x".to_owned());
        let err = validate_environment(&env).unwrap_err();
        assert!(err.to_string().contains("AWS_REGION"));
        let mut bad = BTreeMap::new();
        bad.insert("1X".to_owned(), String::new());
        assert!(validate_environment(&bad).is_err());
        let mut big = BTreeMap::new();
        big.insert("BIG".to_owned(), "x".repeat(5000));
        assert!(validate_environment(&big).is_err());
    }

    #[test]
    fn handler_paths_stay_inside_the_package() {
        assert!(validate_handler_path("echo.wasm").is_ok());
        assert!(validate_handler_path("bin/echo.wasm").is_ok());
        for bad in ["", "/etc/passwd", "../x.wasm", "a/../../b", "a//b", "./a"] {
            assert!(validate_handler_path(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn runtimes_parse_and_print() {
        for name in [
            "wasm32-wasip1",
            "wasi-http",
            "provided",
            "provided.al2",
            "provided.al2023",
            "python3.11",
            "nodejs20.x",
        ] {
            assert_eq!(Runtime::parse(name).unwrap().name(), name);
        }
        for bad in ["python2.7", "python3.x", "nodejs.x", "java21", "go1.x", ""] {
            assert!(Runtime::parse(bad).is_err(), "{bad}");
        }
        assert!(validate_handler(Runtime::Python { minor: 11 }, "app.handler").is_ok());
        assert!(validate_handler(Runtime::Python { minor: 11 }, "app handler").is_err());
    }

    #[test]
    fn limits_match_lambda() {
        assert!(validate_memory(127).is_err());
        assert!(validate_memory(128).is_ok());
        assert!(validate_memory(10240).is_ok());
        assert!(validate_memory(10241).is_err());
        assert!(validate_timeout(0).is_err());
        assert!(validate_timeout(900).is_ok());
        assert!(validate_timeout(901).is_err());
    }

    #[test]
    fn snap_start_applies_where_a_snapshot_can_be_made() {
        let on = SnapStart::PublishedVersions;
        for runtime in [
            Runtime::Python { minor: 12 },
            Runtime::Node { major: 20 },
            Runtime::Wasm32Wasip1,
        ] {
            assert!(validate_snap_start(runtime, on).is_ok(), "{runtime}");
        }
        let refused =
            validate_snap_start(Runtime::Provided(ProvidedFlavor::Al2023), on).unwrap_err();
        assert!(refused.to_string().contains("SnapStart is not supported"));
        assert!(
            validate_snap_start(Runtime::Provided(ProvidedFlavor::Al2023), SnapStart::None).is_ok()
        );
    }
}
