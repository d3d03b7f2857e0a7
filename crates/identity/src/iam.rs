//! IAM's operations on users, their access keys and policies, and roles: the model behind the
//! IAM API, with IAM's checks and quotas and its error codes.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use nimbus_types::iam::{Role, RoleArn, User, valid_name, valid_path, valid_policy_name};
use nimbus_types::identity::{AccessKey, CredentialIssuer, SessionCredentials};

use crate::policy::{Kind, Policy, quota_size};
use crate::{
    Entry, Error, ID_ALPHABET, Identity, SECRET_ALPHABET, SESSION_LIFETIME_S, managed,
    random_string, session,
};

/// An IAM operation's failure, with IAM's code.
#[derive(Debug, thiserror::Error)]
pub enum IamError {
    #[error("{0}")]
    NoSuchEntity(String),
    #[error("{0}")]
    EntityAlreadyExists(String),
    #[error("{0}")]
    MalformedPolicyDocument(String),
    #[error("{0}")]
    LimitExceeded(String),
    #[error("{0}")]
    DeleteConflict(String),
    /// A value outside the API's constraints: IAM's `ValidationError`.
    #[error("{0}")]
    Validation(String),
    #[error(transparent)]
    Internal(#[from] Error),
}

impl IamError {
    /// IAM's error code and HTTP status.
    pub fn code(&self) -> (&'static str, u16) {
        match self {
            Self::NoSuchEntity(_) => ("NoSuchEntity", 404),
            Self::EntityAlreadyExists(_) => ("EntityAlreadyExists", 409),
            Self::MalformedPolicyDocument(_) => ("MalformedPolicyDocument", 400),
            Self::LimitExceeded(_) => ("LimitExceeded", 409),
            Self::DeleteConflict(_) => ("DeleteConflict", 409),
            Self::Validation(_) => ("ValidationError", 400),
            Self::Internal(_) => ("ServiceFailure", 500),
        }
    }
}

impl From<nimbus_store::Error> for IamError {
    fn from(e: nimbus_store::Error) -> Self {
        Self::Internal(Error::Store(e))
    }
}

type IamResult<T> = Result<T, IamError>;

/// IAM's default quotas.
pub const MAX_USERS: usize = 5_000;
pub const MAX_ROLES: usize = 1_000;
pub const MAX_KEYS_PER_USER: usize = 2;
pub const MAX_ATTACHED_PER_ROLE: usize = 10;
/// Inline policies of a user, together, without whitespace.
pub const USER_POLICY_QUOTA: usize = 2_048;
/// Inline policies of a role, together, without whitespace.
pub const ROLE_POLICY_QUOTA: usize = 10_240;
/// A role's trust policy, without whitespace.
pub const TRUST_POLICY_QUOTA: usize = 2_048;

/// Parses the stored documents of a principal (checked when they were put) and the managed
/// policies attached to it.
pub(crate) fn compile<'a>(
    inline: impl Iterator<Item = &'a String>,
    attached: &[String],
) -> Arc<[Policy]> {
    inline
        .map(String::as_str)
        .chain(attached.iter().filter_map(|arn| managed::document(arn)))
        .filter_map(|doc| Policy::parse(doc, Kind::Identity).ok())
        .collect::<Vec<_>>()
        .into()
}

fn check_name(what: &str, name: &str) -> IamResult<()> {
    if valid_name(name) {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have \
             length between 1 and 64"
        )))
    }
}

fn check_policy_name(name: &str) -> IamResult<()> {
    if valid_policy_name(name) {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "1 validation error detected: Value '{name}' at 'policyName' failed to satisfy \
             constraint: Member must satisfy regular expression pattern: [\\w+=,.@-]+ and have \
             length between 1 and 128"
        )))
    }
}

fn check_path(path: &str) -> IamResult<()> {
    if valid_path(path) {
        Ok(())
    } else {
        Err(IamError::Validation(format!(
            "The specified value for path is invalid: {path:?}. It must begin and end with / \
             and contain only printable ASCII characters, at most 512."
        )))
    }
}

fn parse_policy(document: &str, kind: Kind) -> IamResult<Policy> {
    Policy::parse(document, kind).map_err(|e| IamError::MalformedPolicyDocument(e.0))
}

fn no_user(name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The user with name {name} cannot be found."))
}

fn no_role(name: &str) -> IamError {
    IamError::NoSuchEntity(format!("The role with name {name} cannot be found."))
}

fn key(account: &str, name: &str) -> (String, String) {
    (account.to_owned(), name.to_owned())
}

/// What users and roles have in common: their tables, their inline policies, how they are
/// stored and what their grants are made of.
trait Named: Clone {
    /// `User` or `Role`, as IAM's messages and quota names say it.
    const KIND: &'static str;
    /// The API member naming one (`userName`), for validation messages.
    const FIELD: &'static str;
    /// How many characters their inline policies may hold together.
    const POLICY_QUOTA: usize;
    fn name(&self) -> &str;
    fn path(&self) -> &str;
    fn policies(&self) -> &BTreeMap<String, String>;
    fn policies_mut(&mut self) -> &mut BTreeMap<String, String>;
    /// Its inline policies and any attached ones, parsed.
    fn grants(&self) -> Arc<[Policy]>;
    fn save(&self, store: &dyn nimbus_store::IamStore) -> nimbus_store::Result<()>;
    fn table(state: &crate::State) -> &Table<Self>;
    fn table_mut(state: &mut crate::State) -> &mut Table<Self>;
    fn missing(name: &str) -> IamError;
}

impl Named for User {
    const KIND: &'static str = "User";
    const FIELD: &'static str = "userName";
    const POLICY_QUOTA: usize = USER_POLICY_QUOTA;
    fn name(&self) -> &str {
        &self.name
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn policies(&self) -> &BTreeMap<String, String> {
        &self.policies
    }
    fn policies_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.policies
    }
    fn grants(&self) -> Arc<[Policy]> {
        compile(self.policies.values(), &[])
    }
    fn save(&self, store: &dyn nimbus_store::IamStore) -> nimbus_store::Result<()> {
        store.put_user(self)
    }
    fn table(state: &crate::State) -> &Table<Self> {
        &state.users
    }
    fn table_mut(state: &mut crate::State) -> &mut Table<Self> {
        &mut state.users
    }
    fn missing(name: &str) -> IamError {
        no_user(name)
    }
}

impl Named for Role {
    const KIND: &'static str = "Role";
    const FIELD: &'static str = "roleName";
    const POLICY_QUOTA: usize = ROLE_POLICY_QUOTA;
    fn name(&self) -> &str {
        &self.name
    }
    fn path(&self) -> &str {
        &self.path
    }
    fn policies(&self) -> &BTreeMap<String, String> {
        &self.policies
    }
    fn policies_mut(&mut self) -> &mut BTreeMap<String, String> {
        &mut self.policies
    }
    fn grants(&self) -> Arc<[Policy]> {
        compile(self.policies.values(), &self.attached)
    }
    fn save(&self, store: &dyn nimbus_store::IamStore) -> nimbus_store::Result<()> {
        store.put_role(self)
    }
    fn table(state: &crate::State) -> &Table<Self> {
        &state.roles
    }
    fn table_mut(state: &mut crate::State) -> &mut Table<Self> {
        &mut state.roles
    }
    fn missing(name: &str) -> IamError {
        no_role(name)
    }
}

fn no_inline<T: Named>(policy_name: &str) -> IamError {
    IamError::NoSuchEntity(format!(
        "The {} policy with name {policy_name} cannot be found.",
        T::KIND.to_ascii_lowercase()
    ))
}

type Table<T> = HashMap<(String, String), Entry<T>>;

/// Refuses a new entity whose name an existing one has (names are unique regardless of case)
/// or that would pass the account's quota.
fn check_new<T: Named>(table: &Table<T>, account: &str, name: &str, quota: usize) -> IamResult<()> {
    let mut held = 0;
    for (_, n) in table.keys().filter(|(a, _)| a == account) {
        if n.eq_ignore_ascii_case(name) {
            return Err(IamError::EntityAlreadyExists(format!(
                "{} with name {name} already exists.",
                T::KIND
            )));
        }
        held += 1;
    }
    if held >= quota {
        return Err(IamError::LimitExceeded(format!(
            "Cannot exceed quota for {}sPerAccount: {quota}",
            T::KIND
        )));
    }
    Ok(())
}

fn insert_new<T: Named>(table: &mut Table<T>, account: &str, value: T) {
    table.insert(
        key(account, value.name()),
        Entry {
            value,
            grants: Arc::from(Vec::new()),
        },
    );
}

/// An account's entities whose path starts with `path_prefix`, by name.
fn listed<T: Named>(table: &Table<T>, account: &str, path_prefix: &str) -> Vec<T> {
    let mut out: Vec<T> = table
        .iter()
        .filter(|((a, _), e)| a == account && e.value.path().starts_with(path_prefix))
        .map(|(_, e)| e.value.clone())
        .collect();
    out.sort_by(|a, b| a.name().cmp(b.name()));
    out
}

impl Identity {
    fn write(&self) -> IamResult<std::sync::RwLockWriteGuard<'_, crate::State>> {
        self.state
            .write()
            .map_err(|_| IamError::Internal(Error::Poisoned))
    }

    fn read(&self) -> IamResult<std::sync::RwLockReadGuard<'_, crate::State>> {
        self.state
            .read()
            .map_err(|_| IamError::Internal(Error::Poisoned))
    }

    // ----- users

    pub fn create_user(&self, account: &str, name: &str, path: Option<&str>) -> IamResult<User> {
        check_name("userName", name)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        let mut state = self.write()?;
        check_new(&state.users, account, name, MAX_USERS)?;
        let user = User {
            account: account.to_owned(),
            name: name.to_owned(),
            user_id: random_string("AIDA", 17, ID_ALPHABET)?,
            path: path.to_owned(),
            created_ms: nimbus_types::time::now_ms(),
            policies: BTreeMap::new(),
        };
        self.iam_store.put_user(&user)?;
        insert_new(&mut state.users, account, user.clone());
        Ok(user)
    }

    pub fn get_user(&self, account: &str, name: &str) -> IamResult<User> {
        self.read()?
            .users
            .get(&key(account, name))
            .map(|e| e.value.clone())
            .ok_or_else(|| no_user(name))
    }

    /// An account's users whose path starts with `path_prefix`, by name.
    pub fn list_users(&self, account: &str, path_prefix: &str) -> IamResult<Vec<User>> {
        Ok(listed(&self.read()?.users, account, path_prefix))
    }

    /// Deletes a user that has no access keys and no policies left, as IAM requires.
    pub fn delete_user(&self, account: &str, name: &str) -> IamResult<()> {
        let mut state = self.write()?;
        let entry = state
            .users
            .get(&key(account, name))
            .ok_or_else(|| no_user(name))?;
        if !entry.value.policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies first.".into(),
            ));
        }
        if state
            .keys
            .values()
            .any(|k| !k.root && k.account == account && k.user == name)
        {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete access keys first.".into(),
            ));
        }
        self.iam_store.delete_user(account, name)?;
        state.users.remove(&key(account, name));
        Ok(())
    }

    /// Applies `change` to a stored user or role and recompiles its grants.
    fn update<T: Named>(
        &self,
        account: &str,
        name: &str,
        change: impl FnOnce(&mut T) -> IamResult<()>,
    ) -> IamResult<()> {
        let mut state = self.write()?;
        let entry = T::table_mut(&mut state)
            .get_mut(&key(account, name))
            .ok_or_else(|| T::missing(name))?;
        let mut updated = entry.value.clone();
        change(&mut updated)?;
        updated.save(self.iam_store.as_ref())?;
        entry.grants = updated.grants();
        entry.value = updated;
        Ok(())
    }

    fn put_inline<T: Named>(
        &self,
        account: &str,
        name: &str,
        policy_name: &str,
        document: &str,
    ) -> IamResult<()> {
        check_name(T::FIELD, name)?;
        check_policy_name(policy_name)?;
        parse_policy(document, Kind::Identity)?;
        self.update::<T>(account, name, |entity| {
            let policies = entity.policies_mut();
            policies.insert(policy_name.to_owned(), document.to_owned());
            let size: usize = policies.values().map(|d| quota_size(d)).sum();
            if size > T::POLICY_QUOTA {
                return Err(IamError::LimitExceeded(format!(
                    "Maximum policy size of {} bytes exceeded for {} {name}",
                    T::POLICY_QUOTA,
                    T::KIND.to_ascii_lowercase()
                )));
            }
            Ok(())
        })
    }

    fn get_inline<T: Named>(
        &self,
        account: &str,
        name: &str,
        policy_name: &str,
    ) -> IamResult<String> {
        let state = self.read()?;
        let entry = T::table(&state)
            .get(&key(account, name))
            .ok_or_else(|| T::missing(name))?;
        entry
            .value
            .policies()
            .get(policy_name)
            .cloned()
            .ok_or_else(|| no_inline::<T>(policy_name))
    }

    fn delete_inline<T: Named>(
        &self,
        account: &str,
        name: &str,
        policy_name: &str,
    ) -> IamResult<()> {
        self.update::<T>(account, name, |entity| {
            entity
                .policies_mut()
                .remove(policy_name)
                .map(|_| ())
                .ok_or_else(|| no_inline::<T>(policy_name))
        })
    }

    fn list_inline<T: Named>(&self, account: &str, name: &str) -> IamResult<Vec<String>> {
        let state = self.read()?;
        let entry = T::table(&state)
            .get(&key(account, name))
            .ok_or_else(|| T::missing(name))?;
        Ok(entry.value.policies().keys().cloned().collect())
    }

    pub fn put_user_policy(
        &self,
        account: &str,
        user: &str,
        policy_name: &str,
        document: &str,
    ) -> IamResult<()> {
        self.put_inline::<User>(account, user, policy_name, document)
    }

    pub fn get_user_policy(
        &self,
        account: &str,
        user: &str,
        policy_name: &str,
    ) -> IamResult<String> {
        self.get_inline::<User>(account, user, policy_name)
    }

    pub fn delete_user_policy(
        &self,
        account: &str,
        user: &str,
        policy_name: &str,
    ) -> IamResult<()> {
        self.delete_inline::<User>(account, user, policy_name)
    }

    pub fn list_user_policies(&self, account: &str, user: &str) -> IamResult<Vec<String>> {
        self.list_inline::<User>(account, user)
    }

    // ----- access keys

    /// Creates an access key for one of the account's users.
    pub fn create_user_key(&self, account: &str, user: &str) -> IamResult<AccessKey> {
        let state = self.read()?;
        if !state.users.contains_key(&key(account, user)) {
            return Err(no_user(user));
        }
        let held = state
            .keys
            .values()
            .filter(|k| !k.root && k.account == account && k.user == user)
            .count();
        drop(state);
        if held >= MAX_KEYS_PER_USER {
            return Err(IamError::LimitExceeded(format!(
                "Cannot exceed quota for AccessKeysPerUser: {MAX_KEYS_PER_USER}"
            )));
        }
        let key = AccessKey {
            access_key_id: random_string("AKIA", 16, ID_ALPHABET)?,
            secret_access_key: random_string("", 40, SECRET_ALPHABET)?,
            account: account.to_owned(),
            user: user.to_owned(),
            root: false,
            created_ms: nimbus_types::time::now_ms(),
        };
        self.put(key.clone())?;
        Ok(key)
    }

    /// The access keys of a user (`Some`) or the account's own (`None`), oldest first.
    pub fn list_keys(&self, account: &str, user: Option<&str>) -> IamResult<Vec<AccessKey>> {
        let state = self.read()?;
        if let Some(user) = user
            && !state.users.contains_key(&key(account, user))
        {
            return Err(no_user(user));
        }
        let mut keys: Vec<AccessKey> = state
            .keys
            .values()
            .filter(|k| {
                k.account == account
                    && match user {
                        Some(u) => !k.root && k.user == u,
                        None => k.root,
                    }
            })
            .cloned()
            .collect();
        keys.sort_by_key(|k| k.created_ms);
        Ok(keys)
    }

    /// Deletes a user's (or the account's own) access key.
    pub fn delete_user_key(
        &self,
        account: &str,
        user: Option<&str>,
        access_key_id: &str,
    ) -> IamResult<()> {
        let owned = self.read()?.keys.get(access_key_id).is_some_and(|k| {
            k.account == account
                && match user {
                    Some(u) => !k.root && k.user == u,
                    None => k.root,
                }
        });
        if !owned {
            return Err(IamError::NoSuchEntity(format!(
                "The Access Key with id {access_key_id} cannot be found."
            )));
        }
        self.delete_key(access_key_id)?;
        Ok(())
    }

    // ----- roles

    #[allow(clippy::too_many_arguments)]
    pub fn create_role(
        &self,
        account: &str,
        name: &str,
        path: Option<&str>,
        trust_policy: &str,
        description: Option<&str>,
        max_session_duration_s: Option<u32>,
    ) -> IamResult<Role> {
        check_name("roleName", name)?;
        let path = path.unwrap_or("/");
        check_path(path)?;
        let description = description.unwrap_or_default();
        if description.chars().count() > 1000 {
            return Err(IamError::Validation(
                "1 validation error detected: Value at 'description' failed to satisfy \
                 constraint: Member must have length less than or equal to 1000"
                    .into(),
            ));
        }
        let max_session = max_session_duration_s.unwrap_or(3600);
        if !(3600..=43_200).contains(&max_session) {
            return Err(IamError::Validation(format!(
                "1 validation error detected: Value '{max_session}' at 'maxSessionDuration' \
                 failed to satisfy constraint: Member must have value between 3600 and 43200"
            )));
        }
        check_trust_policy(trust_policy)?;
        let mut state = self.write()?;
        check_new(&state.roles, account, name, MAX_ROLES)?;
        let role = Role {
            account: account.to_owned(),
            name: name.to_owned(),
            role_id: random_string("AROA", 17, ID_ALPHABET)?,
            path: path.to_owned(),
            description: description.to_owned(),
            assume_role_policy: trust_policy.to_owned(),
            max_session_duration_s: max_session,
            created_ms: nimbus_types::time::now_ms(),
            policies: BTreeMap::new(),
            attached: Vec::new(),
        };
        self.iam_store.put_role(&role)?;
        insert_new(&mut state.roles, account, role.clone());
        Ok(role)
    }

    pub fn get_role(&self, account: &str, name: &str) -> IamResult<Role> {
        self.read()?
            .roles
            .get(&key(account, name))
            .map(|e| e.value.clone())
            .ok_or_else(|| no_role(name))
    }

    pub fn list_roles(&self, account: &str, path_prefix: &str) -> IamResult<Vec<Role>> {
        Ok(listed(&self.read()?.roles, account, path_prefix))
    }

    /// Deletes a role without policies. Its sessions' credentials stop working at once.
    pub fn delete_role(&self, account: &str, name: &str) -> IamResult<()> {
        let mut state = self.write()?;
        let entry = state
            .roles
            .get(&key(account, name))
            .ok_or_else(|| no_role(name))?;
        if !entry.value.policies.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must delete policies first.".into(),
            ));
        }
        if !entry.value.attached.is_empty() {
            return Err(IamError::DeleteConflict(
                "Cannot delete entity, must detach all policies first.".into(),
            ));
        }
        self.iam_store.delete_role(account, name)?;
        state.roles.remove(&key(account, name));
        Ok(())
    }

    pub fn update_trust_policy(&self, account: &str, name: &str, document: &str) -> IamResult<()> {
        check_trust_policy(document)?;
        self.update::<Role>(account, name, |role| {
            role.assume_role_policy = document.to_owned();
            Ok(())
        })
    }

    pub fn put_role_policy(
        &self,
        account: &str,
        role: &str,
        policy_name: &str,
        document: &str,
    ) -> IamResult<()> {
        self.put_inline::<Role>(account, role, policy_name, document)
    }

    pub fn get_role_policy(
        &self,
        account: &str,
        role: &str,
        policy_name: &str,
    ) -> IamResult<String> {
        self.get_inline::<Role>(account, role, policy_name)
    }

    pub fn delete_role_policy(
        &self,
        account: &str,
        role: &str,
        policy_name: &str,
    ) -> IamResult<()> {
        self.delete_inline::<Role>(account, role, policy_name)
    }

    pub fn list_role_policies(&self, account: &str, role: &str) -> IamResult<Vec<String>> {
        self.list_inline::<Role>(account, role)
    }

    pub fn attach_role_policy(&self, account: &str, role: &str, policy_arn: &str) -> IamResult<()> {
        if managed::document(policy_arn).is_none() {
            return Err(IamError::NoSuchEntity(format!(
                "Policy {policy_arn} does not exist or is not attachable."
            )));
        }
        self.update::<Role>(account, role, |r| {
            if r.attached.iter().any(|a| a == policy_arn) {
                return Ok(());
            }
            if r.attached.len() >= MAX_ATTACHED_PER_ROLE {
                return Err(IamError::LimitExceeded(format!(
                    "Cannot exceed quota for PoliciesPerRole: {MAX_ATTACHED_PER_ROLE}"
                )));
            }
            r.attached.push(policy_arn.to_owned());
            Ok(())
        })
    }

    pub fn detach_role_policy(&self, account: &str, role: &str, policy_arn: &str) -> IamResult<()> {
        self.update::<Role>(account, role, |r| {
            let before = r.attached.len();
            r.attached.retain(|a| a != policy_arn);
            if r.attached.len() == before {
                return Err(IamError::NoSuchEntity(format!(
                    "Policy {policy_arn} was not found."
                )));
            }
            Ok(())
        })
    }

    /// Checks that `role_arn` names a role of `account` that Lambda may assume, as
    /// CreateFunction and UpdateFunctionConfiguration require. The error is the message
    /// Lambda gives.
    pub fn check_execution_role(&self, account: &str, role_arn: &str) -> Result<(), String> {
        const CANNOT: &str = "The role defined for the function cannot be assumed by Lambda.";
        let arn = RoleArn::parse(role_arn).ok_or_else(|| CANNOT.to_owned())?;
        if arn.account != account {
            return Err(CANNOT.to_owned());
        }
        let state = self.state.read().map_err(|_| CANNOT.to_owned())?;
        let role = state
            .roles
            .get(&key(account, &arn.name))
            .filter(|r| r.value.path == arn.path)
            .ok_or_else(|| CANNOT.to_owned())?;
        let trusted = Policy::parse(&role.value.assume_role_policy, Kind::Trust)
            .is_ok_and(|p| p.trusts_service("lambda.amazonaws.com", "sts:AssumeRole"));
        if trusted {
            Ok(())
        } else {
            Err(CANNOT.to_owned())
        }
    }

    /// Credentials for a session of `role_arn`'s role on behalf of `function`, good for
    /// [`SESSION_LIFETIME_S`]. `None` if the role does not exist (any more).
    pub fn issue_session(
        &self,
        account: &str,
        role_arn: &str,
        function: &str,
    ) -> Option<SessionCredentials> {
        let arn = RoleArn::parse(role_arn)?;
        if arn.account != account {
            return None;
        }
        let role_id = {
            let state = self.state.read().ok()?;
            let role = state.roles.get(&key(account, &arn.name))?;
            role.value.role_id.clone()
        };
        let claims = session::Claims {
            account: account.to_owned(),
            role: arn.name,
            role_id,
            function: function.to_owned(),
            access_key_id: random_string("ASIA", 16, ID_ALPHABET).ok()?,
            expires_s: nimbus_types::time::now_ms() / 1000 + SESSION_LIFETIME_S,
        };
        Some(self.sessions.mint(&claims))
    }
}

fn check_trust_policy(document: &str) -> IamResult<()> {
    parse_policy(document, Kind::Trust)?;
    if quota_size(document) > TRUST_POLICY_QUOTA {
        return Err(IamError::LimitExceeded(format!(
            "Cannot exceed quota for ACLSizePerRole: {TRUST_POLICY_QUOTA}"
        )));
    }
    Ok(())
}

impl CredentialIssuer for Identity {
    fn issue(&self, function: &nimbus_types::FunctionConfig) -> Option<SessionCredentials> {
        self.issue_session(&function.account, &function.role, &function.name)
    }
}
