//! Administrators' operations on users and groups, and what sign-up shares with them: making
//! a user from a request, the one-time codes a user is sent.

use std::collections::{BTreeMap, BTreeSet};

use nimbus_userpools::model::{Code, CodeKind, Group, Pool, Status, User};
use nimbus_userpools::{Kind, password};
use serde_json::{Value, json};

use crate::pools::{page, pool_of};
use crate::render;
use crate::{
    Cognito, CognitoError, Result, attribute_list, boolean, integer, invalid, required, string,
    string_map, strings,
};

pub(crate) fn now_ms() -> i64 {
    nimbus_types::time::now_ms()
}

/// Checks a username as given in a request (Cognito's pattern: no white space, 1–128).
pub(crate) fn check_username(name: &str) -> Result<()> {
    if name.is_empty()
        || name.chars().count() > 128
        || name.chars().any(|c| c.is_whitespace() || c.is_control())
    {
        return Err(invalid(
            "1 validation error detected: Value at 'username' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\p{L}\\p{M}\\p{S}\\p{N}\\p{P}]+",
        ));
    }
    Ok(())
}

/// A new user from a request: for a pool whose users sign in with e-mail or phone, the given
/// name must be one (it becomes that attribute) and the username is the user's `sub`.
pub(crate) fn make_user(
    pool: &Pool,
    given: &str,
    attributes: &[(String, String)],
    admin: bool,
    status: Status,
    password: Option<String>,
) -> Result<User> {
    check_username(given)?;
    render::check_attributes(pool, attributes, admin, true)?;
    let sub = uuid::Uuid::new_v4().to_string();
    let mut attrs: BTreeMap<String, String> = attributes.iter().cloned().collect();
    let username = if pool.uses_username_attributes() {
        let attr = if render::valid_email(given)
            && pool
                .settings
                .username_attributes
                .iter()
                .any(|a| a == "email")
        {
            "email"
        } else if render::valid_phone(given)
            && pool
                .settings
                .username_attributes
                .iter()
                .any(|a| a == "phone_number")
        {
            "phone_number"
        } else {
            return Err(invalid(
                if pool
                    .settings
                    .username_attributes
                    .iter()
                    .any(|a| a == "email")
                {
                    "Username should be an email."
                } else {
                    "Username should be a phone number."
                },
            ));
        };
        attrs.insert(attr.to_owned(), given.to_owned());
        sub.clone()
    } else {
        // A name shaped like an alias would shadow the user whose alias it is.
        let aliases = &pool.settings.alias_attributes;
        if aliases.iter().any(|a| a == "email") && render::valid_email(given) {
            return Err(invalid(
                "Username cannot be of email format, since user pool is configured for email alias.",
            ));
        }
        if aliases.iter().any(|a| a == "phone_number") && render::valid_phone(given) {
            return Err(invalid(
                "Username cannot be of phone number format, since user pool is configured for phone number alias.",
            ));
        }
        if uuid::Uuid::parse_str(given).is_ok() && given.len() == 36 {
            return Err(invalid(
                "Username cannot be of UUID format, as it is reserved for sub.",
            ));
        }
        given.to_owned()
    };
    for req in &pool.settings.required_attributes {
        if !attrs.contains_key(req) {
            return Err(invalid(format!(
                "Attributes did not conform to the schema: {req}: The attribute {req} is required"
            )));
        }
    }
    attrs.insert("sub".to_owned(), sub);
    let now = now_ms();
    Ok(User {
        username,
        attributes: attrs,
        password,
        srp: None,
        status,
        enabled: true,
        created_ms: now,
        modified_ms: now,
        groups: BTreeSet::new(),
        signup_code: None,
        reset_code: None,
        attribute_codes: BTreeMap::new(),
        temporary_until_ms: None,
        issued_password: None,
    })
}

/// A password's stored forms: its Argon2id hash and its SRP verifier (which depends on the
/// username).
pub(crate) async fn secrets(
    pool_id: &str,
    username: &str,
    password: &str,
) -> Result<(String, nimbus_userpools::srp::Verifier)> {
    let hash = password::hash(password).await?;
    let (p, u, pw) = (pool_id.to_owned(), username.to_owned(), password.to_owned());
    let verifier =
        tokio::task::spawn_blocking(move || nimbus_userpools::srp::verifier(&p, &u, &pw))
            .await
            .map_err(|e| nimbus_userpools::Error::storage(e.to_string()))?;
    Ok((hash, verifier))
}

/// Which attribute a user's codes go to: an auto-verified one it has (e-mail first).
pub(crate) fn delivery_attribute(pool: &Pool, user: &User) -> Option<&'static str> {
    ["email", "phone_number"].into_iter().find(|a| {
        pool.settings
            .auto_verified_attributes
            .iter()
            .any(|v| v == a)
            && user.attribute(a).is_some()
    })
}

/// Checks `given` against a stored code; a miss is counted, and a code missed five times is
/// spent. Returns whether it matched; `Err` for an expired or spent code.
pub(crate) fn check_code(slot: &mut Option<Code>, given: &str) -> Result<bool> {
    let Some(code) = slot.as_mut() else {
        return Err(CognitoError::new(
            "ExpiredCodeException",
            "Invalid code provided, please request a code again.",
        ));
    };
    if code.expires_ms <= now_ms() || code.misses >= nimbus_userpools::model::MAX_CODE_GUESSES {
        *slot = None;
        return Err(CognitoError::new(
            "ExpiredCodeException",
            "Invalid code provided, please request a code again.",
        ));
    }
    let same = nimbus_userpools::same_bytes(code.code.as_bytes(), given.trim().as_bytes());
    if !same {
        code.misses += 1;
    }
    Ok(same)
}

pub(crate) fn mismatch() -> CognitoError {
    CognitoError::new(
        "CodeMismatchException",
        "Invalid verification code provided, please try again.",
    )
}

/// The user named by `Username` in an administrator's request.
fn user_of(cognito: &Cognito, pool: &Pool, input: &Value) -> Result<User> {
    let name = required(input, "Username")?;
    cognito
        .pools
        .user(pool, name)?
        .ok_or_else(|| CognitoError::new("UserNotFoundException", "User does not exist."))
}

// ---- users ----

pub(crate) async fn create(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let given = required(input, "Username")?;
    let attributes = attribute_list(input, "UserAttributes")?;
    let action = string(input, "MessageAction")?;
    if let Some(a) = action
        && a != "RESEND"
        && a != "SUPPRESS"
    {
        return Err(invalid(format!(
            "MessageAction must be RESEND or SUPPRESS, not {a}"
        )));
    }
    let (temporary, made_up) = match string(input, "TemporaryPassword")? {
        Some(p) => {
            password::check(&pool.settings.password_policy, p)?;
            (p.to_owned(), false)
        }
        None => (password::temporary(&pool.settings.password_policy), true),
    };
    let issued = made_up.then(|| temporary.clone());
    let days = i64::from(
        pool.settings
            .password_policy
            .temporary_password_validity_days
            .max(1),
    );
    let until = now_ms() + days * 86_400_000;
    if action == Some("RESEND") {
        let existing = user_of(cognito, &pool, input)?;
        if existing.status != Status::ForceChangePassword {
            return Err(CognitoError::new(
                "UnsupportedUserStateException",
                format!(
                    "Resend not possible. {} status is not FORCE_CHANGE_PASSWORD",
                    existing.username
                ),
            ));
        }
        let (hash, srp) = secrets(&pool.id, &existing.username, &temporary).await?;
        let ((), user) = cognito
            .pools
            .update_user(&pool, &existing.username, move |u| {
                u.password = Some(hash);
                u.srp = Some(srp);
                u.temporary_until_ms = Some(until);
                u.issued_password = issued;
                Ok(())
            })
            .await?;
        return Ok(json!({ "User": render::user(&user, "Attributes", None) }));
    }
    let mut user = make_user(
        &pool,
        given,
        &attributes,
        true,
        Status::ForceChangePassword,
        None,
    )?;
    let (hash, srp) = secrets(&pool.id, &user.username, &temporary).await?;
    user.password = Some(hash);
    user.srp = Some(srp);
    user.temporary_until_ms = Some(until);
    user.issued_password = issued;
    cognito
        .triggers
        .pre_sign_up(&pool, None, &user, "PreSignUp_AdminCreateUser", input)
        .await?;
    let user = cognito.pools.create_user(&pool, user).await?;
    Ok(json!({ "User": render::user(&user, "Attributes", None) }))
}

pub(crate) fn get(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let mut out = render::user(&user, "UserAttributes", None);
    out["MFAOptions"] = json!([]);
    out["UserMFASettingList"] = json!([]);
    Ok(out)
}

pub(crate) async fn delete(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    cognito.pools.delete_user(&pool, &user.username).await?;
    Ok(json!({}))
}

/// Runs the PostConfirmation trigger for a user just confirmed.
pub(crate) async fn post_confirmation(
    cognito: &Cognito,
    pool: &Pool,
    client_id: Option<&str>,
    user: &User,
    source: &str,
    metadata: BTreeMap<String, String>,
) -> Result<()> {
    let extra = json!({ "clientMetadata": metadata });
    cognito
        .triggers
        .tell(pool, client_id, user, "PostConfirmation", source, extra)
        .await
}

pub(crate) async fn confirm(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let auto_email = pool
        .settings
        .auto_verified_attributes
        .iter()
        .any(|a| a == "email");
    let ((), user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            if u.status != Status::Unconfirmed {
                return Err(nimbus_userpools::Error::new(
                    Kind::NotAuthorized,
                    format!(
                        "User cannot be confirmed. Current status is {}",
                        u.status.as_str()
                    ),
                ));
            }
            u.status = Status::Confirmed;
            u.signup_code = None;
            if auto_email && u.attributes.contains_key("email") {
                u.attributes.insert("email_verified".into(), "true".into());
            }
            Ok(())
        })
        .await?;
    post_confirmation(
        cognito,
        &pool,
        None,
        &user,
        "PostConfirmation_ConfirmSignUp",
        string_map(input, "ClientMetadata")?,
    )
    .await?;
    Ok(json!({}))
}

pub(crate) async fn set_password(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let new = required(input, "Password")?;
    password::check(&pool.settings.password_policy, new)?;
    let permanent = boolean(input, "Permanent")?.unwrap_or(false);
    let (hash, srp) = secrets(&pool.id, &user.username, new).await?;
    let days = i64::from(
        pool.settings
            .password_policy
            .temporary_password_validity_days
            .max(1),
    );
    cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            u.password = Some(hash);
            u.srp = Some(srp);
            u.issued_password = None;
            u.reset_code = None;
            if permanent {
                u.status = Status::Confirmed;
                u.temporary_until_ms = None;
            } else {
                u.status = Status::ForceChangePassword;
                u.temporary_until_ms = Some(now_ms() + days * 86_400_000);
            }
            Ok(())
        })
        .await?;
    Ok(json!({}))
}

/// Applies attribute changes to a user: a changed e-mail or phone number is unverified (unless
/// the request verifies it too) and, if the pool verifies it, gets a code. Returns the
/// attributes that were sent a code.
pub(crate) fn apply_attributes(
    pool: &Pool,
    u: &mut User,
    changes: &[(String, String)],
    validity_ms: i64,
) -> Vec<&'static str> {
    let mut coded = Vec::new();
    for (name, value) in changes {
        let changed = u.attributes.get(name) != Some(value);
        u.attributes.insert(name.clone(), value.clone());
        if changed {
            // A code sent for the old value proves nothing about the new one.
            u.attribute_codes.remove(name);
        }
        for attr in ["email", "phone_number"] {
            let flag = format!("{attr}_verified");
            if name == attr && changed && !changes.iter().any(|(n, _)| *n == flag) {
                u.attributes.insert(flag, "false".into());
                if pool
                    .settings
                    .auto_verified_attributes
                    .iter()
                    .any(|a| a == attr)
                {
                    let code = code_for(pool, u, CodeKind::Attribute, validity_ms);
                    u.attribute_codes.insert(attr.to_owned(), code);
                    coded.push(attr);
                }
            }
        }
    }
    u.attributes
        .insert("updated_at".into(), (now_ms() / 1000).to_string());
    coded
}

pub(crate) async fn update_attributes(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let changes = attribute_list(input, "UserAttributes")?;
    render::check_attributes(&pool, &changes, true, false)?;
    let owned = pool.clone();
    let validity = cognito.code_validity_ms;
    cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            apply_attributes(&owned, u, &changes, validity);
            Ok(())
        })
        .await?;
    Ok(json!({}))
}

/// A fresh six-digit code, logged for the operator (nimbus sends no mail or text messages).
pub(crate) fn code_for(pool: &Pool, user: &User, kind: CodeKind, validity_ms: i64) -> Code {
    let code = nimbus_userpools::random_string(b"0123456789", 6);
    let purpose = match kind {
        CodeKind::SignUp => "sign-up confirmation",
        CodeKind::Reset => "password reset",
        CodeKind::Attribute => "attribute verification",
    };
    tracing::info!(
        user_pool = %pool.id,
        username = %user.username,
        purpose,
        code = %code,
        "a code for a user (read it here or with GET /nimbus/v1/user-pools/POOL/users/USER/codes)"
    );
    Code {
        code,
        expires_ms: now_ms() + validity_ms,
        misses: 0,
    }
}

pub(crate) async fn delete_attributes(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let names = strings(input, "UserAttributeNames")?.unwrap_or_default();
    for n in &names {
        if n == "sub" || pool.settings.required_attributes.contains(n) {
            return Err(invalid(format!("Cannot delete the attribute {n}")));
        }
    }
    cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            for n in &names {
                u.attributes.remove(n);
            }
            Ok(())
        })
        .await?;
    Ok(json!({}))
}

pub(crate) async fn enable(
    cognito: &Cognito,
    account: &str,
    input: &Value,
    enabled: bool,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            u.enabled = enabled;
            Ok(())
        })
        .await?;
    Ok(json!({}))
}

pub(crate) async fn reset_password(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let validity = cognito.code_validity_ms;
    let owned = pool.clone();
    cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            u.status = Status::ResetRequired;
            u.reset_code = Some(code_for(&owned, u, CodeKind::Reset, validity));
            Ok(())
        })
        .await?;
    Ok(json!({}))
}

pub(crate) async fn sign_out(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    cognito.pools.end_sessions(&pool, &user.username).await?;
    Ok(json!({}))
}

/// One condition of ListUsers' `Filter`: `attribute = "value"` or `attribute ^= "prefix"`.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct Filter {
    attribute: String,
    prefix: bool,
    value: String,
}

const FILTERABLE: [&str; 10] = [
    "username",
    "email",
    "phone_number",
    "name",
    "given_name",
    "family_name",
    "preferred_username",
    "cognito:user_status",
    "status",
    "sub",
];

pub(crate) fn parse_filter(text: &str) -> Result<Option<Filter>> {
    let text = text.trim();
    if text.is_empty() {
        return Ok(None);
    }
    let bad = || invalid("Error while parsing filter.");
    let (attribute, rest, prefix) = if let Some((a, r)) = text.split_once("^=") {
        (a, r, true)
    } else if let Some((a, r)) = text.split_once('=') {
        (a, r, false)
    } else {
        return Err(bad());
    };
    let attribute = attribute.trim().trim_matches('"');
    if !FILTERABLE.contains(&attribute) {
        return Err(invalid(format!(
            "Invalid search attribute: {attribute}. Searchable attributes are {}",
            FILTERABLE.join(", ")
        )));
    }
    let rest = rest.trim();
    let inner = rest
        .strip_prefix('"')
        .and_then(|r| r.strip_suffix('"'))
        .ok_or_else(bad)?;
    let mut value = String::new();
    let mut chars = inner.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => value.push(chars.next().ok_or_else(bad)?),
            '"' => return Err(bad()),
            c => value.push(c),
        }
    }
    Ok(Some(Filter {
        attribute: attribute.to_owned(),
        prefix,
        value,
    }))
}

impl Filter {
    pub(crate) fn accepts(&self, u: &User) -> bool {
        let value = match self.attribute.as_str() {
            "username" => Some(u.username.as_str()),
            "cognito:user_status" => Some(u.status.as_str()),
            "status" => Some(if u.enabled { "Enabled" } else { "Disabled" }),
            other => u.attribute(other),
        };
        value.is_some_and(|v| {
            if self.prefix {
                v.starts_with(&self.value)
            } else {
                v == self.value
            }
        })
    }
}

pub(crate) fn list(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let filter = parse_filter(string(input, "Filter")?.unwrap_or(""))?;
    let limit = match integer(input, "Limit")? {
        None => 60,
        Some(n) if (0..=60).contains(&n) => n.max(1) as usize,
        Some(_) => {
            return Err(invalid(
                "1 validation error detected: Value at 'limit' failed to satisfy constraint: Member must have value less than or equal to 60",
            ));
        }
    };
    let only = strings(input, "AttributesToGet")?;
    let after = string(input, "PaginationToken")?;
    let (users, next) = cognito.pools.list_users(&pool, after, limit, |u| {
        filter.as_ref().is_none_or(|f| f.accepts(u))
    })?;
    let shown: Vec<Value> = users
        .iter()
        .map(|u| render::user(u, "Attributes", only.as_deref()))
        .collect();
    let mut out = json!({ "Users": shown });
    if let Some(n) = next {
        out["PaginationToken"] = json!(n);
    }
    Ok(out)
}

// ---- groups ----

fn group_name(input: &Value) -> Result<&str> {
    let name = required(input, "GroupName")?;
    if name.chars().count() > 128 || name.chars().any(|c| c.is_whitespace() || c.is_control()) {
        return Err(invalid(
            "1 validation error detected: Value at 'groupName' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\p{L}\\p{M}\\p{S}\\p{N}\\p{P}]+",
        ));
    }
    Ok(name)
}

fn group_fields(input: &Value, g: &mut Group) -> Result<()> {
    if let Some(d) = string(input, "Description")? {
        if d.chars().count() > 2048 {
            return Err(invalid("Description must be at most 2048 characters"));
        }
        g.description = Some(d.to_owned());
    }
    if let Some(p) = integer(input, "Precedence")? {
        g.precedence = Some(u32::try_from(p).map_err(|_| invalid("Precedence must be 0 or more"))?);
    }
    if let Some(r) = string(input, "RoleArn")? {
        if !r.starts_with("arn:") || !r.contains(":role/") {
            return Err(invalid(format!("RoleArn {r} is not a role ARN")));
        }
        g.role_arn = Some(r.to_owned());
    }
    Ok(())
}

pub(crate) async fn create_group(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let now = now_ms();
    let mut g = Group {
        name: group_name(input)?.to_owned(),
        description: None,
        precedence: None,
        role_arn: None,
        created_ms: now,
        modified_ms: now,
    };
    group_fields(input, &mut g)?;
    let g = cognito.pools.put_group(&pool.id, g, true).await?;
    Ok(json!({ "Group": render::group(&pool.id, &g) }))
}

fn group_of(cognito: &Cognito, pool: &Pool, input: &Value) -> Result<Group> {
    let name = group_name(input)?;
    cognito
        .pools
        .group(&pool.id, name)?
        .ok_or_else(|| CognitoError::new("ResourceNotFoundException", "Group not found."))
}

pub(crate) fn get_group(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let g = group_of(cognito, &pool, input)?;
    Ok(json!({ "Group": render::group(&pool.id, &g) }))
}

pub(crate) async fn update_group(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let mut g = group_of(cognito, &pool, input)?;
    group_fields(input, &mut g)?;
    g.modified_ms = now_ms();
    let g = cognito.pools.put_group(&pool.id, g, false).await?;
    Ok(json!({ "Group": render::group(&pool.id, &g) }))
}

pub(crate) fn list_groups(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let (groups, next) = page(
        cognito.pools.groups(&pool.id)?,
        |g| g.name.clone(),
        input,
        "Limit",
        false,
    )?;
    let mut out = json!({
        "Groups": groups.iter().map(|g| render::group(&pool.id, g)).collect::<Vec<_>>()
    });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

pub(crate) async fn delete_group(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    cognito
        .pools
        .delete_group(&pool, group_name(input)?)
        .await?;
    Ok(json!({}))
}

pub(crate) async fn membership(
    cognito: &Cognito,
    account: &str,
    input: &Value,
    add: bool,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let group = group_name(input)?;
    cognito
        .pools
        .membership(&pool, &user.username, group, add)
        .await?;
    Ok(json!({}))
}

pub(crate) fn groups_for_user(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let user = user_of(cognito, &pool, input)?;
    let mut groups = Vec::new();
    for name in &user.groups {
        if let Some(g) = cognito.pools.group(&pool.id, name)? {
            groups.push(g);
        }
    }
    let (groups, next) = page(groups, |g| g.name.clone(), input, "Limit", false)?;
    let mut out = json!({
        "Groups": groups.iter().map(|g| render::group(&pool.id, g)).collect::<Vec<_>>()
    });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

pub(crate) fn users_in_group(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let g = group_of(cognito, &pool, input)?;
    let limit = integer(input, "Limit")?.unwrap_or(60).clamp(1, 60) as usize;
    let (users, next) =
        cognito
            .pools
            .list_users(&pool, string(input, "NextToken")?, limit, |u| {
                u.groups.contains(&g.name)
            })?;
    let mut out = json!({
        "Users": users.iter().map(|u| render::user(u, "Attributes", None)).collect::<Vec<_>>()
    });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

/// Codes a user has outstanding, for the operator: `GET
/// /nimbus/v1/user-pools/{pool}/users/{username}/codes`.
pub(crate) fn codes(user: &User) -> Value {
    let show = |c: &Option<Code>| {
        c.as_ref()
            .map(|c| json!({ "code": c.code, "expires": render::time(c.expires_ms) }))
    };
    let attributes: serde_json::Map<String, Value> = user
        .attribute_codes
        .iter()
        .map(|(k, c)| {
            (
                k.clone(),
                json!({ "code": c.code, "expires": render::time(c.expires_ms) }),
            )
        })
        .collect();
    json!({
        "username": user.username,
        "status": user.status.as_str(),
        "signUp": show(&user.signup_code),
        "passwordReset": show(&user.reset_code),
        "temporaryPassword": user.issued_password,
        "attributes": attributes,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn filters_parse_as_cognito_writes_them() {
        let f = parse_filter("email = \"a@example.com\"").unwrap().unwrap();
        assert_eq!(
            f,
            Filter {
                attribute: "email".into(),
                prefix: false,
                value: "a@example.com".into()
            }
        );
        let f = parse_filter("\"family_name\" ^= \"Sm\"").unwrap().unwrap();
        assert!(f.prefix && f.value == "Sm");
        let f = parse_filter(r#"name = "say \"hi\"""#).unwrap().unwrap();
        assert_eq!(f.value, "say \"hi\"");
        assert!(parse_filter("").unwrap().is_none());
        for bad in ["email", "email = a", "custom:x = \"1\"", "email = \"a\"b\""] {
            assert!(parse_filter(bad).is_err(), "{bad}");
        }
    }
}
