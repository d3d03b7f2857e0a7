//! The HTTP APIs of every account: kept in the [`ApiStore`], held in memory with each API's
//! route table built, so that a request finds its route without touching the store.
//!
//! Every stage serves the API's current routes and integrations, as a stage with
//! `AutoDeploy` does; deployments of a fixed snapshot are not modelled.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, RwLock};

use nimbus_store::ApiStore;
use nimbus_types::http_api::HttpApi;

use crate::routes::RouteTable;

/// Why a change to an API is refused; each maps to API Gateway's error of the same name.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    Conflict(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("the API store failed")]
    Store(#[from] nimbus_store::Error),
    #[error("the API table's lock was poisoned by a panic")]
    Poisoned,
}

/// An API with its route table (route ids by route key).
pub struct Deployed {
    pub api: HttpApi,
    pub routes: RouteTable<String>,
}

impl Deployed {
    /// Builds the route table; two routes that would match the same requests are refused.
    pub fn build(api: HttpApi) -> Result<Self, Error> {
        let mut routes = RouteTable::default();
        for route in api.routes.values() {
            routes
                .insert(&route.route_key, route.route_id.clone())
                .map_err(|c| Error::Conflict(c.0))?;
        }
        Ok(Self { api, routes })
    }
}

pub struct HttpApis {
    store: Arc<dyn ApiStore>,
    apis: RwLock<HashMap<String, Arc<Deployed>>>,
    mutations: Mutex<()>,
}

fn not_found(api_id: &str) -> Error {
    Error::NotFound(format!("Invalid API identifier specified {api_id}"))
}

impl HttpApis {
    pub fn load(store: Arc<dyn ApiStore>) -> Result<Self, Error> {
        let mut apis = HashMap::new();
        for api in store.apis()? {
            let id = api.api_id.clone();
            match Deployed::build(api) {
                Ok(deployed) => {
                    apis.insert(id, Arc::new(deployed));
                }
                Err(e) => {
                    tracing::warn!(api = %id, error = %e, "a stored HTTP API's routes conflict; it is not served")
                }
            }
        }
        Ok(Self {
            store,
            apis: RwLock::new(apis),
            mutations: Mutex::new(()),
        })
    }

    /// An API by id, whoever owns it (for serving its requests).
    pub fn get(&self, api_id: &str) -> Option<Arc<Deployed>> {
        self.apis.read().ok()?.get(api_id).cloned()
    }

    /// An account's API by id.
    pub fn of(&self, account: &str, api_id: &str) -> Result<Arc<Deployed>, Error> {
        self.get(api_id)
            .filter(|d| d.api.account == account)
            .ok_or_else(|| not_found(api_id))
    }

    /// An account's APIs, by id.
    pub fn list(&self, account: &str) -> Vec<Arc<Deployed>> {
        let mut out: Vec<_> = self
            .apis
            .read()
            .map(|apis| {
                apis.values()
                    .filter(|d| d.api.account == account)
                    .cloned()
                    .collect()
            })
            .unwrap_or_default();
        out.sort_by(|a, b| a.api.api_id.cmp(&b.api.api_id));
        out
    }

    fn commit(&self, deployed: Deployed) -> Result<Arc<Deployed>, Error> {
        self.store.put_api(&deployed.api)?;
        let deployed = Arc::new(deployed);
        self.apis
            .write()
            .map_err(|_| Error::Poisoned)?
            .insert(deployed.api.api_id.clone(), deployed.clone());
        Ok(deployed)
    }

    pub fn create(&self, api: HttpApi) -> Result<Arc<Deployed>, Error> {
        let _guard = self.mutations.lock().map_err(|_| Error::Poisoned)?;
        if self.get(&api.api_id).is_some() {
            return Err(Error::Conflict(format!(
                "API {} already exists",
                api.api_id
            )));
        }
        self.commit(Deployed::build(api)?)
    }

    /// Changes an account's API with `change` (which may refuse), rebuilds its route table
    /// and stores it.
    pub fn modify<T>(
        &self,
        account: &str,
        api_id: &str,
        change: impl FnOnce(&mut HttpApi) -> Result<T, Error>,
    ) -> Result<(Arc<Deployed>, T), Error> {
        let _guard = self.mutations.lock().map_err(|_| Error::Poisoned)?;
        let mut api = self.of(account, api_id)?.api.clone();
        let out = change(&mut api)?;
        Ok((self.commit(Deployed::build(api)?)?, out))
    }

    pub fn delete(&self, account: &str, api_id: &str) -> Result<(), Error> {
        let _guard = self.mutations.lock().map_err(|_| Error::Poisoned)?;
        self.of(account, api_id)?;
        self.store.delete_api(api_id)?;
        self.apis
            .write()
            .map_err(|_| Error::Poisoned)?
            .remove(api_id);
        Ok(())
    }
}
