//! Function URLs and resource-based policies: settings of a function kept on its `$LATEST`
//! record that change nothing that runs, so that no sandbox is replaced when they change.

use std::sync::Arc;

use nimbus_types::FunctionConfig;
use nimbus_types::url::{FunctionUrl, Permission};

use crate::{ControlPlane, Error, Result};

/// The URL ids a function's record holds, with the function's key and each URL's qualifier.
pub(crate) fn ids_of(f: &FunctionConfig) -> Vec<(String, (String, String))> {
    f.urls
        .iter()
        .map(|(qualifier, url)| (url.url_id.clone(), (f.key(), qualifier.clone())))
        .collect()
}

/// A function URL found by its id: the function's `$LATEST` record, the URL's qualifier and
/// the URL.
pub struct UrlTarget {
    pub function: Arc<FunctionConfig>,
    pub qualifier: String,
    pub url: FunctionUrl,
}

impl ControlPlane {
    /// Keeps the URL-id index in step with a function record that changed from `old` to `new`.
    pub(crate) fn index_urls(
        &self,
        old: Option<&FunctionConfig>,
        new: Option<&FunctionConfig>,
    ) -> Result<()> {
        let mut index = self.url_ids.write().map_err(|_| Error::Poisoned)?;
        for (id, _) in old.map(ids_of).unwrap_or_default() {
            index.remove(&id);
        }
        index.extend(new.map(ids_of).unwrap_or_default());
        Ok(())
    }

    /// The function URL with this id, if any.
    pub fn url_target(&self, url_id: &str) -> Option<UrlTarget> {
        let (key, qualifier) = self.url_ids.read().ok()?.get(url_id).cloned()?;
        let function = self.function(&key)?;
        let url = function.urls.get(&qualifier)?.clone();
        Some(UrlTarget {
            function,
            qualifier,
            url,
        })
    }

    /// Changes a function's `$LATEST` record with `change` (which may refuse) and stores it,
    /// under the mutation lock. For settings that do not change what runs: URLs, policies.
    pub async fn modify<T: Send + 'static>(
        &self,
        name: &str,
        change: impl FnOnce(&mut FunctionConfig) -> Result<T>,
    ) -> Result<(Arc<FunctionConfig>, T)> {
        let _guard = self.mutations.lock().await;
        let mut updated = (*self.existing(name)?).clone();
        let out = change(&mut updated)?;
        let store = self.store.clone();
        let record = updated.clone();
        self.blocking(move || store.put_function(&record)).await?;
        self.cache(&updated)?;
        Ok((Arc::new(updated), out))
    }

    /// Adds a statement to a function's resource-based policy; its id must be new.
    pub async fn add_permission(&self, name: &str, permission: Permission) -> Result<()> {
        self.modify(name, move |f| {
            if f.permissions.iter().any(|p| p.sid == permission.sid) {
                return Err(Error::Conflict(format!(
                    "The statement id ({}) provided already exists. Please provide a new \
                     statement id, or remove the existing statement.",
                    permission.sid
                )));
            }
            if f.permissions.len() >= MAX_STATEMENTS {
                return Err(Error::Invalid(nimbus_types::InvalidParameter::new(
                    "The final policy size is bigger than the limit.",
                )));
            }
            f.permissions.push(permission);
            Ok(())
        })
        .await
        .map(|_| ())
    }

    /// Removes a statement of a function's resource-based policy by id.
    pub async fn remove_permission(
        &self,
        name: &str,
        sid: &str,
        qualifier: Option<&str>,
    ) -> Result<()> {
        let (sid, qualifier) = (sid.to_owned(), qualifier.map(str::to_owned));
        self.modify(name, move |f| {
            let before = f.permissions.len();
            f.permissions
                .retain(|p| !(p.sid == sid && p.qualifier == qualifier));
            if f.permissions.len() == before {
                return Err(Error::NotFound(format!(
                    "Statement {sid} is not found in resource policy."
                )));
            }
            Ok(())
        })
        .await
        .map(|_| ())
    }
}

/// Statements a function's policy holds at most (Lambda limits the policy to 20 KB, which a
/// few hundred statements reach).
const MAX_STATEMENTS: usize = 200;
