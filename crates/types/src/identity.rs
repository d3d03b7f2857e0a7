//! Who calls: access keys and the accounts they belong to.

use serde::{Deserialize, Serialize};

/// An access key: the id a request names in its credential scope, and the secret its
/// signature is made with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AccessKey {
    pub access_key_id: String,
    pub secret_access_key: String,
    /// The 12-digit account the key acts in.
    pub account: String,
    /// The user the key belongs to (`admin` for an account's administrator).
    pub user: String,
    /// Whether the key is the account's own (its root): allowed everything in the account.
    /// Keys stored before IAM users existed were all administrator keys.
    #[serde(default = "yes")]
    pub root: bool,
    pub created_ms: i64,
}

/// An account: a 12-digit id, in every ARN of what it owns, and a name for people.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Account {
    pub id: String,
    pub name: String,
    pub created_ms: i64,
}

/// Whether `name` can name an account: 1 to 50 of `[A-Za-z0-9_-]`.
pub fn valid_account_name(name: &str) -> bool {
    (1..=50).contains(&name.len())
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Whether `id` looks like an access key id: 16 to 128 of `[A-Z0-9]`.
pub fn valid_access_key_id(id: &str) -> bool {
    (16..=128).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

fn yes() -> bool {
    true
}

/// How long a sandbox's role credentials are good for. On-demand sandboxes are replaced
/// before that.
pub const SESSION_LIFETIME_S: i64 = 6 * 3600;

/// Temporary credentials for a role's session: what a sandbox gets for its function's role.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SessionCredentials {
    /// `ASIA…`
    pub access_key_id: String,
    pub secret_access_key: String,
    pub session_token: String,
    /// When they stop being accepted, in Unix milliseconds.
    pub expiration_ms: i64,
}

/// Issues the credentials of a function's execution role for a new sandbox.
pub trait CredentialIssuer: Send + Sync {
    /// `None` when the function's role cannot be assumed any more (it was deleted); the
    /// sandbox then starts without credentials and the SDKs find none.
    fn issue(&self, function: &crate::FunctionConfig) -> Option<SessionCredentials>;
}
