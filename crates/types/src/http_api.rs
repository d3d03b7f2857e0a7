//! HTTP APIs (API Gateway v2's `HTTP` protocol type) as nimbus stores them: one record per API
//! holding its routes, integrations, stages and authorizers.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::url::UrlCors;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HttpApi {
    /// 10 lower-case letters and digits, the first label of the API's host.
    pub api_id: String,
    pub account: String,
    pub name: String,
    #[serde(default)]
    pub description: String,
    #[serde(default)]
    pub version: String,
    pub created_ms: i64,
    #[serde(default)]
    pub cors: Option<UrlCors>,
    #[serde(default)]
    pub disable_execute_api_endpoint: bool,
    #[serde(default)]
    pub tags: BTreeMap<String, String>,
    /// By route id.
    #[serde(default)]
    pub routes: BTreeMap<String, Route>,
    /// By integration id.
    #[serde(default)]
    pub integrations: BTreeMap<String, Integration>,
    /// By stage name (`$default` or a name that prefixes request paths).
    #[serde(default)]
    pub stages: BTreeMap<String, Stage>,
    /// By authorizer id.
    #[serde(default)]
    pub authorizers: BTreeMap<String, Authorizer>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Route {
    pub route_id: String,
    pub route_key: String,
    /// `integrations/{id}`, or none (requests to the route get 404 until it has one).
    #[serde(default)]
    pub target: Option<String>,
    /// `NONE`, `JWT` or `AWS_IAM`.
    pub authorization_type: String,
    #[serde(default)]
    pub authorizer_id: Option<String>,
    #[serde(default)]
    pub authorization_scopes: Vec<String>,
}

impl Route {
    /// The integration the route sends requests to.
    pub fn integration_id(&self) -> Option<&str> {
        self.target.as_deref()?.strip_prefix("integrations/")
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Integration {
    pub integration_id: String,
    /// `AWS_PROXY`: a function, given the request as an event.
    pub integration_type: String,
    /// The function's (or alias's, or version's) ARN.
    pub integration_uri: String,
    /// `1.0` or `2.0`.
    pub payload_format_version: String,
    /// 50 to 30,000.
    pub timeout_ms: u32,
    #[serde(default)]
    pub description: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stage {
    pub stage_name: String,
    pub auto_deploy: bool,
    #[serde(default)]
    pub stage_variables: BTreeMap<String, String>,
    #[serde(default)]
    pub description: String,
    pub created_ms: i64,
    pub last_updated_ms: i64,
}

/// A JWT authorizer: tokens from `identity_source`, checked against the issuer's keys.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Authorizer {
    pub authorizer_id: String,
    pub name: String,
    /// `JWT`.
    pub authorizer_type: String,
    /// `$request.header.Authorization` and the like.
    pub identity_source: Vec<String>,
    pub issuer: String,
    pub audience: Vec<String>,
}

/// Lower-case letters and digits, `len` of them, at random: API, route, integration and
/// authorizer ids.
pub fn new_id(len: usize) -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut bytes = vec![0u8; len];
    // Without randomness ids could collide; the OS always has a source where nimbus runs.
    getrandom::fill(&mut bytes).expect("the OS has no source of randomness");
    bytes
        .iter()
        .map(|b| ALPHABET[usize::from(*b) % ALPHABET.len()] as char)
        .collect()
}
