//! Lambda's control-plane request and response shapes (REST-JSON, PascalCase).

use std::collections::BTreeMap;

use nimbus_types::FunctionConfig;
use serde::{Deserialize, Serialize};

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CodeInput {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    #[serde(rename = "S3Key")]
    pub s3_key: Option<String>,
    pub image_uri: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EnvironmentInput {
    pub variables: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct EphemeralStorageInput {
    pub size: Option<u32>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct CreateFunctionInput {
    pub function_name: Option<String>,
    pub runtime: Option<String>,
    pub role: Option<String>,
    pub handler: Option<String>,
    pub code: Option<CodeInput>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub publish: Option<bool>,
    pub environment: Option<EnvironmentInput>,
    pub package_type: Option<String>,
    pub architectures: Option<Vec<String>>,
    pub ephemeral_storage: Option<EphemeralStorageInput>,
    pub layers: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateCodeInput {
    pub zip_file: Option<String>,
    #[serde(rename = "S3Bucket")]
    pub s3_bucket: Option<String>,
    pub image_uri: Option<String>,
    pub publish: Option<bool>,
    pub dry_run: Option<bool>,
    pub revision_id: Option<String>,
    pub architectures: Option<Vec<String>>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "PascalCase", default)]
pub struct UpdateConfigInput {
    pub role: Option<String>,
    pub handler: Option<String>,
    pub description: Option<String>,
    pub timeout: Option<i64>,
    pub memory_size: Option<i64>,
    pub environment: Option<EnvironmentInput>,
    pub runtime: Option<String>,
    pub ephemeral_storage: Option<EphemeralStorageInput>,
    pub revision_id: Option<String>,
    pub layers: Option<Vec<String>>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct EnvironmentOutput {
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct FunctionConfiguration {
    pub function_name: String,
    pub function_arn: String,
    pub runtime: String,
    pub role: String,
    pub handler: String,
    pub code_size: u64,
    pub description: String,
    pub timeout: u32,
    pub memory_size: u32,
    pub last_modified: String,
    pub code_sha256: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub environment: Option<EnvironmentOutput>,
    pub tracing_config: serde_json::Value,
    pub revision_id: String,
    pub state: &'static str,
    pub last_update_status: &'static str,
    pub package_type: &'static str,
    pub architectures: Vec<&'static str>,
    pub ephemeral_storage: serde_json::Value,
    pub logging_config: serde_json::Value,
}

impl FunctionConfiguration {
    pub fn from_config(f: &FunctionConfig, region: &str) -> Self {
        Self {
            function_name: f.name.clone(),
            function_arn: if f.version == nimbus_types::name::LATEST {
                nimbus_types::name::function_arn(region, &f.name)
            } else {
                format!(
                    "{}:{}",
                    nimbus_types::name::function_arn(region, &f.name),
                    f.version
                )
            },
            runtime: f.runtime.to_string(),
            role: f.role.clone(),
            handler: f.handler.clone(),
            code_size: f.code.size,
            description: f.description.clone(),
            timeout: f.timeout_s,
            memory_size: f.memory_mb,
            last_modified: nimbus_types::time::lambda_timestamp(f.last_modified_ms),
            code_sha256: sha256_base64(&f.code.sha256),
            version: f.version.clone(),
            environment: (!f.environment.is_empty()).then(|| EnvironmentOutput {
                variables: f.environment.clone(),
            }),
            tracing_config: serde_json::json!({ "Mode": "PassThrough" }),
            revision_id: f.revision_id.clone(),
            state: "Active",
            last_update_status: "Successful",
            package_type: "Zip",
            architectures: vec!["x86_64"],
            ephemeral_storage: serde_json::json!({ "Size": f.ephemeral_storage_mb }),
            logging_config: serde_json::json!({
                "LogFormat": "Text",
                "LogGroup": format!("/aws/lambda/{}", f.name),
            }),
        }
    }
}

/// Lambda reports `CodeSha256` as the base64 of the digest; the store keys code by hex.
pub fn sha256_base64(hex: &str) -> String {
    use base64::Engine;
    let bytes: Vec<u8> = (0..hex.len() / 2)
        .filter_map(|i| u8::from_str_radix(hex.get(2 * i..2 * i + 2)?, 16).ok())
        .collect();
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct ListFunctionsOutput {
    pub functions: Vec<FunctionConfiguration>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub next_marker: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "PascalCase")]
pub struct GetFunctionOutput {
    pub configuration: FunctionConfiguration,
    pub code: serde_json::Value,
    pub tags: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<serde_json::Value>,
}
