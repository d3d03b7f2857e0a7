//! The control plane: create, read, update and delete functions.
//!
//! Mutations are serialised by one lock: each is a read-modify-write of a function record plus
//! code-store housekeeping, and deploys are rare next to invocations. Reads and invocations go
//! through an in-memory copy of the function table that mutations keep current.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use base64::Engine;
use nimbus_manager::WorkerManager;
use nimbus_store::{CodeStore, FunctionStore};
use nimbus_types::function::{
    validate_description, validate_environment, validate_ephemeral_storage, validate_handler,
    validate_memory, validate_timeout,
};
use nimbus_types::limits::{DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S, MAX_ZIP_BYTES};
use nimbus_types::name::{LATEST, validate_function_name};
use nimbus_types::{CodeRef, FunctionConfig, Runtime};

use crate::error::ApiError;
use crate::wire::{CreateFunctionInput, EnvironmentInput, UpdateCodeInput, UpdateConfigInput};

pub struct ControlPlane {
    pub(crate) region: String,
    store: Arc<dyn FunctionStore>,
    code: Arc<dyn CodeStore>,
    manager: Arc<WorkerManager>,
    functions: RwLock<HashMap<String, Arc<FunctionConfig>>>,
    /// Published versions by function name and number.
    versions: RwLock<HashMap<String, BTreeMap<u32, Arc<FunctionConfig>>>>,
    mutations: tokio::sync::Mutex<()>,
}

type ApiResult<T> = Result<T, ApiError>;

fn to_u32(field: &str, value: i64) -> ApiResult<u32> {
    u32::try_from(value).map_err(|_| {
        ApiError::invalid_parameter(format!(
            "{field} must be a non-negative integer, got {value}"
        ))
    })
}

fn decode_zip(zip_base64: &str) -> ApiResult<Vec<u8>> {
    let zip = base64::engine::general_purpose::STANDARD
        .decode(zip_base64.trim())
        .map_err(|_| ApiError::invalid_parameter("Code.ZipFile is not valid base64"))?;
    if zip.len() > MAX_ZIP_BYTES {
        return Err(ApiError::too_large(format!(
            "Zipped size must be smaller than {MAX_ZIP_BYTES} bytes"
        )));
    }
    if zip.is_empty() {
        return Err(ApiError::invalid_parameter("Code.ZipFile is empty"));
    }
    Ok(zip)
}

fn environment_of(input: Option<EnvironmentInput>) -> ApiResult<BTreeMap<String, String>> {
    let env = input.and_then(|e| e.variables).unwrap_or_default();
    validate_environment(&env)?;
    Ok(env)
}

fn new_revision() -> String {
    uuid::Uuid::new_v4().to_string()
}

impl ControlPlane {
    pub fn load(
        region: String,
        store: Arc<dyn FunctionStore>,
        code: Arc<dyn CodeStore>,
        manager: Arc<WorkerManager>,
    ) -> Result<Self, nimbus_store::Error> {
        let mut functions = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_functions(after.as_deref(), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for f in page {
                functions.insert(f.name.clone(), Arc::new(f));
            }
        }
        let mut versions: HashMap<String, BTreeMap<u32, Arc<FunctionConfig>>> = HashMap::new();
        for v in store.all_versions()? {
            if let Ok(n) = v.version.parse::<u32>() {
                versions
                    .entry(v.name.clone())
                    .or_default()
                    .insert(n, Arc::new(v));
            }
        }
        Ok(Self {
            region,
            store,
            code,
            manager,
            functions: RwLock::new(functions),
            versions: RwLock::new(versions),
            mutations: tokio::sync::Mutex::new(()),
        })
    }

    /// Hands the stored concurrency settings to the Worker Manager: reservations, and the
    /// provisioned sandboxes to start.
    pub async fn restore(&self) {
        let functions: Vec<Arc<FunctionConfig>> = self
            .functions
            .read()
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default();
        for f in functions {
            if f.reserved_concurrency.is_some()
                && let Err(e) = self.manager.set_reserved(&f.name, f.reserved_concurrency)
            {
                tracing::warn!(function = %f.name, error = %e, "stored reserved concurrency no longer fits the account limit");
            }
            for (version, p) in &f.provisioned {
                if let Some(v) = version.parse().ok().and_then(|n| self.version(&f.name, n)) {
                    self.manager.set_provisioned(v, p.requested).await;
                }
            }
        }
    }

    /// A published version of a function.
    pub fn version(&self, name: &str, number: u32) -> Option<Arc<FunctionConfig>> {
        self.versions.read().ok()?.get(name)?.get(&number).cloned()
    }

    /// The published versions of a function, oldest first.
    pub fn versions_of(&self, name: &str) -> Vec<Arc<FunctionConfig>> {
        self.versions
            .read()
            .ok()
            .and_then(|v| v.get(name).map(|m| m.values().cloned().collect()))
            .unwrap_or_default()
    }

    /// What a worker that joins should have ahead of time: every function's current code and
    /// the versions with provisioned concurrency.
    pub fn functions_to_prepare(&self) -> Vec<Arc<FunctionConfig>> {
        let functions: Vec<Arc<FunctionConfig>> = self
            .functions
            .read()
            .map(|f| f.values().cloned().collect())
            .unwrap_or_default();
        let mut out = Vec::new();
        for f in functions {
            for version in f.provisioned.keys() {
                if let Some(v) = version.parse().ok().and_then(|n| self.version(&f.name, n)) {
                    out.push(v);
                }
            }
            out.push(f);
        }
        out
    }

    /// Publishes `$LATEST` as a new immutable version, or returns the newest version if nothing
    /// changed since it was published.
    pub async fn publish_version(
        &self,
        name: &str,
        code_sha256: Option<&str>,
        description: Option<String>,
        revision_id: Option<&str>,
    ) -> ApiResult<(Arc<FunctionConfig>, bool)> {
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        Self::check_revision(&latest, revision_id)?;
        if let Some(sha) = code_sha256
            && sha != crate::wire::sha256_base64(&latest.code.sha256)
        {
            return Err(ApiError::invalid_parameter(format!(
                "CodeSha256 ({sha}) is different from current CodeSha256 in $LATEST ({}). \
                 Please try again with the CodeSha256 in $LATEST.",
                crate::wire::sha256_base64(&latest.code.sha256)
            )));
        }
        if let Some(d) = &description {
            validate_description(d)?;
        }
        let newest = self.versions_of(name).last().cloned();
        if let Some(newest) = newest
            && same_published(&newest, &latest)
        {
            return Ok((newest, false));
        }
        let number = latest.last_published + 1;
        let mut version = (*latest).clone();
        version.version = number.to_string();
        version.revision_id = new_revision();
        version.last_modified_ms = nimbus_types::time::now_ms();
        version.reserved_concurrency = None;
        version.provisioned = Default::default();
        version.last_published = 0;
        if let Some(d) = description {
            version.description = d;
        }
        let mut updated = (*latest).clone();
        updated.last_published = number;
        let store = self.store.clone();
        let (v, u) = (version.clone(), updated.clone());
        self.blocking(move || {
            store.put_version(&v)?;
            store.put_function(&u)
        })
        .await?;
        self.cache(&updated);
        let version = Arc::new(version);
        if let Ok(mut versions) = self.versions.write() {
            versions
                .entry(name.to_owned())
                .or_default()
                .insert(number, version.clone());
        }
        tracing::info!(function = %name, version = number, "version published");
        Ok((version, true))
    }

    /// Deletes one published version (and its provisioned concurrency).
    pub async fn delete_version(&self, name: &str, number: u32) -> ApiResult<()> {
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        let Some(version) = self.version(name, number) else {
            return Err(ApiError::function_not_found(&format!(
                "{}:{number}",
                self.arn(name)
            )));
        };
        let mut updated = (*latest).clone();
        let had_provisioned = updated.provisioned.remove(&number.to_string()).is_some();
        let store = self.store.clone();
        let (key, u) = (name.to_owned(), updated.clone());
        self.blocking(move || {
            store.delete_version(&key, &number.to_string())?;
            if had_provisioned {
                store.put_function(&u)?;
            }
            Ok(())
        })
        .await?;
        self.cache(&updated);
        if let Ok(mut versions) = self.versions.write()
            && let Some(v) = versions.get_mut(name)
        {
            v.remove(&number);
        }
        self.manager.set_provisioned(version.clone(), 0).await;
        self.manager.retire(&version.qualified_name()).await;
        self.collect_code(vec![version.code.sha256.clone()]).await;
        Ok(())
    }

    /// Sets or clears a function's reserved concurrency.
    pub async fn set_reserved(&self, name: &str, reserved: Option<u32>) -> ApiResult<()> {
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        if let Some(r) = reserved {
            let provisioned: u32 = latest.provisioned.values().map(|p| p.requested).sum();
            if r < provisioned {
                return Err(ApiError::invalid_parameter(format!(
                    "ReservedConcurrentExecutions ({r}) cannot be lower than the function's \
                     provisioned concurrency ({provisioned})"
                )));
            }
        }
        let previous = latest.reserved_concurrency;
        self.manager.set_reserved(name, reserved)?;
        let mut updated = (*latest).clone();
        updated.reserved_concurrency = reserved;
        let store = self.store.clone();
        let record = updated.clone();
        if let Err(e) = self.blocking(move || store.put_function(&record)).await {
            let _ = self.manager.set_reserved(name, previous);
            return Err(e);
        }
        self.cache(&updated);
        Ok(())
    }

    /// Sets (or with 0, removes) the provisioned concurrency of a published version.
    pub async fn set_provisioned(
        &self,
        name: &str,
        number: u32,
        requested: u32,
    ) -> ApiResult<Arc<FunctionConfig>> {
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        let version = self
            .version(name, number)
            .ok_or_else(|| ApiError::function_not_found(&format!("{}:{number}", self.arn(name))))?;
        let key = number.to_string();
        if requested > 0 {
            let others: u32 = latest
                .provisioned
                .iter()
                .filter(|(v, _)| **v != key)
                .map(|(_, p)| p.requested)
                .sum();
            let total = others + requested;
            match latest.reserved_concurrency {
                Some(reserved) if total > reserved => {
                    return Err(ApiError::invalid_parameter(format!(
                        "Requested Provisioned Concurrency ({total} for the function) should not \
                         be greater than the reservedConcurrentExecution for function ({reserved})"
                    )));
                }
                None => {
                    let account = self.manager.account();
                    let room = account.unreserved.saturating_sub(account.min_unreserved);
                    if total > room {
                        return Err(ApiError::invalid_parameter(format!(
                            "Specified ConcurrentExecutions for function is greater than \
                             account's unreserved concurrency [{}] minus its minimum [{}]",
                            account.unreserved, account.min_unreserved
                        )));
                    }
                }
                _ => {}
            }
        }
        let mut updated = (*latest).clone();
        if requested == 0 {
            updated.provisioned.remove(&key);
        } else {
            updated.provisioned.insert(
                key,
                nimbus_types::function::ProvisionedRequest {
                    requested,
                    last_modified_ms: nimbus_types::time::now_ms(),
                },
            );
        }
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated);
        self.manager.set_provisioned(version, requested).await;
        Ok(Arc::new(updated))
    }

    pub fn arn(&self, name: &str) -> String {
        nimbus_types::name::function_arn(&self.region, name)
    }

    /// The current configuration of a function, from memory.
    pub fn function(&self, name: &str) -> Option<Arc<FunctionConfig>> {
        self.functions.read().ok()?.get(name).cloned()
    }

    fn cache(&self, f: &FunctionConfig) {
        if let Ok(mut functions) = self.functions.write() {
            functions.insert(f.name.clone(), Arc::new(f.clone()));
        }
    }

    /// Runs a blocking store call off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, nimbus_store::Error> + Send + 'static,
    ) -> ApiResult<T> {
        tokio::task::spawn_blocking(f)
            .await
            .map_err(ApiError::internal)?
            .map_err(ApiError::from)
    }

    async fn store_zip(&self, zip: Vec<u8>) -> ApiResult<CodeRef> {
        let code = self.code.clone();
        self.blocking(move || code.put_zip(&zip)).await
    }

    /// Deletes code packages that no function refers to any more.
    async fn collect_code(&self, candidates: Vec<String>) {
        let mut in_use: Vec<String> = self
            .functions
            .read()
            .map(|f| f.values().map(|f| f.code.sha256.clone()).collect())
            .unwrap_or_default();
        if let Ok(versions) = self.versions.read() {
            in_use.extend(
                versions
                    .values()
                    .flat_map(|v| v.values().map(|f| f.code.sha256.clone())),
            );
        }
        for sha in candidates {
            if !in_use.contains(&sha) {
                let code = self.code.clone();
                let result = tokio::task::spawn_blocking(move || code.remove(&sha)).await;
                if let Ok(Err(e)) = result {
                    tracing::warn!(error = %e, "could not remove an unused code package");
                }
            }
        }
    }

    pub async fn create(&self, input: CreateFunctionInput) -> ApiResult<Arc<FunctionConfig>> {
        let name = input
            .function_name
            .ok_or_else(|| ApiError::invalid_parameter("FunctionName is required"))?;
        validate_function_name(&name)?;
        if input.package_type.as_deref().is_some_and(|p| p != "Zip") {
            return Err(ApiError::invalid_parameter(
                "PackageType Image is not supported; deploy a zip package",
            ));
        }
        if input.layers.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(ApiError::invalid_parameter("Layers are not supported"));
        }
        let runtime = Runtime::parse(input.runtime.as_deref().ok_or_else(|| {
            ApiError::invalid_parameter("Runtime is required for a zip package")
        })?)?;
        let handler = input
            .handler
            .ok_or_else(|| ApiError::invalid_parameter("Handler is required for a zip package"))?;
        validate_handler(runtime, &handler)?;
        let memory_mb = input
            .memory_size
            .map(|m| to_u32("MemorySize", m))
            .transpose()?
            .unwrap_or(DEFAULT_MEMORY_MB);
        validate_memory(memory_mb)?;
        let timeout_s = input
            .timeout
            .map(|t| to_u32("Timeout", t))
            .transpose()?
            .unwrap_or(DEFAULT_TIMEOUT_S);
        validate_timeout(timeout_s)?;
        let description = input.description.unwrap_or_default();
        validate_description(&description)?;
        let environment = environment_of(input.environment)?;
        let ephemeral_storage_mb = input.ephemeral_storage.and_then(|e| e.size).unwrap_or(512);
        validate_ephemeral_storage(ephemeral_storage_mb)?;
        let code_input = input
            .code
            .ok_or_else(|| ApiError::invalid_parameter("Code is required"))?;
        if code_input.s3_bucket.is_some()
            || code_input.s3_key.is_some()
            || code_input.image_uri.is_some()
        {
            return Err(ApiError::invalid_parameter(
                "only Code.ZipFile is supported: upload the zip inline",
            ));
        }
        let zip = decode_zip(
            code_input
                .zip_file
                .as_deref()
                .ok_or_else(|| ApiError::invalid_parameter("Code.ZipFile is required"))?,
        )?;

        let _guard = self.mutations.lock().await;
        if self.function(&name).is_some() {
            return Err(ApiError::conflict(format!(
                "Function already exist: {name}"
            )));
        }
        let code = self.store_zip(zip).await?;
        let function = FunctionConfig {
            name,
            runtime,
            handler,
            role: input.role.unwrap_or_default(),
            description,
            memory_mb,
            timeout_s,
            environment,
            ephemeral_storage_mb,
            code,
            revision_id: new_revision(),
            last_modified_ms: nimbus_types::time::now_ms(),
            version: LATEST.to_owned(),
            event_invoke: None,
            last_published: 0,
            reserved_concurrency: None,
            provisioned: Default::default(),
        };
        if let Err(e) = self.manager.prepare(&function).await {
            self.collect_code(vec![function.code.sha256.clone()]).await;
            return Err(e.into());
        }
        let store = self.store.clone();
        let record = function.clone();
        self.blocking(move || store.create_function(&record))
            .await?;
        self.cache(&function);
        tracing::info!(function = %function.name, code = %function.code.sha256, "function created");
        Ok(Arc::new(function))
    }

    fn existing(&self, name: &str) -> ApiResult<Arc<FunctionConfig>> {
        self.function(name)
            .ok_or_else(|| ApiError::function_not_found(&self.arn(name)))
    }

    fn check_revision(current: &FunctionConfig, wanted: Option<&str>) -> ApiResult<()> {
        match wanted {
            Some(r) if r != current.revision_id => Err(ApiError::new(
                axum::http::StatusCode::PRECONDITION_FAILED,
                "PreconditionFailedException",
                "The Revision Id provided does not match the latest Revision Id. Call the \
                 GetFunction/GetAlias API to retrieve the latest Revision Id",
            )),
            _ => Ok(()),
        }
    }

    /// Stores an updated function after checking its code runs with the new settings.
    async fn commit_update(
        &self,
        old: &FunctionConfig,
        mut updated: FunctionConfig,
    ) -> ApiResult<Arc<FunctionConfig>> {
        updated.revision_id = new_revision();
        updated.last_modified_ms = nimbus_types::time::now_ms();
        self.manager.prepare(&updated).await?;
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated);
        self.manager.retire(&updated.qualified_name()).await;
        if old.code.sha256 != updated.code.sha256 {
            self.collect_code(vec![old.code.sha256.clone()]).await;
        }
        tracing::info!(function = %updated.name, revision = %updated.revision_id, "function updated");
        Ok(Arc::new(updated))
    }

    pub async fn update_code(
        &self,
        name: &str,
        input: UpdateCodeInput,
    ) -> ApiResult<Arc<FunctionConfig>> {
        if input.s3_bucket.is_some() || input.image_uri.is_some() {
            return Err(ApiError::invalid_parameter(
                "only ZipFile is supported: upload the zip inline",
            ));
        }
        let zip = decode_zip(
            input
                .zip_file
                .as_deref()
                .ok_or_else(|| ApiError::invalid_parameter("ZipFile is required"))?,
        )?;
        let _guard = self.mutations.lock().await;
        let old = self.existing(name)?;
        Self::check_revision(&old, input.revision_id.as_deref())?;
        let code = self.store_zip(zip).await?;
        let mut updated = (*old).clone();
        updated.code = code;
        if input.dry_run == Some(true) {
            self.manager.prepare(&updated).await?;
            self.collect_code(vec![updated.code.sha256.clone()]).await;
            return Ok(old);
        }
        let result = self.commit_update(&old, updated.clone()).await;
        if result.is_err() {
            self.collect_code(vec![updated.code.sha256.clone()]).await;
        }
        result
    }

    pub async fn update_config(
        &self,
        name: &str,
        input: UpdateConfigInput,
    ) -> ApiResult<Arc<FunctionConfig>> {
        if input.layers.as_ref().is_some_and(|l| !l.is_empty()) {
            return Err(ApiError::invalid_parameter("Layers are not supported"));
        }
        let _guard = self.mutations.lock().await;
        let old = self.existing(name)?;
        Self::check_revision(&old, input.revision_id.as_deref())?;
        let mut updated = (*old).clone();
        if let Some(runtime) = input.runtime.as_deref() {
            updated.runtime = Runtime::parse(runtime)?;
        }
        if let Some(handler) = input.handler {
            updated.handler = handler;
        }
        validate_handler(updated.runtime, &updated.handler)?;
        if let Some(m) = input.memory_size {
            updated.memory_mb = to_u32("MemorySize", m)?;
            validate_memory(updated.memory_mb)?;
        }
        if let Some(t) = input.timeout {
            updated.timeout_s = to_u32("Timeout", t)?;
            validate_timeout(updated.timeout_s)?;
        }
        if let Some(d) = input.description {
            validate_description(&d)?;
            updated.description = d;
        }
        if input.environment.is_some() {
            updated.environment = environment_of(input.environment)?;
        }
        if let Some(size) = input.ephemeral_storage.and_then(|e| e.size) {
            validate_ephemeral_storage(size)?;
            updated.ephemeral_storage_mb = size;
        }
        if let Some(role) = input.role {
            updated.role = role;
        }
        self.commit_update(&old, updated).await
    }

    /// Sets or clears the event-invoke configuration; sandboxes are unaffected.
    pub async fn set_event_invoke(
        &self,
        name: &str,
        config: Option<nimbus_types::function::EventInvokeConfig>,
    ) -> ApiResult<Arc<FunctionConfig>> {
        let _guard = self.mutations.lock().await;
        let mut updated = (*self.existing(name)?).clone();
        updated.event_invoke = config;
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated);
        Ok(Arc::new(updated))
    }

    pub async fn delete(&self, name: &str) -> ApiResult<()> {
        let _guard = self.mutations.lock().await;
        let old = self.existing(name)?;
        let store = self.store.clone();
        let key = name.to_owned();
        let versions = self.versions_of(name);
        let numbers: Vec<String> = versions.iter().map(|v| v.version.clone()).collect();
        self.blocking(move || {
            for n in &numbers {
                store.delete_version(&key, n)?;
            }
            store.delete_function(&key).map(|_| ())
        })
        .await?;
        if let Ok(mut functions) = self.functions.write() {
            functions.remove(name);
        }
        if let Ok(mut v) = self.versions.write() {
            v.remove(name);
        }
        for v in &versions {
            self.manager.set_provisioned(v.clone(), 0).await;
        }
        self.manager.remove_function(name).await;
        let mut codes = vec![old.code.sha256.clone()];
        codes.extend(versions.iter().map(|v| v.code.sha256.clone()));
        self.collect_code(codes).await;
        tracing::info!(function = %name, "function deleted");
        Ok(())
    }

    /// Functions in name order after `marker`, at most `limit`, and whether more follow.
    pub fn list(
        &self,
        marker: Option<&str>,
        limit: usize,
    ) -> ApiResult<(Vec<Arc<FunctionConfig>>, bool)> {
        let functions = self
            .functions
            .read()
            .map_err(|_| ApiError::internal("function table poisoned"))?;
        let mut names: Vec<&String> = functions
            .keys()
            .filter(|n| marker.is_none_or(|m| n.as_str() > m))
            .collect();
        names.sort();
        let more = names.len() > limit;
        let page = names
            .into_iter()
            .take(limit)
            .filter_map(|n| functions.get(n).cloned())
            .collect();
        Ok((page, more))
    }

    /// The stored zip of a function's code, for GetFunction's download link.
    pub async fn code_zip(&self, function: &FunctionConfig) -> ApiResult<Vec<u8>> {
        let code = self.code.clone();
        let reference = function.code.clone();
        self.blocking(move || code.read_zip(&reference)).await
    }
}

/// Whether a published version already holds what `$LATEST` has now.
fn same_published(version: &FunctionConfig, latest: &FunctionConfig) -> bool {
    version.code == latest.code
        && version.runtime == latest.runtime
        && version.handler == latest.handler
        && version.memory_mb == latest.memory_mb
        && version.timeout_s == latest.timeout_s
        && version.environment == latest.environment
        && version.ephemeral_storage_mb == latest.ephemeral_storage_mb
        && version.role == latest.role
}

impl nimbus_events::FunctionDirectory for ControlPlane {
    /// A function by name, or one of its versions as `name:N`.
    fn function(&self, name: &str) -> Option<Arc<FunctionConfig>> {
        match name.split_once(':') {
            Some((name, number)) => self.version(name, number.parse().ok()?),
            None => ControlPlane::function(self, name),
        }
    }
}
