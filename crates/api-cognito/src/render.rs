//! Records as Cognito shows them: `UserPoolType`, `UserPoolClientType`, `UserType`,
//! `GroupType`, `CodeDeliveryDetailsType`; and the attribute rules of a pool's schema.

use nimbus_userpools::model::{Client, Group, Pool, User};
use serde_json::{Map, Value, json};

use crate::{Result, invalid};

/// Cognito's timestamps: seconds since the epoch, with fractions.
pub(crate) fn time(ms: i64) -> Value {
    json!(ms as f64 / 1000.0)
}

/// The standard attributes and whether a user may change them.
pub(crate) const STANDARD: [&str; 20] = [
    "sub",
    "name",
    "given_name",
    "family_name",
    "middle_name",
    "nickname",
    "preferred_username",
    "profile",
    "picture",
    "website",
    "email",
    "email_verified",
    "gender",
    "birthdate",
    "zoneinfo",
    "locale",
    "phone_number",
    "phone_number_verified",
    "address",
    "updated_at",
];

fn schema_entry(name: &str, data_type: &str, mutable: bool, required: bool) -> Value {
    json!({
        "Name": name,
        "AttributeDataType": data_type,
        "DeveloperOnlyAttribute": false,
        "Mutable": mutable,
        "Required": required,
    })
}

pub(crate) fn pool(p: &Pool, users: u64) -> Value {
    let s = &p.settings;
    let mut schema: Vec<Value> = STANDARD
        .iter()
        .map(|a| {
            let ty = match *a {
                "email_verified" | "phone_number_verified" => "Boolean",
                "updated_at" => "Number",
                _ => "String",
            };
            let mut e = schema_entry(
                a,
                ty,
                *a != "sub",
                *a == "sub" || s.required_attributes.iter().any(|r| r == a),
            );
            if ty == "String" {
                e["StringAttributeConstraints"] = json!({
                    "MinLength": if *a == "sub" { "1" } else { "0" },
                    "MaxLength": if *a == "sub" { "128" } else { "2048" },
                });
            }
            e
        })
        .collect();
    for c in &s.custom_attributes {
        let mut e = schema_entry(
            &format!("custom:{}", c.name),
            &c.data_type,
            c.mutable,
            false,
        );
        if c.data_type == "String" {
            e["StringAttributeConstraints"] = json!({
                "MinLength": c.min_length.unwrap_or(0).to_string(),
                "MaxLength": c.max_length.unwrap_or(2048).to_string(),
            });
        }
        if c.data_type == "Number" {
            let mut n = Map::new();
            if let Some(v) = c.min_value {
                n.insert("MinValue".into(), json!(v.to_string()));
            }
            if let Some(v) = c.max_value {
                n.insert("MaxValue".into(), json!(v.to_string()));
            }
            e["NumberAttributeConstraints"] = Value::Object(n);
        }
        schema.push(e);
    }
    let mut out = json!({
        "Id": p.id,
        "Name": p.name,
        "Arn": format!("arn:aws:cognito-idp:{}:{}:userpool/{}", region_of(&p.id), p.account, p.id),
        "Policies": { "PasswordPolicy": s.password_policy },
        "DeletionProtection": if s.deletion_protection { "ACTIVE" } else { "INACTIVE" },
        "LambdaConfig": s.lambda_config,
        "LastModifiedDate": time(p.modified_ms),
        "CreationDate": time(p.created_ms),
        "SchemaAttributes": schema,
        "AutoVerifiedAttributes": s.auto_verified_attributes,
        "MfaConfiguration": "OFF",
        "EstimatedNumberOfUsers": users,
        "UserPoolTags": s.tags,
        "AdminCreateUserConfig": {
            "AllowAdminCreateUserOnly": s.allow_admin_create_user_only,
            "UnusedAccountValidityDays": s.password_policy.temporary_password_validity_days,
        },
        "UsernameConfiguration": { "CaseSensitive": s.case_sensitive },
        "AccountRecoverySetting": { "RecoveryMechanisms": [
            { "Priority": 1, "Name": "verified_email" },
            { "Priority": 2, "Name": "verified_phone_number" },
        ]},
        "UserPoolTier": "ESSENTIALS",
    });
    if !s.username_attributes.is_empty() {
        out["UsernameAttributes"] = json!(s.username_attributes);
    }
    if !s.alias_attributes.is_empty() {
        out["AliasAttributes"] = json!(s.alias_attributes);
    }
    out
}

pub(crate) fn region_of(pool_id: &str) -> &str {
    pool_id.split('_').next().unwrap_or_default()
}

pub(crate) fn client(c: &Client) -> Value {
    let mut out = json!({
        "UserPoolId": c.pool_id,
        "ClientName": c.name,
        "ClientId": c.id,
        "LastModifiedDate": time(c.modified_ms),
        "CreationDate": time(c.created_ms),
        "RefreshTokenValidity": unit_value(c.validity.refresh_s, c.units.get("RefreshToken"), "days"),
        "AccessTokenValidity": unit_value(c.validity.access_s, c.units.get("AccessToken"), "hours"),
        "IdTokenValidity": unit_value(c.validity.id_s, c.units.get("IdToken"), "hours"),
        "TokenValidityUnits": {
            "AccessToken": c.units.get("AccessToken").map_or("hours", String::as_str),
            "IdToken": c.units.get("IdToken").map_or("hours", String::as_str),
            "RefreshToken": c.units.get("RefreshToken").map_or("days", String::as_str),
        },
        "ExplicitAuthFlows": c.explicit_auth_flows,
        "PreventUserExistenceErrors": c.prevent_user_existence_errors,
        "EnableTokenRevocation": c.enable_token_revocation,
        "EnablePropagateAdditionalUserContextData": false,
        "AuthSessionValidity": 3,
        "AllowedOAuthFlowsUserPoolClient": false,
    });
    if let Some(secret) = &c.secret {
        out["ClientSecret"] = json!(secret);
    }
    if !c.read_attributes.is_empty() {
        out["ReadAttributes"] = json!(c.read_attributes);
    }
    if !c.write_attributes.is_empty() {
        out["WriteAttributes"] = json!(c.write_attributes);
    }
    out
}

/// Seconds in a token validity unit.
pub(crate) fn unit_seconds(unit: &str) -> Option<u64> {
    match unit {
        "seconds" => Some(1),
        "minutes" => Some(60),
        "hours" => Some(3600),
        "days" => Some(86_400),
        _ => None,
    }
}

fn unit_value(seconds: u64, unit: Option<&String>, default: &str) -> u64 {
    let unit = unit.map_or(default, String::as_str);
    seconds / unit_seconds(unit).unwrap_or(1)
}

/// A user's attributes as `[{Name, Value}]`, only those in `only` if given.
pub(crate) fn attribute_list(u: &User, only: Option<&[String]>) -> Vec<Value> {
    u.attributes
        .iter()
        .filter(|(k, _)| only.is_none_or(|o| o.iter().any(|n| n == *k)))
        .map(|(k, v)| json!({ "Name": k, "Value": v }))
        .collect()
}

/// `UserType` (ListUsers, AdminCreateUser) with its attributes under `key`.
pub(crate) fn user(u: &User, key: &str, only: Option<&[String]>) -> Value {
    let mut out = json!({
        "Username": u.username,
        "UserCreateDate": time(u.created_ms),
        "UserLastModifiedDate": time(u.modified_ms),
        "Enabled": u.enabled,
        "UserStatus": u.status.as_str(),
    });
    out[key] = Value::Array(attribute_list(u, only));
    out
}

pub(crate) fn group(pool_id: &str, g: &Group) -> Value {
    let mut out = json!({
        "GroupName": g.name,
        "UserPoolId": pool_id,
        "LastModifiedDate": time(g.modified_ms),
        "CreationDate": time(g.created_ms),
    });
    if let Some(d) = &g.description {
        out["Description"] = json!(d);
    }
    if let Some(p) = g.precedence {
        out["Precedence"] = json!(p);
    }
    if let Some(r) = &g.role_arn {
        out["RoleArn"] = json!(r);
    }
    out
}

/// Where a code went, masked as Cognito masks it (`a***@e***`).
pub(crate) fn delivery(u: &User, attribute: &str) -> Value {
    let value = u.attribute(attribute).unwrap_or("");
    let masked = match attribute {
        "email" => {
            let (local, domain) = value.split_once('@').unwrap_or((value, ""));
            format!(
                "{}***@{}***",
                local.chars().next().unwrap_or('*'),
                domain.chars().next().unwrap_or('*')
            )
        }
        _ => format!(
            "+*******{}",
            value
                .chars()
                .rev()
                .take(4)
                .collect::<Vec<_>>()
                .into_iter()
                .rev()
                .collect::<String>()
        ),
    };
    json!({
        "Destination": masked,
        "DeliveryMedium": if attribute == "email" { "EMAIL" } else { "SMS" },
        "AttributeName": attribute,
    })
}

/// Checks attributes a request sets against the pool's schema: a known standard attribute or
/// a declared custom one, of its type and length; `sub` and (unless `admin`) the immutable
/// ones cannot be set.
pub(crate) fn check_attributes(
    pool: &Pool,
    attributes: &[(String, String)],
    admin: bool,
    creating: bool,
) -> Result<()> {
    for (name, value) in attributes {
        let bad = |why: &str| {
            Err(invalid(format!(
                "Attributes did not conform to the schema: {name}: {why}"
            )))
        };
        if value.chars().count() > 2048 {
            return bad("Attribute value too long");
        }
        if name == "sub" {
            return Err(invalid("Cannot modify the non-mutable attribute sub"));
        }
        if let Some(custom) = name.strip_prefix("custom:") {
            let Some(def) = pool
                .settings
                .custom_attributes
                .iter()
                .find(|c| c.name == custom)
            else {
                return bad("Attribute does not exist in the schema.");
            };
            if !def.mutable && !creating {
                return Err(invalid(format!(
                    "Cannot modify the non-mutable attribute {name}"
                )));
            }
            let len = value.chars().count() as u64;
            match def.data_type.as_str() {
                "String"
                    if def.min_length.is_some_and(|m| len < m)
                        || def.max_length.is_some_and(|m| len > m) =>
                {
                    return bad("String attribute length is out of bounds");
                }
                "Number" => {
                    let Ok(n) = value.parse::<i64>() else {
                        return bad("Number attribute value is not a number");
                    };
                    if def.min_value.is_some_and(|m| n < m) || def.max_value.is_some_and(|m| n > m)
                    {
                        return bad("Number attribute value is out of bounds");
                    }
                }
                "Boolean" if value != "true" && value != "false" => {
                    return bad("Boolean attribute value must be true or false");
                }
                _ => {}
            }
            continue;
        }
        if !STANDARD.contains(&name.as_str()) {
            return bad("Attribute does not exist in the schema.");
        }
        match name.as_str() {
            "email" if !valid_email(value) => return Err(invalid("Invalid email address format.")),
            "phone_number" if !valid_phone(value) => {
                return Err(invalid("Invalid phone number format."));
            }
            "email_verified" | "phone_number_verified" if value != "true" && value != "false" => {
                return bad("Boolean attribute value must be true or false");
            }
            "email_verified" | "phone_number_verified" if !admin => {
                return Err(invalid(format!("Cannot modify the attribute {name}")));
            }
            _ => {}
        }
    }
    Ok(())
}

pub(crate) fn valid_email(v: &str) -> bool {
    let Some((local, domain)) = v.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && !domain.starts_with('.')
        && !domain.ends_with('.')
        && !v.chars().any(|c| c.is_whitespace() || c.is_control())
        && !domain.contains('@')
}

pub(crate) fn valid_phone(v: &str) -> bool {
    v.len() >= 4
        && v.len() <= 17
        && v.starts_with('+')
        && v[1..].bytes().all(|b| b.is_ascii_digit())
}
