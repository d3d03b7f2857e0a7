//! What a user pool holds: the pool's settings, its app clients, its users and groups, as
//! stored (JSON in redb) and as the API renders them.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

/// A pool's password rules (Cognito's `PasswordPolicy`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct PasswordPolicy {
    pub minimum_length: u32,
    pub require_uppercase: bool,
    pub require_lowercase: bool,
    pub require_numbers: bool,
    pub require_symbols: bool,
    pub temporary_password_validity_days: u32,
}

impl Default for PasswordPolicy {
    fn default() -> Self {
        Self {
            minimum_length: 8,
            require_uppercase: true,
            require_lowercase: true,
            require_numbers: true,
            require_symbols: true,
            temporary_password_validity_days: 7,
        }
    }
}

/// The Lambda triggers nimbus runs, by Cognito's `LambdaConfig` member name.
pub const TRIGGERS: [&str; 5] = [
    "PreSignUp",
    "PostConfirmation",
    "PreAuthentication",
    "PostAuthentication",
    "PreTokenGeneration",
];

/// A custom attribute of a pool's schema (`custom:NAME`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "PascalCase")]
pub struct CustomAttribute {
    /// Without the `custom:` prefix.
    pub name: String,
    /// `String`, `Number`, `DateTime` or `Boolean`.
    pub data_type: String,
    pub mutable: bool,
    pub min_length: Option<u64>,
    pub max_length: Option<u64>,
    pub min_value: Option<i64>,
    pub max_value: Option<i64>,
}

/// The settings of a pool that its creator chooses.
#[derive(Debug, Clone, Serialize, Deserialize, Default)]
#[serde(rename_all = "PascalCase", default)]
pub struct PoolSettings {
    pub password_policy: PasswordPolicy,
    /// Trigger name → function ARN.
    pub lambda_config: BTreeMap<String, String>,
    /// `email` and/or `phone_number`: users sign in with these instead of a username.
    pub username_attributes: Vec<String>,
    /// `email`, `phone_number`, `preferred_username`: also accepted at sign-in once verified.
    pub alias_attributes: Vec<String>,
    pub auto_verified_attributes: Vec<String>,
    pub custom_attributes: Vec<CustomAttribute>,
    /// Standard attributes every user must have.
    pub required_attributes: Vec<String>,
    pub case_sensitive: bool,
    pub allow_admin_create_user_only: bool,
    pub deletion_protection: bool,
    pub tags: BTreeMap<String, String>,
}

/// A pool's RSA signing key.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SigningKey {
    pub kid: String,
    /// PKCS#8 DER of the private key, base64.
    pub pkcs8: String,
    /// The public modulus and exponent, base64url (as a JWK has them).
    pub n: String,
    pub e: String,
    pub created_ms: i64,
    /// When a newer key replaced it; it stays published until the tokens it signed expire.
    pub retired_ms: Option<i64>,
}

/// A user pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Pool {
    pub id: String,
    pub account: String,
    pub name: String,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub settings: PoolSettings,
    /// Newest last; the last is the one that signs.
    pub keys: Vec<SigningKey>,
}

impl Pool {
    /// The key that signs new tokens.
    pub fn active_key(&self) -> Option<&SigningKey> {
        self.keys.iter().rev().find(|k| k.retired_ms.is_none())
    }

    /// Whether users sign in with an e-mail address or phone number as their username.
    pub fn uses_username_attributes(&self) -> bool {
        !self.settings.username_attributes.is_empty()
    }
}

/// How long a client's tokens last, in seconds.
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
pub struct Validity {
    pub access_s: u64,
    pub id_s: u64,
    pub refresh_s: u64,
}

impl Default for Validity {
    fn default() -> Self {
        Self {
            access_s: 3600,
            id_s: 3600,
            refresh_s: 30 * 86_400,
        }
    }
}

/// The flows a client allows when it names none.
pub const DEFAULT_FLOWS: [&str; 3] = [
    "ALLOW_REFRESH_TOKEN_AUTH",
    "ALLOW_USER_SRP_AUTH",
    "ALLOW_CUSTOM_AUTH",
];

/// An app client of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Client {
    pub id: String,
    pub pool_id: String,
    pub name: String,
    pub secret: Option<String>,
    pub explicit_auth_flows: Vec<String>,
    pub validity: Validity,
    /// The units the client was configured with, echoed back (`TokenValidityUnits`).
    pub units: BTreeMap<String, String>,
    /// `ENABLED` (the default here): no error tells whether a user exists.
    pub prevent_user_existence_errors: String,
    pub enable_token_revocation: bool,
    pub read_attributes: Vec<String>,
    pub write_attributes: Vec<String>,
    pub created_ms: i64,
    pub modified_ms: i64,
}

impl Client {
    /// Whether the client allows `flow` (`ALLOW_…`).
    pub fn allows(&self, flow: &str) -> bool {
        self.explicit_auth_flows.iter().any(|f| f == flow)
    }

    /// Whether errors must not reveal whether a user exists.
    pub fn hides_users(&self) -> bool {
        self.prevent_user_existence_errors != "LEGACY"
    }
}

/// A user's state (Cognito's `UserStatus`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Unconfirmed,
    Confirmed,
    ForceChangePassword,
    ResetRequired,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Unconfirmed => "UNCONFIRMED",
            Self::Confirmed => "CONFIRMED",
            Self::ForceChangePassword => "FORCE_CHANGE_PASSWORD",
            Self::ResetRequired => "RESET_REQUIRED",
        }
    }
}

/// A one-time code sent to a user (sign-up confirmation, password reset, attribute check).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Code {
    pub code: String,
    pub expires_ms: i64,
    /// Wrong guesses so far; a code is spent after [`MAX_CODE_GUESSES`].
    #[serde(default)]
    pub misses: u32,
}

/// Wrong guesses after which a code no longer works.
pub const MAX_CODE_GUESSES: u32 = 5;

/// What the purpose of a code is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CodeKind {
    SignUp,
    Reset,
    /// Verifying an attribute (`email`, `phone_number`).
    Attribute,
}

/// A user of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct User {
    pub username: String,
    /// Every attribute, `sub` included.
    pub attributes: BTreeMap<String, String>,
    /// The password's Argon2id hash, as a PHC string.
    pub password: Option<String>,
    /// The password's SRP salt and verifier, for `USER_SRP_AUTH`.
    #[serde(default)]
    pub srp: Option<crate::srp::Verifier>,
    pub status: Status,
    pub enabled: bool,
    pub created_ms: i64,
    pub modified_ms: i64,
    pub groups: BTreeSet<String>,
    pub signup_code: Option<Code>,
    pub reset_code: Option<Code>,
    #[serde(default)]
    pub attribute_codes: BTreeMap<String, Code>,
    /// When a temporary password (FORCE_CHANGE_PASSWORD) stops working.
    pub temporary_until_ms: Option<i64>,
    /// A temporary password nimbus made up, kept (like a code) for the operator to hand over
    /// until the user replaces it: nimbus sends no mail, and never logs a password.
    #[serde(default)]
    pub issued_password: Option<String>,
}

impl User {
    pub fn sub(&self) -> &str {
        self.attributes.get("sub").map_or("", String::as_str)
    }

    pub fn attribute(&self, name: &str) -> Option<&str> {
        self.attributes.get(name).map(String::as_str)
    }

    /// Whether `attribute` (`email`, `phone_number`) is present and verified.
    pub fn verified(&self, attribute: &str) -> bool {
        self.attributes.contains_key(attribute)
            && self
                .attributes
                .get(&format!("{attribute}_verified"))
                .is_some_and(|v| v == "true")
    }
}

/// A group of a pool.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Group {
    pub name: String,
    pub description: Option<String>,
    pub precedence: Option<u32>,
    pub role_arn: Option<String>,
    pub created_ms: i64,
    pub modified_ms: i64,
}

/// A refresh token's record, found by its `origin_jti`.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Session {
    pub pool_id: String,
    pub client_id: String,
    pub username: String,
    /// The user's `sub`: a later user of the same name is another user.
    #[serde(default)]
    pub sub: String,
    /// SHA-256 of the token's secret part, hex.
    pub hash: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
    /// When the user signed in (`auth_time`), in seconds.
    pub auth_time: i64,
}
