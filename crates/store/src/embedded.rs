//! The embedded store: one redb file under the node's data directory.

use std::path::Path;

use nimbus_types::FunctionConfig;
use redb::{Database, ReadableTable, TableDefinition};

use crate::{Error, FunctionStore, Result};

const FUNCTIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("functions");
/// Tables of logs and usage records from before telemetry moved to segment files
/// ([`crate::FileTelemetry`]); dropped when found.
const OLD_LOGS: TableDefinition<(&str, u64), &[u8]> = TableDefinition::new("logs");
const OLD_USAGE: TableDefinition<u64, &[u8]> = TableDefinition::new("usage");
/// Rule name → scheduled rule.
const RULES: TableDefinition<&str, &[u8]> = TableDefinition::new("rules");
/// HTTP APIs by API id, JSON.
const APIS: TableDefinition<&str, &[u8]> = TableDefinition::new("http_apis");
/// Stacks by id.
const STACKS: TableDefinition<&str, &[u8]> = TableDefinition::new("stacks");
/// Layer versions by `{account}/{name}/{version, ten digits}`.
const LAYERS: TableDefinition<&str, &[u8]> = TableDefinition::new("layer_versions");

fn layer_key(account: &str, name: &str, version: u64) -> String {
    format!("{account}/{name}/{version:010}")
}
/// Event source mapping UUID → mapping.
const MAPPINGS: TableDefinition<&str, &[u8]> = TableDefinition::new("event_source_mappings");
/// Queue name → queue configuration.
const QUEUES: TableDefinition<&str, &[u8]> = TableDefinition::new("queues");
/// Access key id → access key.
const KEYS: TableDefinition<&str, &[u8]> = TableDefinition::new("access_keys");
/// `account/name` → IAM user.
const USERS: TableDefinition<&str, &[u8]> = TableDefinition::new("iam_users");
/// `account/name` → IAM role.
const ROLES: TableDefinition<&str, &[u8]> = TableDefinition::new("iam_roles");
/// Account id → account.
const ACCOUNTS: TableDefinition<&str, &[u8]> = TableDefinition::new("accounts");
/// Name → a secret the node made for itself (the key session tokens are signed with).
const SECRETS: TableDefinition<&str, &[u8]> = TableDefinition::new("node_secrets");
/// Published versions, keyed `name:NNNNNNNNNN` (zero-padded so they sort by number).
const VERSIONS: TableDefinition<&str, &[u8]> = TableDefinition::new("versions");

fn version_key(name: &str, version: &str) -> String {
    match version.parse::<u64>() {
        Ok(n) => format!("{name}:{n:010}"),
        Err(_) => format!("{name}:{version}"),
    }
}

const CACHE_BYTES: usize = 16 << 20;

pub struct EmbeddedStore {
    db: Database,
}

impl EmbeddedStore {
    pub fn open(path: &Path) -> Result<Self> {
        // redb's default page cache is 1 GiB; the records here are few and read into memory at
        // start, so a small cache keeps the node's footprint small.
        let db = redb::Builder::new()
            .set_cache_size(CACHE_BYTES)
            .create(path)?;
        let txn = db.begin_write()?;
        {
            txn.open_table(FUNCTIONS)?;
            txn.open_table(QUEUES)?;
            txn.open_table(VERSIONS)?;
            txn.open_table(MAPPINGS)?;
            txn.open_table(RULES)?;
            txn.open_table(APIS)?;
            txn.open_table(STACKS)?;
            txn.open_table(LAYERS)?;
            txn.open_table(KEYS)?;
            txn.open_table(USERS)?;
            txn.open_table(ROLES)?;
            txn.open_table(SECRETS)?;
            txn.open_table(ACCOUNTS)?;
        }
        let dropped = txn.delete_table(OLD_LOGS)? | txn.delete_table(OLD_USAGE)?;
        txn.commit()?;
        if dropped {
            tracing::warn!("dropped the logs and usage records of an older nimbus from the store");
        }
        Ok(Self { db })
    }
}

fn encode<T: serde::Serialize>(value: &T) -> Vec<u8> {
    // Our own plain structs always serialise.
    serde_json::to_vec(value).unwrap_or_default()
}

fn decode<T: serde::de::DeserializeOwned>(bytes: &[u8]) -> Result<T> {
    serde_json::from_slice(bytes).map_err(Error::Corrupt)
}

/// Records kept as JSON under a string key: queues, rules and event source mappings.
type NamedTable = TableDefinition<'static, &'static str, &'static [u8]>;

impl EmbeddedStore {
    fn put_named<T: serde::Serialize>(
        &self,
        table: NamedTable,
        key: &str,
        value: &T,
    ) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(table)?;
            table.insert(key, encode(value).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn all_named<T: serde::de::DeserializeOwned>(&self, table: NamedTable) -> Result<Vec<T>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(table)?;
        let mut out = Vec::new();
        for entry in table.iter()? {
            let (_, v) = entry?;
            out.push(decode(v.value())?);
        }
        Ok(out)
    }

    fn remove_named(&self, table: NamedTable, key: &str) -> Result<bool> {
        let txn = self.db.begin_write()?;
        let existed = {
            let mut table = txn.open_table(table)?;
            table.remove(key)?.is_some()
        };
        txn.commit()?;
        Ok(existed)
    }
}

impl crate::RuleStore for EmbeddedStore {
    fn put_rule(&self, rule: &nimbus_types::queue::ScheduleRule) -> Result<()> {
        self.put_named(RULES, &rule.key(), rule)
    }

    fn rules(&self) -> Result<Vec<nimbus_types::queue::ScheduleRule>> {
        self.all_named(RULES)
    }

    fn delete_rule(&self, name: &str) -> Result<bool> {
        self.remove_named(RULES, name)
    }
}

impl crate::ApiStore for EmbeddedStore {
    fn put_api(&self, api: &nimbus_types::http_api::HttpApi) -> Result<()> {
        self.put_named(APIS, &api.api_id, api)
    }

    fn apis(&self) -> Result<Vec<nimbus_types::http_api::HttpApi>> {
        self.all_named(APIS)
    }

    fn delete_api(&self, api_id: &str) -> Result<bool> {
        self.remove_named(APIS, api_id)
    }
}

impl crate::StackStore for EmbeddedStore {
    fn put_stack(&self, id: &str, record: &serde_json::Value) -> Result<()> {
        self.put_named(STACKS, id, record)
    }

    fn stacks(&self) -> Result<Vec<serde_json::Value>> {
        self.all_named(STACKS)
    }

    fn delete_stack(&self, id: &str) -> Result<bool> {
        self.remove_named(STACKS, id)
    }
}

impl crate::MappingStore for EmbeddedStore {
    fn put_mapping(&self, mapping: &nimbus_types::queue::EventSourceMapping) -> Result<()> {
        self.put_named(MAPPINGS, &mapping.uuid, mapping)
    }

    fn mappings(&self) -> Result<Vec<nimbus_types::queue::EventSourceMapping>> {
        self.all_named(MAPPINGS)
    }

    fn delete_mapping(&self, uuid: &str) -> Result<bool> {
        self.remove_named(MAPPINGS, uuid)
    }
}

impl crate::QueueRegistry for EmbeddedStore {
    fn put_queue(&self, queue: &nimbus_types::queue::QueueConfig) -> Result<()> {
        self.put_named(QUEUES, &queue.key(), queue)
    }

    fn queues(&self) -> Result<Vec<nimbus_types::queue::QueueConfig>> {
        self.all_named(QUEUES)
    }

    fn delete_queue(&self, name: &str) -> Result<bool> {
        self.remove_named(QUEUES, name)
    }
}

impl crate::KeyStore for EmbeddedStore {
    fn put_key(&self, key: &nimbus_types::identity::AccessKey) -> Result<()> {
        self.put_named(KEYS, &key.access_key_id, key)
    }

    fn keys(&self) -> Result<Vec<nimbus_types::identity::AccessKey>> {
        self.all_named(KEYS)
    }

    fn delete_key(&self, access_key_id: &str) -> Result<bool> {
        self.remove_named(KEYS, access_key_id)
    }
}

fn iam_key(account: &str, name: &str) -> String {
    format!("{account}/{name}")
}

impl crate::IamStore for EmbeddedStore {
    fn put_user(&self, user: &nimbus_types::iam::User) -> Result<()> {
        self.put_named(USERS, &iam_key(&user.account, &user.name), user)
    }

    fn users(&self) -> Result<Vec<nimbus_types::iam::User>> {
        self.all_named(USERS)
    }

    fn delete_user(&self, account: &str, name: &str) -> Result<bool> {
        self.remove_named(USERS, &iam_key(account, name))
    }

    fn put_role(&self, role: &nimbus_types::iam::Role) -> Result<()> {
        self.put_named(ROLES, &iam_key(&role.account, &role.name), role)
    }

    fn roles(&self) -> Result<Vec<nimbus_types::iam::Role>> {
        self.all_named(ROLES)
    }

    fn delete_role(&self, account: &str, name: &str) -> Result<bool> {
        self.remove_named(ROLES, &iam_key(account, name))
    }

    fn put_account(&self, account: &nimbus_types::identity::Account) -> Result<()> {
        self.put_named(ACCOUNTS, &account.id, account)
    }

    fn accounts(&self) -> Result<Vec<nimbus_types::identity::Account>> {
        self.all_named(ACCOUNTS)
    }

    fn secret(&self, name: &str, make: &dyn Fn() -> Vec<u8>) -> Result<Vec<u8>> {
        let txn = self.db.begin_write()?;
        let value = {
            let mut table = txn.open_table(SECRETS)?;
            let existing = table.get(name)?.map(|v| v.value().to_vec());
            match existing {
                Some(v) => v,
                None => {
                    let v = make();
                    table.insert(name, v.as_slice())?;
                    v
                }
            }
        };
        txn.commit()?;
        Ok(value)
    }
}

impl FunctionStore for EmbeddedStore {
    fn put_layer_version(&self, layer: &nimbus_types::layer::LayerVersion) -> Result<()> {
        self.put_named(
            LAYERS,
            &layer_key(&layer.account, &layer.name, layer.version),
            layer,
        )
    }

    fn layer_versions(&self) -> Result<Vec<nimbus_types::layer::LayerVersion>> {
        self.all_named(LAYERS)
    }

    fn delete_layer_version(&self, account: &str, name: &str, version: u64) -> Result<bool> {
        self.remove_named(LAYERS, &layer_key(account, name, version))
    }

    fn create_function(&self, function: &FunctionConfig) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(FUNCTIONS)?;
            let key = function.key();
            if table.get(key.as_str())?.is_some() {
                return Err(Error::Conflict(function.name.clone()));
            }
            table.insert(key.as_str(), encode(function).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn put_function(&self, function: &FunctionConfig) -> Result<()> {
        let txn = self.db.begin_write()?;
        {
            let mut table = txn.open_table(FUNCTIONS)?;
            table.insert(function.key().as_str(), encode(function).as_slice())?;
        }
        txn.commit()?;
        Ok(())
    }

    fn get_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FUNCTIONS)?;
        table.get(name)?.map(|v| decode(v.value())).transpose()
    }

    fn list_functions(&self, after: Option<&str>, limit: usize) -> Result<Vec<FunctionConfig>> {
        let txn = self.db.begin_read()?;
        let table = txn.open_table(FUNCTIONS)?;
        let mut out = Vec::new();
        let iter = match after {
            Some(after) => table.range::<&str>(after..)?,
            None => table.range::<&str>(..)?,
        };
        for entry in iter {
            let (k, v) = entry?;
            if Some(k.value()) == after {
                continue;
            }
            out.push(decode(v.value())?);
            if out.len() >= limit {
                break;
            }
        }
        Ok(out)
    }

    fn delete_function(&self, name: &str) -> Result<Option<FunctionConfig>> {
        let txn = self.db.begin_write()?;
        let removed = {
            let mut table = txn.open_table(FUNCTIONS)?;
            let removed = table.remove(name)?;
            removed.map(|v| decode(v.value())).transpose()?
        };
        txn.commit()?;
        Ok(removed)
    }

    fn put_version(&self, version: &FunctionConfig) -> Result<()> {
        self.put_named(
            VERSIONS,
            &version_key(&version.key(), &version.version),
            version,
        )
    }

    fn all_versions(&self) -> Result<Vec<FunctionConfig>> {
        self.all_named(VERSIONS)
    }

    fn delete_version(&self, name: &str, version: &str) -> Result<bool> {
        self.remove_named(VERSIONS, &version_key(name, version))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use nimbus_types::{CodeRef, Runtime};

    fn function(name: &str) -> FunctionConfig {
        FunctionConfig {
            name: name.to_owned(),
            account: nimbus_types::name::DEFAULT_ACCOUNT.to_owned(),
            runtime: Runtime::Wasm32Wasip1,
            handler: "f.wasm".to_owned(),
            role: String::new(),
            description: String::new(),
            memory_mb: 128,
            timeout_s: 3,
            environment: Default::default(),
            ephemeral_storage_mb: 512,
            code: CodeRef {
                sha256: "00".repeat(32),
                size: 1,
            },
            revision_id: "r".to_owned(),
            last_modified_ms: 0,
            version: "$LATEST".to_owned(),
            event_invoke: None,
            last_published: 0,
            reserved_concurrency: None,
            provisioned: Default::default(),
            tags: Default::default(),
            urls: Default::default(),
            permissions: Vec::new(),
            aliases: Default::default(),
            snap_start: Default::default(),
            layers: Vec::new(),
        }
    }

    #[test]
    fn functions_create_list_delete() {
        let dir = tempfile::tempdir().unwrap();
        let store = EmbeddedStore::open(&dir.path().join("db")).unwrap();
        for name in ["c", "a", "b"] {
            store.create_function(&function(name)).unwrap();
        }
        assert!(matches!(
            store.create_function(&function("a")),
            Err(Error::Conflict(_))
        ));
        let page: Vec<_> = store
            .list_functions(None, 2)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(page, ["a", "b"]);
        let rest: Vec<_> = store
            .list_functions(Some("b"), 2)
            .unwrap()
            .into_iter()
            .map(|f| f.name)
            .collect();
        assert_eq!(rest, ["c"]);
        assert!(store.delete_function("b").unwrap().is_some());
        assert!(store.delete_function("b").unwrap().is_none());
        assert!(store.get_function("b").unwrap().is_none());
    }
}
