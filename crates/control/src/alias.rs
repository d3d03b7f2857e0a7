//! Aliases: names for a published version (or `$LATEST`), kept on the function's `$LATEST`
//! record like its URLs and policy, so that moving an alias replaces no sandbox: the versions
//! it points to keep theirs, and the next invocation through it simply runs the other one.

use std::collections::BTreeMap;
use std::sync::Arc;

use nimbus_types::FunctionConfig;
use nimbus_types::alias::{Alias, validate_alias_name, validate_alias_version, validate_routing};
use nimbus_types::function::validate_description;
use nimbus_types::name::LATEST;

use crate::{ControlPlane, Error, Result, new_revision};

/// An alias to create, or the changes to one (`None` leaves a setting as it is).
#[derive(Debug, Clone, Default)]
pub struct AliasChange {
    pub function_version: Option<String>,
    pub description: Option<String>,
    /// `Some(empty)` removes the routing configuration.
    pub additional_weights: Option<BTreeMap<String, f64>>,
    /// Only change the alias if this is still its revision.
    pub revision_id: Option<String>,
}

/// Aliases a function may have (Lambda's quota is per function too).
const MAX_ALIASES: usize = 250;

impl ControlPlane {
    fn check_alias(&self, name: &str, alias: &Alias) -> Result<()> {
        validate_alias_version(&alias.function_version)?;
        validate_routing(&alias.function_version, &alias.additional_weights)?;
        validate_description(&alias.description)?;
        for version in
            std::iter::once(&alias.function_version).chain(alias.additional_weights.keys())
        {
            if version == LATEST {
                continue;
            }
            let exists = version
                .parse::<u32>()
                .ok()
                .and_then(|n| self.version(name, n))
                .is_some();
            if !exists {
                return Err(Error::FunctionNotFound(format!(
                    "{}:{version}",
                    self.arn(name)
                )));
            }
        }
        Ok(())
    }

    /// Creates an alias; its name must be new.
    pub async fn create_alias(
        &self,
        name: &str,
        alias_name: &str,
        change: AliasChange,
    ) -> Result<(Arc<FunctionConfig>, Alias)> {
        validate_alias_name(alias_name)?;
        let alias = Alias {
            function_version: change.function_version.ok_or_else(|| {
                nimbus_types::InvalidParameter::constraint(
                    "functionVersion",
                    None,
                    "Member must not be null",
                )
            })?,
            description: change.description.unwrap_or_default(),
            additional_weights: change.additional_weights.unwrap_or_default(),
            revision_id: new_revision(),
        };
        self.check_alias(name, &alias)?;
        let arn = self.arn(name);
        let alias_name = alias_name.to_owned();
        let (function, ()) = self
            .modify(name, {
                let alias = alias.clone();
                move |f| {
                    // Again under the mutation lock: a version may have been deleted since.
                    self.check_alias(&f.key(), &alias)?;
                    if f.aliases.contains_key(&alias_name) {
                        return Err(Error::Conflict(format!(
                            "Alias already exists: {arn}:{alias_name}"
                        )));
                    }
                    if f.aliases.len() >= MAX_ALIASES {
                        return Err(Error::Invalid(nimbus_types::InvalidParameter::new(
                            format!("A function can have at most {MAX_ALIASES} aliases"),
                        )));
                    }
                    f.aliases.insert(alias_name, alias);
                    Ok(())
                }
            })
            .await?;
        Ok((function, alias))
    }

    /// Changes an alias's version, description or routing.
    pub async fn update_alias(
        &self,
        name: &str,
        alias_name: &str,
        change: AliasChange,
    ) -> Result<(Arc<FunctionConfig>, Alias)> {
        let current = self.alias(name, alias_name)?;
        if let Some(revision) = &change.revision_id
            && *revision != current.revision_id
        {
            return Err(Error::RevisionMismatch);
        }
        let mut alias = current.clone();
        if let Some(v) = change.function_version {
            alias.function_version = v;
        }
        if let Some(d) = change.description {
            alias.description = d;
        }
        if let Some(w) = change.additional_weights {
            alias.additional_weights = w;
        }
        alias.revision_id = new_revision();
        self.check_alias(name, &alias)?;
        let not_found = self.alias_not_found(name, alias_name);
        let (alias_name, expected) = (alias_name.to_owned(), current.revision_id);
        let (function, ()) = self
            .modify(name, {
                let alias = alias.clone();
                move |f| {
                    self.check_alias(&f.key(), &alias)?;
                    // Another update between the read above and this lock loses to it.
                    match f.aliases.get_mut(&alias_name) {
                        Some(a) if a.revision_id == expected => *a = alias,
                        Some(_) => return Err(Error::RevisionMismatch),
                        None => return Err(not_found),
                    }
                    Ok(())
                }
            })
            .await?;
        Ok((function, alias))
    }

    /// Deletes an alias, with the URL and the policy statements that name it.
    pub async fn delete_alias(&self, name: &str, alias_name: &str) -> Result<()> {
        let not_found = self.alias_not_found(name, alias_name);
        let alias_name = alias_name.to_owned();
        self.modify(name, move |f| {
            if f.aliases.remove(&alias_name).is_none() {
                return Err(not_found);
            }
            f.urls.remove(&alias_name);
            f.permissions
                .retain(|p| p.qualifier.as_deref() != Some(alias_name.as_str()));
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// One alias of a function.
    pub fn alias(&self, name: &str, alias_name: &str) -> Result<Alias> {
        self.existing(name)?
            .aliases
            .get(alias_name)
            .cloned()
            .ok_or_else(|| self.alias_not_found(name, alias_name))
    }

    fn alias_not_found(&self, name: &str, alias_name: &str) -> Error {
        Error::NotFound(format!("Alias not found: {}:{alias_name}", self.arn(name)))
    }

    /// The aliases of a function that point to a version, primary or additional.
    pub(crate) fn aliases_of_version(function: &FunctionConfig, version: &str) -> Vec<String> {
        function
            .aliases
            .iter()
            .filter(|(_, a)| {
                a.function_version == version || a.additional_weights.contains_key(version)
            })
            .map(|(n, _)| n.clone())
            .collect()
    }
}
