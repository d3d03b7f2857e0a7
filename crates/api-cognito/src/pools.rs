//! Pools and app clients: Create/Describe/List/Update/Delete of each.

use std::collections::BTreeMap;

use nimbus_userpools::model::{
    Client, CustomAttribute, DEFAULT_FLOWS, PasswordPolicy, Pool, PoolSettings, TRIGGERS, Validity,
};
use nimbus_userpools::random_string;
use serde_json::{Value, json};

use crate::render::{self, STANDARD};
use crate::{
    Cognito, CognitoError, Result, boolean, field, integer, invalid, required, string, strings,
};

/// The pool named by `UserPoolId`, in the caller's account.
pub(crate) fn pool_of(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<std::sync::Arc<Pool>> {
    let id = required(input, "UserPoolId")?;
    if id.len() > 55 || !id.contains('_') {
        return Err(invalid(format!(
            "1 validation error detected: Value '{id}' at 'userPoolId' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w-]+_[0-9a-zA-Z]+"
        )));
    }
    Ok(cognito.pools.pool_of(account, id)?)
}

fn check_name(name: &str, what: &str) -> Result<()> {
    let ok = !name.is_empty()
        && name.chars().count() <= 128
        && name
            .chars()
            .all(|c| c.is_alphanumeric() || c.is_whitespace() || "_+=,.@-".contains(c));
    if ok {
        Ok(())
    } else {
        Err(invalid(format!(
            "1 validation error detected: Value '{name}' at '{what}' failed to satisfy constraint: Member must satisfy regular expression pattern: [\\w\\s+=,.@-]+ and have length between 1 and 128"
        )))
    }
}

fn password_policy(input: &Value) -> Result<PasswordPolicy> {
    let mut p = PasswordPolicy::default();
    let Some(policy) = field(input, "Policies").and_then(|v| field(v, "PasswordPolicy")) else {
        return Ok(p);
    };
    if let Some(n) = integer(policy, "MinimumLength")? {
        if !(6..=99).contains(&n) {
            return Err(invalid(
                "1 validation error detected: Value at 'policies.passwordPolicy.minimumLength' failed to satisfy constraint: Member must have value between 6 and 99",
            ));
        }
        p.minimum_length = n as u32;
    }
    for (name, slot) in [
        ("RequireUppercase", &mut p.require_uppercase),
        ("RequireLowercase", &mut p.require_lowercase),
        ("RequireNumbers", &mut p.require_numbers),
        ("RequireSymbols", &mut p.require_symbols),
    ] {
        if let Some(b) = boolean(policy, name)? {
            *slot = b;
        }
    }
    if let Some(d) = integer(policy, "TemporaryPasswordValidityDays")? {
        if !(0..=365).contains(&d) {
            return Err(invalid(
                "TemporaryPasswordValidityDays must be between 0 and 365",
            ));
        }
        p.temporary_password_validity_days = d as u32;
    }
    Ok(p)
}

fn lambda_config(input: &Value) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    let Some(Value::Object(config)) = field(input, "LambdaConfig") else {
        return Ok(out);
    };
    for (name, value) in config {
        if value.is_null() {
            continue;
        }
        let arn = match (name.as_str(), value) {
            ("PreTokenGenerationConfig", v) => {
                let version = v
                    .get("LambdaVersion")
                    .and_then(Value::as_str)
                    .unwrap_or("V1_0");
                if version != "V1_0" {
                    return Err(invalid(format!(
                        "PreTokenGenerationConfig: nimbus runs the V1_0 event only, not {version}"
                    )));
                }
                let arn = v.get("LambdaArn").and_then(Value::as_str).unwrap_or("");
                out.insert("PreTokenGeneration".to_owned(), arn.to_owned());
                continue;
            }
            (_, Value::String(arn)) => arn,
            _ => {
                return Err(invalid(format!(
                    "LambdaConfig.{name} must be a function ARN"
                )));
            }
        };
        if !TRIGGERS.contains(&name.as_str()) {
            return Err(invalid(format!(
                "LambdaConfig.{name}: nimbus runs only the {} triggers",
                TRIGGERS.join(", ")
            )));
        }
        let reference = nimbus_types::FunctionRef::parse(arn)
            .map_err(|_| invalid(format!("LambdaConfig.{name}: {arn} is not a function ARN")))?;
        if !arn.starts_with("arn:") || reference.account.is_none() {
            return Err(invalid(format!(
                "LambdaConfig.{name}: {arn} is not a function ARN"
            )));
        }
        out.insert(name.clone(), arn.clone());
    }
    Ok(out)
}

fn one_of(values: &[String], allowed: &[&str], member: &str) -> Result<()> {
    for v in values {
        if !allowed.contains(&v.as_str()) {
            return Err(invalid(format!(
                "1 validation error detected: Value '{v}' at '{member}' failed to satisfy constraint: Member must satisfy enum value set: [{}]",
                allowed.join(", ")
            )));
        }
    }
    Ok(())
}

/// The settings that may change after creation (UpdateUserPool sets each to what the request
/// says, or to its default when the request leaves it out, as Cognito does).
fn mutable_settings(input: &Value, s: &mut PoolSettings) -> Result<()> {
    s.password_policy = password_policy(input)?;
    s.lambda_config = lambda_config(input)?;
    let auto = strings(input, "AutoVerifiedAttributes")?.unwrap_or_default();
    one_of(&auto, &["email", "phone_number"], "autoVerifiedAttributes")?;
    s.auto_verified_attributes = auto;
    s.allow_admin_create_user_only = field(input, "AdminCreateUserConfig")
        .map(|c| boolean(c, "AllowAdminCreateUserOnly"))
        .transpose()?
        .flatten()
        .unwrap_or(false);
    if let Some(days) = field(input, "AdminCreateUserConfig")
        .map(|c| integer(c, "UnusedAccountValidityDays"))
        .transpose()?
        .flatten()
        && field(input, "Policies").is_none()
    {
        s.password_policy.temporary_password_validity_days = days.clamp(0, 365) as u32;
    }
    s.deletion_protection = match string(input, "DeletionProtection")? {
        None | Some("INACTIVE") => false,
        Some("ACTIVE") => true,
        Some(other) => {
            return Err(invalid(format!(
                "DeletionProtection must be ACTIVE or INACTIVE, not {other}"
            )));
        }
    };
    match string(input, "MfaConfiguration")? {
        None | Some("OFF") => {}
        Some(other) => {
            return Err(invalid(format!(
                "MfaConfiguration {other}: nimbus does not do multi-factor sign-in; only OFF"
            )));
        }
    }
    if let Some(Value::Object(tags)) = field(input, "UserPoolTags") {
        s.tags = tags
            .iter()
            .map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_owned()))
            .collect();
    }
    Ok(())
}

fn schema(input: &Value, s: &mut PoolSettings) -> Result<()> {
    let Some(Value::Array(entries)) = field(input, "Schema") else {
        return Ok(());
    };
    for e in entries {
        let name = required(e, "Name")?;
        let data_type = string(e, "AttributeDataType")?.unwrap_or("String");
        if !["String", "Number", "DateTime", "Boolean"].contains(&data_type) {
            return Err(invalid(format!(
                "AttributeDataType {data_type} is not String, Number, DateTime or Boolean"
            )));
        }
        let req = boolean(e, "Required")?.unwrap_or(false);
        if STANDARD.contains(&name) {
            if req && !s.required_attributes.iter().any(|r| r == name) {
                s.required_attributes.push(name.to_owned());
            }
            continue;
        }
        let bare = name.strip_prefix("custom:").unwrap_or(name);
        if bare.is_empty()
            || bare.len() > 20
            || !bare
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
        {
            return Err(invalid(format!(
                "Invalid custom attribute name {name}: 1 to 20 of [A-Za-z0-9_-]"
            )));
        }
        if req {
            return Err(invalid(
                "Required custom attributes are not supported currently.",
            ));
        }
        if s.custom_attributes.iter().any(|c| c.name == bare) {
            return Err(invalid(format!("Duplicate attribute name {name}")));
        }
        let number = |group: &str, member: &str| -> Result<Option<i64>> {
            match field(e, group).and_then(|g| field(g, member)) {
                None => Ok(None),
                Some(Value::String(v)) => v
                    .parse()
                    .map(Some)
                    .map_err(|_| invalid(format!("{group}.{member} must be a number"))),
                Some(v) => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| invalid(format!("{group}.{member} must be a number"))),
            }
        };
        let min_length = number("StringAttributeConstraints", "MinLength")?;
        let max_length = number("StringAttributeConstraints", "MaxLength")?;
        if min_length.is_some_and(|m| m < 0) || max_length.is_some_and(|m| !(1..=2048).contains(&m))
        {
            return Err(invalid("StringAttributeConstraints are out of range"));
        }
        s.custom_attributes.push(CustomAttribute {
            name: bare.to_owned(),
            data_type: data_type.to_owned(),
            mutable: boolean(e, "Mutable")?.unwrap_or(true),
            min_length: min_length.map(|v| v as u64),
            max_length: max_length.map(|v| v as u64),
            min_value: number("NumberAttributeConstraints", "MinValue")?,
            max_value: number("NumberAttributeConstraints", "MaxValue")?,
        });
    }
    if s.custom_attributes.len() > 50 {
        return Err(invalid("A pool can have at most 50 custom attributes."));
    }
    Ok(())
}

pub(crate) async fn create(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let name = required(input, "PoolName")?;
    check_name(name, "poolName")?;
    let mut s = PoolSettings::default();
    let username_attributes = strings(input, "UsernameAttributes")?.unwrap_or_default();
    one_of(
        &username_attributes,
        &["email", "phone_number"],
        "usernameAttributes",
    )?;
    let alias_attributes = strings(input, "AliasAttributes")?.unwrap_or_default();
    one_of(
        &alias_attributes,
        &["email", "phone_number", "preferred_username"],
        "aliasAttributes",
    )?;
    if !username_attributes.is_empty() && !alias_attributes.is_empty() {
        return Err(invalid(
            "Only one of the parameters [UsernameAttributes, AliasAttributes] should be specified",
        ));
    }
    s.username_attributes = username_attributes;
    s.alias_attributes = alias_attributes;
    s.case_sensitive = field(input, "UsernameConfiguration")
        .map(|c| boolean(c, "CaseSensitive"))
        .transpose()?
        .flatten()
        .unwrap_or(false);
    mutable_settings(input, &mut s)?;
    schema(input, &mut s)?;
    if cognito.pools.pools(account).len() >= 1000 {
        return Err(CognitoError::new(
            "LimitExceededException",
            "The account has 1,000 user pools already.",
        ));
    }
    let pool = cognito.pools.create_pool(account, name, s).await?;
    Ok(json!({ "UserPool": render::pool(&pool, 0) }))
}

pub(crate) fn describe(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let users = cognito.pools.user_count(&pool.id)?;
    Ok(json!({ "UserPool": render::pool(&pool, users) }))
}

/// A page of a list: `MaxResults` (1–60) items after `NextToken`.
pub(crate) fn page<T>(
    items: Vec<T>,
    key: impl Fn(&T) -> String,
    input: &Value,
    size_member: &str,
    required_size: bool,
) -> Result<(Vec<T>, Option<String>)> {
    let size = match integer(input, size_member)? {
        Some(n) if (1..=60).contains(&n) => n as usize,
        Some(_) => {
            return Err(invalid(format!(
                "1 validation error detected: Value at '{size_member}' failed to satisfy constraint: Member must have value between 1 and 60"
            )));
        }
        None if required_size => {
            return Err(invalid(format!(
                "1 validation error detected: Value null at '{size_member}' failed to satisfy constraint: Member must not be null"
            )));
        }
        None => 60,
    };
    let after = string(input, "NextToken")?;
    let mut rest: Vec<T> = match after {
        Some(token) => {
            let mut found = false;
            let mut out = Vec::new();
            for item in items {
                if found {
                    out.push(item);
                } else if key(&item) == token {
                    found = true;
                }
            }
            if !found {
                return Err(invalid("The pagination token is not valid."));
            }
            out
        }
        None => items,
    };
    let next = (rest.len() > size).then(|| key(&rest[size - 1]));
    rest.truncate(size);
    Ok((rest, next))
}

pub(crate) fn list(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let (pools, next) = page(
        cognito.pools.pools(account),
        |p| p.id.clone(),
        input,
        "MaxResults",
        true,
    )?;
    let shown: Vec<Value> = pools
        .iter()
        .map(|p| {
            json!({
                "Id": p.id, "Name": p.name, "LambdaConfig": p.settings.lambda_config,
                "LastModifiedDate": render::time(p.modified_ms),
                "CreationDate": render::time(p.created_ms),
            })
        })
        .collect();
    let mut out = json!({ "UserPools": shown });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

pub(crate) async fn update(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let mut s = pool.settings.clone();
    mutable_settings(input, &mut s)?;
    cognito
        .pools
        .modify_pool(&pool.id, move |p| {
            p.settings = s;
            Ok(())
        })
        .await?;
    Ok(json!({}))
}

pub(crate) async fn delete(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    if pool.settings.deletion_protection {
        return Err(invalid(
            "The user pool cannot be deleted because deletion protection is activated.",
        ));
    }
    cognito.pools.delete_pool(&pool.id).await?;
    Ok(json!({}))
}

// ---- clients ----

const FLOWS: [&str; 9] = [
    "ADMIN_NO_SRP_AUTH",
    "CUSTOM_AUTH_FLOW_ONLY",
    "USER_PASSWORD_AUTH",
    "ALLOW_ADMIN_USER_PASSWORD_AUTH",
    "ALLOW_CUSTOM_AUTH",
    "ALLOW_USER_PASSWORD_AUTH",
    "ALLOW_USER_SRP_AUTH",
    "ALLOW_REFRESH_TOKEN_AUTH",
    "ALLOW_USER_AUTH",
];

/// The client's flows in their `ALLOW_` form; the legacy names imply SRP and refresh.
fn flows(input: &Value) -> Result<Vec<String>> {
    let Some(given) = strings(input, "ExplicitAuthFlows")? else {
        return Ok(DEFAULT_FLOWS.iter().map(|s| (*s).to_owned()).collect());
    };
    one_of(&given, &FLOWS, "explicitAuthFlows")?;
    let legacy = given.iter().any(|f| !f.starts_with("ALLOW_"));
    let modern = given.iter().any(|f| f.starts_with("ALLOW_"));
    if legacy && modern {
        return Err(invalid(
            "Legacy and ALLOW_ prefixed values of ExplicitAuthFlows cannot be mixed.",
        ));
    }
    let mut out: Vec<String> = given
        .iter()
        .map(|f| match f.as_str() {
            "ADMIN_NO_SRP_AUTH" => "ALLOW_ADMIN_USER_PASSWORD_AUTH".to_owned(),
            "USER_PASSWORD_AUTH" => "ALLOW_USER_PASSWORD_AUTH".to_owned(),
            "CUSTOM_AUTH_FLOW_ONLY" => "ALLOW_CUSTOM_AUTH".to_owned(),
            other => other.to_owned(),
        })
        .collect();
    if legacy {
        out.push("ALLOW_USER_SRP_AUTH".into());
        out.push("ALLOW_REFRESH_TOKEN_AUTH".into());
    }
    out.sort();
    out.dedup();
    Ok(out)
}

/// Token lifetimes: each value in its unit, within Cognito's bounds.
fn validity(input: &Value) -> Result<(Validity, BTreeMap<String, String>)> {
    let mut units = BTreeMap::new();
    if let Some(Value::Object(given)) = field(input, "TokenValidityUnits") {
        for (k, v) in given {
            let Some(unit) = v.as_str() else { continue };
            if !["AccessToken", "IdToken", "RefreshToken"].contains(&k.as_str())
                || render::unit_seconds(unit).is_none()
            {
                return Err(invalid(format!(
                    "TokenValidityUnits.{k}: {unit} is not a unit"
                )));
            }
            units.insert(k.clone(), unit.to_owned());
        }
    }
    let mut v = Validity::default();
    for (member, unit_key, default_unit, slot, (min, max)) in [
        (
            "AccessTokenValidity",
            "AccessToken",
            "hours",
            &mut v.access_s,
            (300, 86_400),
        ),
        (
            "IdTokenValidity",
            "IdToken",
            "hours",
            &mut v.id_s,
            (300, 86_400),
        ),
        (
            "RefreshTokenValidity",
            "RefreshToken",
            "days",
            &mut v.refresh_s,
            (3600, 3650 * 86_400),
        ),
    ] {
        if let Some(n) = integer(input, member)? {
            let unit = units.get(unit_key).map_or(default_unit, String::as_str);
            let seconds = (n.max(0) as u64).saturating_mul(render::unit_seconds(unit).unwrap_or(1));
            if !(min..=max).contains(&seconds) {
                return Err(invalid(format!(
                    "{member} must be between {min} and {max} seconds; {n} {unit} is not"
                )));
            }
            *slot = seconds;
        }
    }
    Ok((v, units))
}

fn client_settings(pool: &Pool, input: &Value, c: &mut Client) -> Result<()> {
    let name = required(input, "ClientName")?;
    check_name(name, "clientName")?;
    c.name = name.to_owned();
    c.explicit_auth_flows = flows(input)?;
    let (validity, units) = validity(input)?;
    c.validity = validity;
    c.units = units;
    c.prevent_user_existence_errors = match string(input, "PreventUserExistenceErrors")? {
        None | Some("ENABLED") => "ENABLED".into(),
        Some("LEGACY") => "LEGACY".into(),
        Some(other) => {
            return Err(invalid(format!(
                "PreventUserExistenceErrors must be ENABLED or LEGACY, not {other}"
            )));
        }
    };
    c.enable_token_revocation = boolean(input, "EnableTokenRevocation")?.unwrap_or(true);
    for (member, slot) in [
        ("ReadAttributes", &mut c.read_attributes),
        ("WriteAttributes", &mut c.write_attributes),
    ] {
        let list = strings(input, member)?.unwrap_or_default();
        for a in &list {
            let known = STANDARD.contains(&a.as_str())
                || a.strip_prefix("custom:")
                    .is_some_and(|n| pool.settings.custom_attributes.iter().any(|c| c.name == n));
            if !known {
                return Err(invalid(format!("Invalid {member} specified: {a}")));
            }
        }
        *slot = list;
    }
    Ok(())
}

pub(crate) async fn create_client(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let now = nimbus_types::time::now_ms();
    const LOWER: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut client = Client {
        id: random_string(LOWER, 26),
        pool_id: pool.id.clone(),
        name: String::new(),
        secret: boolean(input, "GenerateSecret")?
            .unwrap_or(false)
            .then(|| random_string(LOWER, 51)),
        explicit_auth_flows: Vec::new(),
        validity: Validity::default(),
        units: BTreeMap::new(),
        prevent_user_existence_errors: String::new(),
        enable_token_revocation: true,
        read_attributes: Vec::new(),
        write_attributes: Vec::new(),
        created_ms: now,
        modified_ms: now,
    };
    client_settings(&pool, input, &mut client)?;
    if cognito.pools.clients(&pool.id).len() >= 1000 {
        return Err(CognitoError::new(
            "LimitExceededException",
            "The pool has 1,000 app clients already.",
        ));
    }
    let client = cognito.pools.put_client(client).await?;
    Ok(json!({ "UserPoolClient": render::client(&client) }))
}

fn client_of(cognito: &Cognito, pool: &Pool, input: &Value) -> Result<std::sync::Arc<Client>> {
    let id = required(input, "ClientId")?;
    cognito
        .pools
        .client(id)
        .filter(|c| c.pool_id == pool.id)
        .ok_or_else(|| {
            CognitoError::new(
                "ResourceNotFoundException",
                format!("User pool client {id} does not exist."),
            )
        })
}

pub(crate) fn describe_client(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let client = client_of(cognito, &pool, input)?;
    Ok(json!({ "UserPoolClient": render::client(&client) }))
}

pub(crate) fn list_clients(cognito: &Cognito, account: &str, input: &Value) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let (clients, next) = page(
        cognito.pools.clients(&pool.id),
        |c| c.id.clone(),
        input,
        "MaxResults",
        false,
    )?;
    let shown: Vec<Value> = clients
        .iter()
        .map(|c| json!({ "ClientId": c.id, "UserPoolId": c.pool_id, "ClientName": c.name }))
        .collect();
    let mut out = json!({ "UserPoolClients": shown });
    if let Some(n) = next {
        out["NextToken"] = json!(n);
    }
    Ok(out)
}

pub(crate) async fn update_client(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let mut client = (*client_of(cognito, &pool, input)?).clone();
    // A name left out keeps the old one; every other setting takes the request's value or
    // its default, as Cognito's update does.
    let mut input = input.clone();
    if field(&input, "ClientName").is_none() {
        input["ClientName"] = json!(client.name);
    }
    client_settings(&pool, &input, &mut client)?;
    client.modified_ms = nimbus_types::time::now_ms();
    let client = cognito.pools.put_client(client).await?;
    Ok(json!({ "UserPoolClient": render::client(&client) }))
}

pub(crate) async fn delete_client(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<Value> {
    let pool = pool_of(cognito, account, input)?;
    let client = client_of(cognito, &pool, input)?;
    cognito.pools.delete_client(&client.id).await?;
    Ok(json!({}))
}
