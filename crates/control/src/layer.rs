//! Lambda layers: versions published under a name (immutable, numbered from 1 and never
//! reused), their packages in the code store, who else may use them, and the layers a function
//! lists resolved to their packages.

use std::collections::BTreeMap;
use std::sync::Arc;

use nimbus_types::InvalidParameter;
use nimbus_types::layer::{
    FunctionLayer, LayerStatement, LayerVersion, MAX_LAYERS, parse_layer_version_arn,
    validate_layer_name,
};

use crate::{ControlPlane, Error, Result};

/// What a new layer version is made of.
#[derive(Debug, Clone, Default)]
pub struct NewLayerVersion {
    pub name: String,
    pub description: String,
    pub compatible_runtimes: Vec<String>,
    pub compatible_architectures: Vec<String>,
    pub license_info: Option<String>,
    pub zip: Vec<u8>,
}

/// Layer versions in memory, by `(account, name)` then number.
#[derive(Default)]
pub(crate) struct Layers {
    pub(crate) by_name: BTreeMap<(String, String), BTreeMap<u64, Arc<LayerVersion>>>,
    /// The newest number ever given per name, so that numbers are never reused.
    pub(crate) highest: BTreeMap<(String, String), u64>,
}

impl Layers {
    pub(crate) fn load(versions: Vec<LayerVersion>) -> Self {
        let mut layers = Self::default();
        for v in versions {
            let key = (v.account.clone(), v.name.clone());
            let high = layers.highest.entry(key.clone()).or_default();
            *high = (*high).max(v.version);
            // A deleted version's record keeps its number taken.
            if !v.deleted {
                layers
                    .by_name
                    .entry(key)
                    .or_default()
                    .insert(v.version, Arc::new(v));
            }
        }
        layers
    }
}

fn not_found(arn: &str) -> Error {
    Error::NotFound(format!(
        "The resource you requested does not exist. ({arn})"
    ))
}

impl ControlPlane {
    fn layer_arn(&self, account: &str, name: &str) -> String {
        format!("arn:aws:lambda:{}:{account}:layer:{name}", self.region)
    }

    /// `PublishLayerVersion`.
    pub async fn publish_layer_version(
        &self,
        account: &str,
        input: NewLayerVersion,
    ) -> Result<Arc<LayerVersion>> {
        validate_layer_name(&input.name)?;
        if input.zip.is_empty() {
            return Err(InvalidParameter::new("Content.ZipFile is empty").into());
        }
        if input.description.chars().count() > 256 {
            return Err(InvalidParameter::new("Description is longer than 256 characters").into());
        }
        if input.compatible_runtimes.len() > 15 {
            return Err(
                InvalidParameter::new("CompatibleRuntimes lists more than 15 runtimes").into(),
            );
        }
        for runtime in &input.compatible_runtimes {
            nimbus_types::Runtime::parse(runtime)?;
        }
        for arch in &input.compatible_architectures {
            if arch != "x86_64" && arch != "arm64" {
                return Err(InvalidParameter::new(format!(
                    "CompatibleArchitectures: {arch} is not x86_64 or arm64"
                ))
                .into());
            }
        }
        // The lock first: the code collector runs under it and must not see the package before
        // the version that holds it.
        let _guard = self.mutations.lock().await;
        let code = self.store_zip(input.zip).await?;
        let key = (account.to_owned(), input.name.clone());
        let version = {
            let layers = self.layers.read().map_err(|_| Error::Poisoned)?;
            layers.highest.get(&key).copied().unwrap_or(0) + 1
        };
        let layer = LayerVersion {
            account: account.to_owned(),
            name: input.name,
            version,
            description: input.description,
            compatible_runtimes: input.compatible_runtimes,
            compatible_architectures: input.compatible_architectures,
            license_info: input.license_info,
            code,
            created_ms: nimbus_types::time::now_ms(),
            policy: Vec::new(),
            revision_id: uuid::Uuid::new_v4().to_string(),
            deleted: false,
        };
        let store = self.store.clone();
        let record = layer.clone();
        if let Err(e) = self
            .blocking(move || store.put_layer_version(&record))
            .await
        {
            self.collect_code(vec![layer.code.sha256.clone()]).await;
            return Err(e);
        }
        let layer = Arc::new(layer);
        let mut layers = self.layers.write().map_err(|_| Error::Poisoned)?;
        layers.highest.insert(key.clone(), version);
        layers
            .by_name
            .entry(key)
            .or_default()
            .insert(version, layer.clone());
        tracing::info!(layer = %layer.name, version, code = %layer.code.sha256, "layer version published");
        Ok(layer)
    }

    /// A layer version of `owner`, as `caller` may see it: its own, or one whose policy lets
    /// the caller use it.
    pub fn layer_version(
        &self,
        caller: &str,
        owner: &str,
        name: &str,
        version: u64,
    ) -> Result<Arc<LayerVersion>> {
        let layers = self.layers.read().map_err(|_| Error::Poisoned)?;
        let arn = format!("{}:{version}", self.layer_arn(owner, name));
        let denied = || {
            Error::Denied(format!(
                "User: arn:aws:iam::{caller}:root is not authorized to perform: lambda:GetLayerVersion on resource: {arn}"
            ))
        };
        let found = layers
            .by_name
            .get(&(owner.to_owned(), name.to_owned()))
            .and_then(|v| v.get(&version))
            .cloned();
        match found {
            Some(found) if found.usable_by(caller) => Ok(found),
            Some(_) => Err(denied()),
            None if caller == owner => Err(not_found(&arn)),
            // Another account learns nothing of what is not shared with it, not even whether
            // it exists.
            None => Err(denied()),
        }
    }

    /// `ListLayerVersions`: the versions of `owner`'s layer, newest first, optionally only
    /// those compatible with a runtime or architecture.
    pub fn layer_versions(
        &self,
        owner: &str,
        name: &str,
        runtime: Option<&str>,
        arch: Option<&str>,
    ) -> Result<Vec<Arc<LayerVersion>>> {
        let layers = self.layers.read().map_err(|_| Error::Poisoned)?;
        Ok(layers
            .by_name
            .get(&(owner.to_owned(), name.to_owned()))
            .map(|v| {
                v.values()
                    .rev()
                    .filter(|l| compatible(l, runtime, arch))
                    .cloned()
                    .collect()
            })
            .unwrap_or_default())
    }

    /// `ListLayers`: each of the account's layers with its newest (matching) version.
    pub fn layers(
        &self,
        account: &str,
        runtime: Option<&str>,
        arch: Option<&str>,
    ) -> Result<Vec<Arc<LayerVersion>>> {
        let layers = self.layers.read().map_err(|_| Error::Poisoned)?;
        Ok(layers
            .by_name
            .iter()
            .filter(|((a, _), _)| a == account)
            .filter_map(|(_, versions)| {
                versions
                    .values()
                    .rev()
                    .find(|l| compatible(l, runtime, arch))
                    .cloned()
            })
            .collect())
    }

    /// `DeleteLayerVersion`: functions that use it keep its package; deleting one that does
    /// not exist succeeds.
    pub async fn delete_layer_version(
        &self,
        account: &str,
        name: &str,
        version: u64,
    ) -> Result<()> {
        validate_layer_name(name)?;
        let _guard = self.mutations.lock().await;
        let removed = {
            let mut layers = self.layers.write().map_err(|_| Error::Poisoned)?;
            layers
                .by_name
                .get_mut(&(account.to_owned(), name.to_owned()))
                .and_then(|v| v.remove(&version))
        };
        let Some(removed) = removed else {
            return Ok(());
        };
        // The record stays, marked deleted, so that the number is never given again.
        let mut tombstone = (*removed).clone();
        tombstone.deleted = true;
        tombstone.policy.clear();
        let store = self.store.clone();
        if let Err(e) = self
            .blocking(move || store.put_layer_version(&tombstone))
            .await
        {
            if let Ok(mut layers) = self.layers.write() {
                layers
                    .by_name
                    .entry((account.to_owned(), name.to_owned()))
                    .or_default()
                    .insert(version, removed);
            }
            return Err(e);
        }
        self.collect_code(vec![removed.code.sha256.clone()]).await;
        tracing::info!(layer = %name, version, "layer version deleted");
        Ok(())
    }

    /// `AddLayerVersionPermission`: another account (or `*`, everyone) may use the version.
    pub async fn add_layer_permission(
        &self,
        account: &str,
        name: &str,
        version: u64,
        statement: LayerStatement,
        revision_id: Option<&str>,
    ) -> Result<Arc<LayerVersion>> {
        if statement.sid.is_empty()
            || statement.sid.len() > 100
            || !statement
                .sid
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        {
            return Err(InvalidParameter::new(
                "StatementId must be 1 to 100 letters, digits, '-' and '_'",
            )
            .into());
        }
        let principal_ok = statement.principal == "*"
            || (statement.principal.len() == 12
                && statement.principal.chars().all(|c| c.is_ascii_digit()));
        if !principal_ok {
            return Err(InvalidParameter::new("Principal must be an account id or *").into());
        }
        if statement.organization_id.is_some() {
            return Err(InvalidParameter::new(
                "OrganizationId is not supported: this node has no organizations",
            )
            .into());
        }
        self.change_layer_policy(account, name, version, revision_id, |policy| {
            if policy.iter().any(|s| s.sid == statement.sid) {
                return Err(Error::Conflict(format!("The statement id ({}) provided already exists. Please provide a new statement id, or remove the existing statement.", statement.sid)));
            }
            policy.push(statement);
            Ok(())
        })
        .await
    }

    /// `RemoveLayerVersionPermission`.
    pub async fn remove_layer_permission(
        &self,
        account: &str,
        name: &str,
        version: u64,
        sid: &str,
        revision_id: Option<&str>,
    ) -> Result<Arc<LayerVersion>> {
        self.change_layer_policy(account, name, version, revision_id, |policy| {
            let before = policy.len();
            policy.retain(|s| s.sid != sid);
            if policy.len() == before {
                return Err(Error::NotFound(format!(
                    "Statement {sid} is not found in resource policy."
                )));
            }
            Ok(())
        })
        .await
    }

    async fn change_layer_policy(
        &self,
        account: &str,
        name: &str,
        version: u64,
        revision_id: Option<&str>,
        change: impl FnOnce(&mut Vec<LayerStatement>) -> Result<()>,
    ) -> Result<Arc<LayerVersion>> {
        let _guard = self.mutations.lock().await;
        let current = self.layer_version(account, account, name, version)?;
        if let Some(r) = revision_id
            && r != current.revision_id
        {
            return Err(Error::RevisionMismatch);
        }
        let mut updated = (*current).clone();
        change(&mut updated.policy)?;
        updated.revision_id = uuid::Uuid::new_v4().to_string();
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_layer_version(&record))
            .await?;
        let updated = Arc::new(updated);
        let mut layers = self.layers.write().map_err(|_| Error::Poisoned)?;
        if let Some(v) = layers
            .by_name
            .get_mut(&(account.to_owned(), name.to_owned()))
        {
            v.insert(version, updated.clone());
        }
        Ok(updated)
    }

    /// The layers a function of `account` lists (version ARNs), resolved to their packages;
    /// each must exist and be usable by the account.
    pub(crate) fn resolve_layers(
        &self,
        account: &str,
        arns: &[String],
    ) -> Result<Vec<FunctionLayer>> {
        if arns.len() > MAX_LAYERS {
            return Err(InvalidParameter::new(format!(
                "A function can use at most {MAX_LAYERS} layers."
            ))
            .into());
        }
        let mut out = Vec::with_capacity(arns.len());
        let mut seen: Vec<(String, String)> = Vec::with_capacity(arns.len());
        for arn in arns {
            let (owner, name, version) = parse_layer_version_arn(arn)?;
            // Compared on the parsed parts, however the ARN is spelled: one layer once.
            if seen.contains(&(owner.clone(), name.clone())) {
                return Err(InvalidParameter::new(format!(
                    "Two versions of the layer {name}, or one version twice, cannot be used together ({arn})."
                ))
                .into());
            }
            seen.push((owner.clone(), name.clone()));
            let layer = self
                .layer_version(account, &owner, &name, version)
                .map_err(|e| match e {
                    Error::NotFound(_) => Error::Invalid(InvalidParameter::new(format!(
                        "Layer version {arn} does not exist."
                    ))),
                    other => other,
                })?;
            out.push(FunctionLayer {
                arn: layer.version_arn(&self.region),
                code: layer.code.clone(),
            });
        }
        Ok(out)
    }

    /// Packages layer versions hold, which the code collector must keep.
    pub(crate) fn layer_code_in_use(&self) -> Vec<String> {
        self.layers
            .read()
            .map(|l| {
                l.by_name
                    .values()
                    .flat_map(|v| v.values().map(|x| x.code.sha256.clone()))
                    .collect()
            })
            .unwrap_or_default()
    }
}

fn compatible(layer: &LayerVersion, runtime: Option<&str>, arch: Option<&str>) -> bool {
    runtime.is_none_or(|r| layer.compatible_runtimes.iter().any(|x| x == r))
        && arch.is_none_or(|a| layer.compatible_architectures.iter().any(|x| x == a))
}
