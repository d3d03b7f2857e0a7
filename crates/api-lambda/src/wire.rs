//! Lambda's control-plane request and response shapes (REST-JSON, PascalCase).

use std::collections::BTreeMap;

use nimbus_control::{CodeUpdate, ConfigUpdate, NewFunction};
use nimbus_types::limits::MAX_ZIP_BYTES;
use nimbus_types::{FunctionConfig, InvalidParameter, Runtime};
use serde::{Deserialize, Serialize};

use crate::error::ApiError;

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
pub struct SnapStartInput {
    pub apply_on: Option<String>,
}

impl SnapStartInput {
    fn into_domain(self) -> Result<nimbus_types::function::SnapStart, InvalidParameter> {
        match self.apply_on.as_deref() {
            None => Ok(Default::default()),
            Some(s) => nimbus_types::function::SnapStart::parse(s),
        }
    }
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
    pub snap_start: Option<SnapStartInput>,
    pub layers: Option<Vec<String>>,
    pub tags: Option<BTreeMap<String, String>>,
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
    pub snap_start: Option<SnapStartInput>,
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
    pub snap_start: serde_json::Value,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub layers: Vec<serde_json::Value>,
}

impl FunctionConfiguration {
    pub fn from_config(f: &FunctionConfig, region: &str) -> Self {
        Self {
            function_name: f.name.clone(),
            function_arn: if f.version == nimbus_types::name::LATEST {
                f.arn(region)
            } else {
                format!("{}:{}", f.arn(region), f.version)
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
            snap_start: serde_json::json!({
                "ApplyOn": f.snap_start.as_str(),
                "OptimizationStatus": if f.starts_from_snapshot() { "On" } else { "Off" },
            }),
            layers: f
                .layers
                .iter()
                .map(|l| serde_json::json!({ "Arn": l.arn, "CodeSize": l.code.size }))
                .collect(),
        }
    }
}

pub use nimbus_types::function::sha256_base64;

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

/// A count field of a request as the domain takes it.
fn to_u32(field: &str, value: i64) -> Result<u32, InvalidParameter> {
    u32::try_from(value).map_err(|_| {
        InvalidParameter::new(format!(
            "{field} must be a non-negative integer, got {value}"
        ))
    })
}

/// The inline zip of a request: base64, at most Lambda's 50 MB.
pub(crate) fn decode_zip(field: &str, zip_base64: Option<&str>) -> Result<Vec<u8>, ApiError> {
    use base64::Engine;
    let zip_base64 =
        zip_base64.ok_or_else(|| ApiError::invalid_parameter(format!("{field} is required")))?;
    let zip = base64::engine::general_purpose::STANDARD
        .decode(zip_base64.trim())
        .map_err(|_| ApiError::invalid_parameter(format!("{field} is not valid base64")))?;
    if zip.len() > MAX_ZIP_BYTES {
        return Err(ApiError::too_large(format!(
            "Zipped size must be smaller than {MAX_ZIP_BYTES} bytes"
        )));
    }
    Ok(zip)
}

impl CreateFunctionInput {
    /// The function to create; what nimbus does not support is refused here.
    pub fn into_domain(self) -> Result<NewFunction, ApiError> {
        let name = self
            .function_name
            .ok_or_else(|| ApiError::invalid_parameter("FunctionName is required"))?;
        if self.package_type.as_deref().is_some_and(|p| p != "Zip") {
            return Err(ApiError::invalid_parameter(
                "PackageType Image is not supported; deploy a zip package",
            ));
        }
        let code = self
            .code
            .ok_or_else(|| ApiError::invalid_parameter("Code is required"))?;
        if code.s3_bucket.is_some() || code.s3_key.is_some() || code.image_uri.is_some() {
            return Err(ApiError::invalid_parameter(
                "only Code.ZipFile is supported: upload the zip inline",
            ));
        }
        let runtime = self.runtime.as_deref().map(Runtime::parse).transpose()?;
        Ok(NewFunction {
            name,
            runtime,
            handler: self.handler.ok_or_else(|| {
                ApiError::invalid_parameter("Handler is required for a zip package")
            })?,
            role: self.role.unwrap_or_default(),
            description: self.description.unwrap_or_default(),
            memory_mb: self
                .memory_size
                .map(|m| to_u32("MemorySize", m))
                .transpose()?,
            timeout_s: self.timeout.map(|t| to_u32("Timeout", t)).transpose()?,
            environment: self
                .environment
                .and_then(|e| e.variables)
                .unwrap_or_default(),
            ephemeral_storage_mb: self.ephemeral_storage.and_then(|e| e.size),
            snap_start: self
                .snap_start
                .map(SnapStartInput::into_domain)
                .transpose()?,
            zip: decode_zip("Code.ZipFile", code.zip_file.as_deref())?,
            tags: self.tags.unwrap_or_default(),
            layers: self.layers.unwrap_or_default(),
        })
    }
}

impl UpdateCodeInput {
    pub fn into_domain(self) -> Result<CodeUpdate, ApiError> {
        if self.s3_bucket.is_some() || self.image_uri.is_some() {
            return Err(ApiError::invalid_parameter(
                "only ZipFile is supported: upload the zip inline",
            ));
        }
        Ok(CodeUpdate {
            zip: decode_zip("ZipFile", self.zip_file.as_deref())?,
            revision_id: self.revision_id,
            dry_run: self.dry_run == Some(true),
        })
    }
}

impl UpdateConfigInput {
    pub fn into_domain(self) -> Result<ConfigUpdate, ApiError> {
        Ok(ConfigUpdate {
            layers: self.layers,
            runtime: self.runtime.as_deref().map(Runtime::parse).transpose()?,
            handler: self.handler,
            role: self.role,
            description: self.description,
            memory_mb: self
                .memory_size
                .map(|m| to_u32("MemorySize", m))
                .transpose()?,
            timeout_s: self.timeout.map(|t| to_u32("Timeout", t)).transpose()?,
            environment: self.environment.map(|e| e.variables.unwrap_or_default()),
            ephemeral_storage_mb: self.ephemeral_storage.and_then(|e| e.size),
            snap_start: self
                .snap_start
                .map(SnapStartInput::into_domain)
                .transpose()?,
            revision_id: self.revision_id,
        })
    }
}
