//! The function registry: functions, their published versions and their settings (reserved
//! and provisioned concurrency, event-invoke configuration), kept in the [`FunctionStore`] and
//! mirrored in memory for the invoke path.
//!
//! It knows nothing of HTTP or of any wire format: the protocol crates turn requests into the
//! plain inputs here and [`Error`]'s variants into their own error codes. Every value is
//! validated here too, so that any caller (an API, the deploy manifest) gets the same rules.
//!
//! Mutations are serialised by one lock: each is a read-modify-write of a function record plus
//! code-store housekeeping, and deploys are rare next to invocations. Reads and invocations go
//! through the in-memory copy, which mutations keep current.
//!
//! Functions belong to accounts. Every method that takes a function's `name` takes its key,
//! the name scoped by its account ([`nimbus_types::name::scoped`]); the protocol crates make it
//! from the caller's account, so that one account never reaches another's functions.

#![forbid(unsafe_code)]

mod alias;
mod layer;
mod url;

pub use alias::AliasChange;
pub use layer::NewLayerVersion;
pub use url::UrlTarget;

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, RwLock};

use nimbus_manager::WorkerManager;
use nimbus_store::{CodeStore, FunctionStore};
use nimbus_types::function::{
    EGRESS_TAG, EventInvokeConfig, ProvisionedRequest, SnapStart, validate_description,
    validate_environment, validate_ephemeral_storage, validate_handler, validate_memory,
    validate_snap_start, validate_tags, validate_timeout,
};
use nimbus_types::limits::{DEFAULT_MEMORY_MB, DEFAULT_TIMEOUT_S};
use nimbus_types::name::{LATEST, validate_function_name};
use nimbus_types::{CodeRef, FunctionConfig, InvalidParameter, Qualifier, Runtime};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Invalid(#[from] InvalidParameter),
    /// Names the function's ARN, with the qualifier when one was asked for.
    #[error("function not found: {0}")]
    FunctionNotFound(String),
    #[error("function already exists: {0}")]
    AlreadyExists(String),
    /// An update named a revision that is no longer the current one.
    #[error("the revision id does not match the current revision")]
    RevisionMismatch,
    #[error("the function store failed")]
    Store(#[from] nimbus_store::Error),
    #[error("the worker manager refused")]
    Manager(#[from] nimbus_manager::Error),
    /// Something of the function (a URL, a policy statement) that a request needs to be
    /// absent already exists; the message says what.
    #[error("{0}")]
    Conflict(String),
    /// Something of the function (a URL, a policy statement) does not exist; the message
    /// says what.
    #[error("{0}")]
    NotFound(String),
    /// The caller may not use something it named (another account's layer); the message
    /// says what.
    #[error("{0}")]
    Denied(String),
    #[error("the function table's lock was poisoned by a panic")]
    Poisoned,
    #[error("a store task failed")]
    Task(#[from] tokio::task::JoinError),
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// A function to create, as the caller gave it; defaults and validation happen here.
#[derive(Debug, Clone, Default)]
pub struct NewFunction {
    pub name: String,
    pub runtime: Option<Runtime>,
    pub handler: String,
    pub role: String,
    pub description: String,
    pub memory_mb: Option<u32>,
    pub timeout_s: Option<u32>,
    pub environment: BTreeMap<String, String>,
    pub ephemeral_storage_mb: Option<u32>,
    pub snap_start: Option<SnapStart>,
    /// The code package: a zip, already size-checked by the caller.
    pub zip: Vec<u8>,
    pub tags: BTreeMap<String, String>,
    /// Layer version ARNs, bottom first.
    pub layers: Vec<String>,
}

/// New code for a function.
#[derive(Debug, Clone, Default)]
pub struct CodeUpdate {
    pub zip: Vec<u8>,
    /// Only update if this is still the function's revision.
    pub revision_id: Option<String>,
    /// Check that the code would run, change nothing.
    pub dry_run: bool,
}

/// Settings to change; `None` leaves one as it is.
#[derive(Debug, Clone, Default)]
pub struct ConfigUpdate {
    pub runtime: Option<Runtime>,
    pub handler: Option<String>,
    pub role: Option<String>,
    pub description: Option<String>,
    pub memory_mb: Option<u32>,
    pub timeout_s: Option<u32>,
    pub environment: Option<BTreeMap<String, String>>,
    pub ephemeral_storage_mb: Option<u32>,
    pub snap_start: Option<SnapStart>,
    /// Layer version ARNs, bottom first; an empty list removes them.
    pub layers: Option<Vec<String>>,
    pub revision_id: Option<String>,
}

pub struct ControlPlane {
    region: String,
    store: Arc<dyn FunctionStore>,
    code: Arc<dyn CodeStore>,
    manager: Arc<WorkerManager>,
    functions: RwLock<HashMap<String, Arc<FunctionConfig>>>,
    /// Function URLs by URL id: the function's key and the URL's qualifier.
    url_ids: RwLock<HashMap<String, (String, String)>>,
    /// Published versions by function name and number.
    versions: RwLock<HashMap<String, BTreeMap<u32, Arc<FunctionConfig>>>>,
    layers: RwLock<layer::Layers>,
    mutations: tokio::sync::Mutex<()>,
}

/// A uniform draw from `[0, 1)` for weighted alias routing.
fn uniform_draw() -> f64 {
    // 53 random bits fill an f64's mantissa exactly.
    getrandom::u64().map_or(0.5, |x| (x >> 11) as f64 / (1u64 << 53) as f64)
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
    ) -> Result<Self> {
        let mut functions = HashMap::new();
        let mut after: Option<String> = None;
        loop {
            let page = store.list_functions(after.as_deref(), 1000)?;
            let Some(last) = page.last() else { break };
            after = Some(last.name.clone());
            for f in page {
                functions.insert(f.key(), Arc::new(f));
            }
        }
        let mut versions: HashMap<String, BTreeMap<u32, Arc<FunctionConfig>>> = HashMap::new();
        for v in store.all_versions()? {
            if let Ok(n) = v.version.parse::<u32>() {
                versions.entry(v.key()).or_default().insert(n, Arc::new(v));
            }
        }
        let url_ids = functions.values().flat_map(|f| url::ids_of(f)).collect();
        let layers = layer::Layers::load(store.layer_versions()?);
        Ok(Self {
            region,
            store,
            code,
            manager,
            url_ids: RwLock::new(url_ids),
            functions: RwLock::new(functions),
            versions: RwLock::new(versions),
            layers: RwLock::new(layers),
            mutations: tokio::sync::Mutex::new(()),
        })
    }

    pub fn region(&self) -> &str {
        &self.region
    }

    pub fn manager(&self) -> &Arc<WorkerManager> {
        &self.manager
    }

    /// Hands the stored concurrency settings to the Worker Manager: reservations, and the
    /// provisioned sandboxes to start.
    pub async fn restore(&self) -> Result<()> {
        for f in self.all()? {
            if f.reserved_concurrency.is_some()
                && let Err(e) = self.manager.set_reserved(&f.key(), f.reserved_concurrency)
            {
                tracing::warn!(function = %f.name, error = %e, "stored reserved concurrency no longer fits the account limit");
            }
            for (version, p) in &f.provisioned {
                if let Some(v) = version.parse().ok().and_then(|n| self.version(&f.key(), n)) {
                    self.manager.set_provisioned(v, p.requested).await;
                }
            }
        }
        Ok(())
    }

    fn all(&self) -> Result<Vec<Arc<FunctionConfig>>> {
        Ok(self
            .functions
            .read()
            .map_err(|_| Error::Poisoned)?
            .values()
            .cloned()
            .collect())
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
        let mut out = Vec::new();
        for f in self.all().unwrap_or_default() {
            for version in f.provisioned.keys() {
                if let Some(v) = version.parse().ok().and_then(|n| self.version(&f.key(), n)) {
                    out.push(v);
                }
            }
            out.push(f);
        }
        out
    }

    /// The ARN of the function held under `key` ([`nimbus_types::name::scoped`]).
    pub fn arn(&self, key: &str) -> String {
        let (account, name) = nimbus_types::name::unscoped(key);
        nimbus_types::name::function_arn(&self.region, account, name)
    }

    /// What an invocation of a target held as `key`, `key:N` or `key:alias` runs (pollers and
    /// mappings keep their function so), a weighted alias's pick among them.
    pub fn invocation_target(&self, target: &str) -> Option<Arc<FunctionConfig>> {
        match target.split_once(':') {
            Some((key, qualifier)) => self
                .resolve_invocation(key, Some(&Qualifier::parse(qualifier).ok()?))
                .ok(),
            None => self.function(target),
        }
    }

    /// The current configuration of a function, from memory.
    pub fn function(&self, name: &str) -> Option<Arc<FunctionConfig>> {
        self.functions.read().ok()?.get(name).cloned()
    }

    /// A function, or the version a qualifier names (`$LATEST` is the function itself).
    pub fn resolve(
        &self,
        name: &str,
        qualifier: Option<&Qualifier>,
    ) -> Result<Arc<FunctionConfig>> {
        self.resolve_by(name, qualifier, false)
    }

    /// The version an invocation of `name` with `qualifier` runs: as [`Self::resolve`], except
    /// that an alias with a routing configuration picks one of its two versions by weight.
    pub fn resolve_invocation(
        &self,
        name: &str,
        qualifier: Option<&Qualifier>,
    ) -> Result<Arc<FunctionConfig>> {
        self.resolve_by(name, qualifier, true)
    }

    fn resolve_by(
        &self,
        name: &str,
        qualifier: Option<&Qualifier>,
        invocation: bool,
    ) -> Result<Arc<FunctionConfig>> {
        let function = self.existing(name)?;
        let q = match qualifier {
            None | Some(Qualifier::Latest) => return Ok(function),
            Some(Qualifier::Other(q)) => q,
        };
        // Alias names are never all digits, so a qualifier is one or the other.
        let version = match function.aliases.get(q) {
            Some(alias) if invocation && !alias.additional_weights.is_empty() => {
                alias.pick(uniform_draw())
            }
            Some(alias) => alias.function_version.as_str(),
            None => q.as_str(),
        };
        if version == LATEST {
            return Ok(function);
        }
        version
            .parse::<u32>()
            .ok()
            .and_then(|n| self.version(name, n))
            .ok_or_else(|| Error::FunctionNotFound(format!("{}:{q}", self.arn(name))))
    }

    fn existing(&self, name: &str) -> Result<Arc<FunctionConfig>> {
        self.function(name)
            .ok_or_else(|| Error::FunctionNotFound(self.arn(name)))
    }

    fn cache(&self, f: &FunctionConfig) -> Result<()> {
        let old = self
            .functions
            .write()
            .map_err(|_| Error::Poisoned)?
            .insert(f.key(), Arc::new(f.clone()));
        self.index_urls(old.as_deref(), Some(f))
    }

    /// Runs a blocking store call off the async executor.
    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce() -> Result<T, nimbus_store::Error> + Send + 'static,
    ) -> Result<T> {
        Ok(tokio::task::spawn_blocking(f).await??)
    }

    async fn store_zip(&self, zip: Vec<u8>) -> Result<CodeRef> {
        let code = self.code.clone();
        self.blocking(move || code.put_zip(&zip)).await
    }

    /// Deletes code packages that no function refers to any more.
    async fn collect_code(&self, candidates: Vec<String>) {
        // A package stays while a function, a version or a layer version holds it (functions
        // keep the packages of layers deleted after they started using them).
        let mut in_use: Vec<String> = self
            .all()
            .unwrap_or_default()
            .iter()
            .flat_map(|f| packages_of(f))
            .collect();
        if let Ok(versions) = self.versions.read() {
            in_use.extend(
                versions
                    .values()
                    .flat_map(|v| v.values().flat_map(|f| packages_of(f))),
            );
        }
        in_use.extend(self.layer_code_in_use());
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

    /// Creates a function of `account`.
    pub async fn create(&self, account: &str, input: NewFunction) -> Result<Arc<FunctionConfig>> {
        validate_function_name(&input.name)?;
        let runtime = input
            .runtime
            .ok_or_else(|| InvalidParameter::new("Runtime is required for a zip package"))?;
        validate_handler(runtime, &input.handler)?;
        let memory_mb = input.memory_mb.unwrap_or(DEFAULT_MEMORY_MB);
        validate_memory(memory_mb)?;
        let timeout_s = input.timeout_s.unwrap_or(DEFAULT_TIMEOUT_S);
        validate_timeout(timeout_s)?;
        validate_description(&input.description)?;
        validate_environment(&input.environment)?;
        let ephemeral_storage_mb = input.ephemeral_storage_mb.unwrap_or(512);
        validate_ephemeral_storage(ephemeral_storage_mb)?;
        let snap_start = input.snap_start.unwrap_or_default();
        validate_snap_start(runtime, snap_start)?;
        validate_tags(&input.tags)?;
        if input.zip.is_empty() {
            return Err(InvalidParameter::new("Code.ZipFile is empty").into());
        }

        let _guard = self.mutations.lock().await;
        // Under the lock, so that a layer version deleted meanwhile is not half-used.
        let layers = self.resolve_layers(account, &input.layers)?;
        validate_layers_runtime(runtime, &layers)?;
        if self
            .function(&nimbus_types::name::scoped(account, &input.name))
            .is_some()
        {
            return Err(Error::AlreadyExists(input.name));
        }
        let code = self.store_zip(input.zip).await?;
        let function = FunctionConfig {
            name: input.name,
            account: account.to_owned(),
            runtime,
            handler: input.handler,
            role: input.role,
            description: input.description,
            memory_mb,
            timeout_s,
            environment: input.environment,
            ephemeral_storage_mb,
            code,
            revision_id: new_revision(),
            last_modified_ms: nimbus_types::time::now_ms(),
            version: LATEST.to_owned(),
            event_invoke: None,
            last_published: 0,
            reserved_concurrency: None,
            provisioned: Default::default(),
            tags: input.tags,
            urls: Default::default(),
            permissions: Vec::new(),
            aliases: Default::default(),
            snap_start,
            layers,
        };
        if let Err(e) = self.manager.prepare(&function).await {
            self.collect_code(vec![function.code.sha256.clone()]).await;
            return Err(e.into());
        }
        let store = self.store.clone();
        let record = function.clone();
        self.blocking(move || store.create_function(&record))
            .await?;
        self.cache(&function)?;
        tracing::info!(function = %function.name, code = %function.code.sha256, "function created");
        Ok(Arc::new(function))
    }

    fn check_revision(current: &FunctionConfig, wanted: Option<&str>) -> Result<()> {
        match wanted {
            Some(r) if r != current.revision_id => Err(Error::RevisionMismatch),
            _ => Ok(()),
        }
    }

    /// Stores an updated function after checking its code runs with the new settings.
    async fn commit_update(
        &self,
        old: &FunctionConfig,
        mut updated: FunctionConfig,
    ) -> Result<Arc<FunctionConfig>> {
        updated.revision_id = new_revision();
        updated.last_modified_ms = nimbus_types::time::now_ms();
        self.manager.prepare(&updated).await?;
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated)?;
        self.manager.retire(&updated.qualified_name()).await;
        // What the old configuration held and the new one does not: its code, and the
        // packages of layers it dropped (kept only by it if their version was deleted).
        let mut dropped: Vec<String> = old
            .layers
            .iter()
            .map(|l| l.code.sha256.clone())
            .filter(|sha| !updated.layers.iter().any(|l| &l.code.sha256 == sha))
            .collect();
        if old.code.sha256 != updated.code.sha256 {
            dropped.push(old.code.sha256.clone());
        }
        if !dropped.is_empty() {
            self.collect_code(dropped).await;
        }
        tracing::info!(function = %updated.name, revision = %updated.revision_id, "function updated");
        Ok(Arc::new(updated))
    }

    pub async fn update_code(&self, name: &str, input: CodeUpdate) -> Result<Arc<FunctionConfig>> {
        if input.zip.is_empty() {
            return Err(InvalidParameter::new("ZipFile is empty").into());
        }
        let _guard = self.mutations.lock().await;
        let old = self.existing(name)?;
        Self::check_revision(&old, input.revision_id.as_deref())?;
        let code = self.store_zip(input.zip).await?;
        let mut updated = (*old).clone();
        updated.code = code;
        if input.dry_run {
            let checked = self.manager.prepare(&updated).await;
            self.collect_code(vec![updated.code.sha256.clone()]).await;
            checked?;
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
        input: ConfigUpdate,
    ) -> Result<Arc<FunctionConfig>> {
        let _guard = self.mutations.lock().await;
        let old = self.existing(name)?;
        Self::check_revision(&old, input.revision_id.as_deref())?;
        let mut updated = (*old).clone();
        if let Some(runtime) = input.runtime {
            updated.runtime = runtime;
        }
        if let Some(handler) = input.handler {
            updated.handler = handler;
        }
        validate_handler(updated.runtime, &updated.handler)?;
        if let Some(m) = input.memory_mb {
            validate_memory(m)?;
            updated.memory_mb = m;
        }
        if let Some(t) = input.timeout_s {
            validate_timeout(t)?;
            updated.timeout_s = t;
        }
        if let Some(d) = input.description {
            validate_description(&d)?;
            updated.description = d;
        }
        if let Some(env) = input.environment {
            validate_environment(&env)?;
            updated.environment = env;
        }
        if let Some(size) = input.ephemeral_storage_mb {
            validate_ephemeral_storage(size)?;
            updated.ephemeral_storage_mb = size;
        }
        if let Some(role) = input.role {
            updated.role = role;
        }
        if let Some(snap_start) = input.snap_start {
            updated.snap_start = snap_start;
        }
        if let Some(arns) = input.layers {
            updated.layers = self.resolve_layers(&old.account, &arns)?;
        }
        validate_layers_runtime(updated.runtime, &updated.layers)?;
        // Also when only the runtime changed: SnapStart must suit the new one.
        validate_snap_start(updated.runtime, updated.snap_start)?;
        self.commit_update(&old, updated).await
    }

    /// Publishes `$LATEST` as a new immutable version, or returns the newest version if nothing
    /// changed since it was published. `code_sha256` (base64, as Lambda shows it) and
    /// `revision_id` are checks against the current `$LATEST`.
    pub async fn publish_version(
        &self,
        name: &str,
        code_sha256: Option<&str>,
        description: Option<String>,
        revision_id: Option<&str>,
    ) -> Result<(Arc<FunctionConfig>, bool)> {
        // A snapshot is made before the mutation lock is taken: the initialisation may take as
        // long as the function's timeout, and nobody else's changes wait for it.
        let snapshot_of = self.make_snapshot(name).await?;
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        Self::check_revision(&latest, revision_id)?;
        let current = nimbus_types::function::sha256_base64(&latest.code.sha256);
        if let Some(sha) = code_sha256
            && sha != current
        {
            return Err(InvalidParameter::new(format!(
                "CodeSha256 ({sha}) is different from current CodeSha256 in $LATEST ({current}). \
                 Please try again with the CodeSha256 in $LATEST."
            ))
            .into());
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
        version.urls = Default::default();
        version.permissions = Vec::new();
        version.aliases = Default::default();
        version.last_published = 0;
        if let Some(d) = description {
            version.description = d;
        }
        if version.starts_from_snapshot()
            && snapshot_of != Some((latest.revision_id.clone(), latest.last_published))
        {
            return Err(Error::Conflict(
                "The function changed while its snapshot was being made. Publish again.".into(),
            ));
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
        self.cache(&updated)?;
        let version = Arc::new(version);
        self.versions
            .write()
            .map_err(|_| Error::Poisoned)?
            .entry(name.to_owned())
            .or_default()
            .insert(number, version.clone());
        tracing::info!(function = %name, version = number, "version published");
        Ok((version, true))
    }

    /// Makes the snapshot of the version that publishing `name` would create now, if it has
    /// SnapStart on and differs from the newest version: a worker runs its initialisation
    /// ([`WorkerManager::prepare`]). The version exists once its snapshot does, so a failed
    /// initialisation refuses the publish with its reason. Returns the revision and version
    /// count it was made for, which the publish checks under the lock.
    async fn make_snapshot(&self, name: &str) -> Result<Option<(String, u32)>> {
        let latest = self.existing(name)?;
        if latest.snap_start != SnapStart::PublishedVersions {
            return Ok(None);
        }
        if let Some(newest) = self.versions_of(name).last()
            && same_published(newest, &latest)
        {
            return Ok(None);
        }
        let mut candidate = (*latest).clone();
        candidate.version = (latest.last_published + 1).to_string();
        self.manager.prepare(&candidate).await?;
        Ok(Some((latest.revision_id.clone(), latest.last_published)))
    }

    /// Deletes one published version (and its provisioned concurrency).
    pub async fn delete_version(&self, name: &str, number: u32) -> Result<()> {
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        let Some(version) = self.version(name, number) else {
            return Err(Error::FunctionNotFound(format!(
                "{}:{number}",
                self.arn(name)
            )));
        };
        let referring = Self::aliases_of_version(&latest, &version.version);
        if !referring.is_empty() {
            return Err(Error::Conflict(format!(
                "Unable to delete version because the following aliases reference it: {referring:?}"
            )));
        }
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
        self.cache(&updated)?;
        if let Some(v) = self
            .versions
            .write()
            .map_err(|_| Error::Poisoned)?
            .get_mut(name)
        {
            v.remove(&number);
        }
        self.manager.set_provisioned(version.clone(), 0).await;
        self.manager.retire(&version.qualified_name()).await;
        self.collect_code(packages_of(&version)).await;
        Ok(())
    }

    /// Sets or clears a function's reserved concurrency.
    pub async fn set_reserved(&self, name: &str, reserved: Option<u32>) -> Result<()> {
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        if let Some(r) = reserved {
            let provisioned: u32 = latest.provisioned.values().map(|p| p.requested).sum();
            if r < provisioned {
                return Err(InvalidParameter::new(format!(
                    "ReservedConcurrentExecutions ({r}) cannot be lower than the function's \
                     provisioned concurrency ({provisioned})"
                ))
                .into());
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
        self.cache(&updated)
    }

    /// Sets (or with 0, removes) the provisioned concurrency of a published version.
    pub async fn set_provisioned(
        &self,
        name: &str,
        number: u32,
        requested: u32,
    ) -> Result<Arc<FunctionConfig>> {
        let _guard = self.mutations.lock().await;
        let latest = self.existing(name)?;
        let version = self
            .version(name, number)
            .ok_or_else(|| Error::FunctionNotFound(format!("{}:{number}", self.arn(name))))?;
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
                    return Err(InvalidParameter::new(format!(
                        "Requested Provisioned Concurrency ({total} for the function) should not \
                         be greater than the reservedConcurrentExecution for function ({reserved})"
                    ))
                    .into());
                }
                None => {
                    let account = self.manager.account();
                    let room = account.unreserved.saturating_sub(account.min_unreserved);
                    if total > room {
                        return Err(InvalidParameter::new(format!(
                            "Specified ConcurrentExecutions for function is greater than \
                             account's unreserved concurrency [{}] minus its minimum [{}]",
                            account.unreserved, account.min_unreserved
                        ))
                        .into());
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
                ProvisionedRequest {
                    requested,
                    last_modified_ms: nimbus_types::time::now_ms(),
                },
            );
        }
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated)?;
        self.manager.set_provisioned(version, requested).await;
        Ok(Arc::new(updated))
    }

    /// Sets or clears the event-invoke configuration; sandboxes are unaffected.
    pub async fn set_event_invoke(
        &self,
        name: &str,
        config: Option<EventInvokeConfig>,
    ) -> Result<Arc<FunctionConfig>> {
        let _guard = self.mutations.lock().await;
        let mut updated = (*self.existing(name)?).clone();
        updated.event_invoke = config;
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated)?;
        Ok(Arc::new(updated))
    }

    /// Adds and removes tags. A change of [`EGRESS_TAG`] gives the function new sandboxes,
    /// as a configuration change does; other tags change nothing that runs.
    pub async fn tag(
        &self,
        name: &str,
        add: BTreeMap<String, String>,
        remove: &[String],
    ) -> Result<Arc<FunctionConfig>> {
        let _guard = self.mutations.lock().await;
        let old = self.existing(name)?;
        let mut updated = (*old).clone();
        for key in remove {
            updated.tags.remove(key);
        }
        updated.tags.extend(add);
        validate_tags(&updated.tags)?;
        if old.tags.get(EGRESS_TAG) != updated.tags.get(EGRESS_TAG) {
            return self.commit_update(&old, updated).await;
        }
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated)?;
        Ok(Arc::new(updated))
    }

    pub async fn delete(&self, name: &str) -> Result<()> {
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
        self.functions
            .write()
            .map_err(|_| Error::Poisoned)?
            .remove(name);
        self.index_urls(Some(&old), None)?;
        self.versions
            .write()
            .map_err(|_| Error::Poisoned)?
            .remove(name);
        for v in &versions {
            self.manager.set_provisioned(v.clone(), 0).await;
        }
        self.manager.remove_function(name).await;
        let mut codes = packages_of(&old);
        codes.extend(versions.iter().flat_map(|v| packages_of(v)));
        self.collect_code(codes).await;
        tracing::info!(function = %name, "function deleted");
        Ok(())
    }

    /// An account's functions in name order after `marker`, at most `limit`, and whether more
    /// follow.
    pub fn list(
        &self,
        account: &str,
        marker: Option<&str>,
        limit: usize,
    ) -> Result<(Vec<Arc<FunctionConfig>>, bool)> {
        let functions = self.functions.read().map_err(|_| Error::Poisoned)?;
        let mut page: Vec<&Arc<FunctionConfig>> = functions
            .values()
            .filter(|f| f.account == account && marker.is_none_or(|m| f.name.as_str() > m))
            .collect();
        page.sort_by(|a, b| a.name.cmp(&b.name));
        let more = page.len() > limit;
        Ok((page.into_iter().take(limit).cloned().collect(), more))
    }

    /// Every function of `account`.
    pub fn functions_of(&self, account: &str) -> Vec<Arc<FunctionConfig>> {
        let mut out: Vec<_> = self
            .all()
            .unwrap_or_default()
            .into_iter()
            .filter(|f| f.account == account)
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// The stored zip of a function's code.
    pub async fn code_zip(&self, function: &FunctionConfig) -> Result<Vec<u8>> {
        self.read_code(&function.code).await
    }

    /// A stored package (a function's code or a layer's content).
    pub async fn read_code(&self, reference: &CodeRef) -> Result<Vec<u8>> {
        let code = self.code.clone();
        let reference = reference.clone();
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
        && version.snap_start == latest.snap_start
        && version.role == latest.role
        && version.layers == latest.layers
}

/// The packages a function's configuration holds: its code and its layers'.
fn packages_of(f: &FunctionConfig) -> Vec<String> {
    std::iter::once(f.code.sha256.clone())
        .chain(f.layers.iter().map(|l| l.code.sha256.clone()))
        .collect()
}

/// Layers are extracted under `/opt` of a process sandbox; WebAssembly functions have none.
fn validate_layers_runtime(
    runtime: Runtime,
    layers: &[nimbus_types::layer::FunctionLayer],
) -> Result<()> {
    if !layers.is_empty() && matches!(runtime, Runtime::Wasm32Wasip1 | Runtime::WasiHttp) {
        return Err(InvalidParameter::new(format!(
            "Layers are for process runtimes (Python, Node.js, provided); {runtime} functions have no /opt."
        ))
        .into());
    }
    Ok(())
}

/// Finds a function's current configuration by key ([`nimbus_types::name::scoped`]): what the
/// pollers and schedulers need of the registry.
pub trait FunctionDirectory: Send + Sync {
    fn function(&self, name: &str) -> Option<Arc<FunctionConfig>>;
}

impl FunctionDirectory for ControlPlane {
    /// A function by key, or what `key:N` or `key:alias` runs.
    fn function(&self, name: &str) -> Option<Arc<FunctionConfig>> {
        self.invocation_target(name)
    }
}
