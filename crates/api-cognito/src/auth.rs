//! What an application's users do: sign up, confirm, sign in (and answer a challenge), refresh,
//! read and change their profile and password, reset a forgotten password, sign out. Also
//! the administrators' sign-in calls, which share the flows.

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use nimbus_userpools::model::{Client, CodeKind, Pool, Status, User};
use nimbus_userpools::{password, tokens};
use serde_json::{Map, Value, json};
use sha2::Sha256;

use crate::pools::pool_of;
use crate::render;
use crate::triggers;
use crate::users::{
    apply_attributes, check_code, code_for, delivery_attribute, make_user, mismatch, now_ms,
    post_confirmation, secrets,
};
use crate::{
    Cognito, CognitoError, Result, attribute_list, field, invalid, required, string, string_map,
};

/// How long a challenge's session lasts (Cognito's default: three minutes).
const SESSION_MS: i64 = 3 * 60 * 1000;

fn not_authorized(message: impl Into<String>) -> CognitoError {
    CognitoError::new("NotAuthorizedException", message)
}

fn wrong_password() -> CognitoError {
    not_authorized("Incorrect username or password.")
}

fn too_many() -> CognitoError {
    CognitoError::new(
        "TooManyRequestsException",
        "Too many requests, please try again later.",
    )
}

pub(crate) async fn dispatch(
    cognito: &Cognito,
    source: Option<IpAddr>,
    operation: &str,
    input: &Value,
) -> Result<Value> {
    match operation {
        "SignUp" => sign_up(cognito, source, input).await,
        "ConfirmSignUp" => confirm_sign_up(cognito, source, input).await,
        "ResendConfirmationCode" => resend_code(cognito, source, input).await,
        "InitiateAuth" => initiate(cognito, source, input).await,
        "RespondToAuthChallenge" => respond(cognito, source, input, None).await,
        "GetUser" => get_user(cognito, input).await,
        "UpdateUserAttributes" => update_attributes(cognito, input).await,
        "DeleteUser" => delete_user(cognito, input).await,
        "ChangePassword" => change_password(cognito, source, input).await,
        "ForgotPassword" => forgot_password(cognito, source, input).await,
        "ConfirmForgotPassword" => confirm_forgot_password(cognito, source, input).await,
        "GlobalSignOut" => global_sign_out(cognito, input).await,
        "RevokeToken" => revoke_token(cognito, input).await,
        "GetUserAttributeVerificationCode" => attribute_code(cognito, input).await,
        "VerifyUserAttribute" => verify_attribute(cognito, source, input).await,
        other => Err(CognitoError::new(
            "UnknownOperationException",
            format!("The operation {other} is not supported."),
        )),
    }
}

// ---- clients and secrets ----

/// The client named by `ClientId` and its pool.
fn client_of(cognito: &Cognito, input: &Value) -> Result<(Arc<Pool>, Arc<Client>)> {
    let id = required(input, "ClientId")?;
    let missing = || {
        CognitoError::new(
            "ResourceNotFoundException",
            format!("User pool client {id} does not exist."),
        )
    };
    let client = cognito.pools.client(id).ok_or_else(missing)?;
    let pool = cognito.pools.pool(&client.pool_id).ok_or_else(missing)?;
    Ok((pool, client))
}

/// Base64 of HMAC-SHA256(client secret, username + client id).
pub(crate) fn secret_hash(secret: &str, username: &str, client_id: &str) -> String {
    #[allow(clippy::unwrap_used)] // HMAC takes a key of any length
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(username.as_bytes());
    mac.update(client_id.as_bytes());
    STANDARD.encode(mac.finalize().into_bytes())
}

/// Checks `SECRET_HASH` for a client with a secret, against any of `usernames`.
fn check_secret(client: &Client, given: Option<&str>, usernames: &[&str]) -> Result<()> {
    let Some(secret) = &client.secret else {
        return Ok(());
    };
    let Some(given) = given else {
        return Err(not_authorized(format!(
            "Client {} is configured with secret but SECRET_HASH was not received",
            client.id
        )));
    };
    let ok = usernames.iter().any(|u| {
        nimbus_userpools::same_bytes(
            secret_hash(secret, u, &client.id).as_bytes(),
            given.as_bytes(),
        )
    });
    if ok {
        Ok(())
    } else {
        Err(not_authorized(format!(
            "Unable to verify secret hash for client {}",
            client.id
        )))
    }
}

// ---- challenge sessions ----

/// A challenge's `Session`: what it is for, signed with the node's secret.
fn session_for(
    cognito: &Cognito,
    pool: &Pool,
    client: &Client,
    user: &User,
    challenge: &str,
) -> String {
    let body = json!({
        "p": pool.id, "c": client.id, "u": user.username, "n": challenge,
        "e": now_ms() + SESSION_MS,
    })
    .to_string();
    let mut out = URL_SAFE_NO_PAD.encode(&body);
    let mac = session_mac(cognito, out.as_bytes());
    out.push('.');
    out.push_str(&URL_SAFE_NO_PAD.encode(mac));
    out
}

fn session_mac(cognito: &Cognito, data: &[u8]) -> Vec<u8> {
    #[allow(clippy::unwrap_used)] // HMAC takes a key of any length
    let mut mac = Hmac::<Sha256>::new_from_slice(cognito.pools.session_secret()).unwrap();
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// The session's pool, client, username and challenge, if it is genuine and current.
fn open_session(cognito: &Cognito, session: &str) -> Result<(String, String, String, String)> {
    let expired = || not_authorized("Invalid session for the user, session is expired.");
    let (body, mac) = session.split_once('.').ok_or_else(expired)?;
    let mac = URL_SAFE_NO_PAD.decode(mac).map_err(|_| expired())?;
    if !nimbus_userpools::same_bytes(&session_mac(cognito, body.as_bytes()), &mac) {
        return Err(expired());
    }
    let v: Value = URL_SAFE_NO_PAD
        .decode(body)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(expired)?;
    if v.get("e")
        .and_then(Value::as_i64)
        .is_none_or(|e| e <= now_ms())
    {
        return Err(expired());
    }
    let s = |k: &str| {
        v.get(k)
            .and_then(Value::as_str)
            .unwrap_or_default()
            .to_owned()
    };
    Ok((s("p"), s("c"), s("u"), s("n")))
}

// ---- tokens ----

/// The claims a user's ID token carries for its attributes (booleans as booleans).
fn attribute_claims(user: &User, client: &Client, claims: &mut Map<String, Value>) {
    for (k, v) in &user.attributes {
        if k == "sub" {
            continue;
        }
        if !client.read_attributes.is_empty() && !client.read_attributes.contains(k) {
            continue;
        }
        let value = match k.as_str() {
            "email_verified" | "phone_number_verified" => Value::Bool(v == "true"),
            "updated_at" => v.parse::<i64>().map_or_else(|_| json!(v), |n| json!(n)),
            _ => json!(v),
        };
        claims.insert(k.clone(), value);
    }
}

/// Claims a trigger may not change.
const FIXED_CLAIMS: [&str; 14] = [
    "acr",
    "amr",
    "aud",
    "auth_time",
    "azp",
    "exp",
    "iat",
    "identities",
    "iss",
    "sub",
    "token_use",
    "nonce",
    "at_hash",
    "cognito:username",
];

/// Mints the ID and access tokens (and, for a new sign-in, a refresh token) of a user.
#[allow(clippy::too_many_arguments)]
async fn issue(
    cognito: &Cognito,
    pool: &Pool,
    client: &Client,
    user: &User,
    source: &str,
    refresh: Option<(String, i64)>,
    metadata: &BTreeMap<String, String>,
) -> Result<Value> {
    let now_s = now_ms() / 1000;
    let issuer = cognito.issuer(&pool.id);
    let mut groups: Vec<String> = user.groups.iter().cloned().collect();
    let mut add = Map::new();
    let mut suppress: Vec<String> = Vec::new();
    let event = triggers::event(
        pool,
        Some(&client.id),
        &user.username,
        source,
        json!({
            "userAttributes": triggers::attributes(&user.attributes, Some(user.status.as_str())),
            "groupConfiguration": {
                "groupsToOverride": groups, "iamRolesToOverride": [], "preferredRole": null,
            },
            "clientMetadata": metadata,
        }),
        json!({ "claimsOverrideDetails": null }),
    );
    if let Some(returned) = cognito
        .triggers
        .run(pool, "PreTokenGeneration", event)
        .await?
    {
        let details = returned
            .get("response")
            .and_then(|r| r.get("claimsOverrideDetails"))
            .cloned()
            .unwrap_or(Value::Null);
        if let Some(Value::Object(claims)) = details.get("claimsToAddOrOverride") {
            for (k, v) in claims {
                if !FIXED_CLAIMS.contains(&k.as_str()) {
                    add.insert(k.clone(), v.clone());
                }
            }
        }
        if let Some(Value::Array(names)) = details.get("claimsToSuppress") {
            suppress = names
                .iter()
                .filter_map(Value::as_str)
                .filter(|n| !FIXED_CLAIMS.contains(n))
                .map(str::to_owned)
                .collect();
        }
        if let Some(Value::Array(g)) = details
            .get("groupOverrideDetails")
            .and_then(|d| d.get("groupsToOverride"))
        {
            groups = g
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect();
        }
    }
    let (origin_jti, auth_time, new_refresh) = match refresh {
        Some((jti, auth_time)) => (jti, auth_time, false),
        None => (uuid::Uuid::new_v4().to_string(), now_s, true),
    };
    let event_id = uuid::Uuid::new_v4().to_string();
    let mut id = Map::new();
    id.insert("sub".into(), json!(user.sub()));
    if !groups.is_empty() {
        id.insert("cognito:groups".into(), json!(groups));
    }
    attribute_claims(user, client, &mut id);
    id.insert("iss".into(), json!(issuer));
    id.insert("cognito:username".into(), json!(user.username));
    id.insert("origin_jti".into(), json!(origin_jti));
    id.insert("aud".into(), json!(client.id));
    id.insert("event_id".into(), json!(event_id));
    id.insert("token_use".into(), json!("id"));
    id.insert("auth_time".into(), json!(auth_time));
    id.insert("exp".into(), json!(now_s + client.validity.id_s as i64));
    id.insert("iat".into(), json!(now_s));
    id.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    for name in &suppress {
        id.remove(name);
    }
    id.extend(add);
    let mut access = Map::new();
    access.insert("sub".into(), json!(user.sub()));
    if !groups.is_empty() {
        access.insert("cognito:groups".into(), json!(groups));
    }
    access.insert("iss".into(), json!(issuer));
    access.insert("client_id".into(), json!(client.id));
    access.insert("origin_jti".into(), json!(origin_jti));
    access.insert("event_id".into(), json!(event_id));
    access.insert("token_use".into(), json!("access"));
    access.insert("scope".into(), json!("aws.cognito.signin.user.admin"));
    access.insert("auth_time".into(), json!(auth_time));
    access.insert("exp".into(), json!(now_s + client.validity.access_s as i64));
    access.insert("iat".into(), json!(now_s));
    access.insert("jti".into(), json!(uuid::Uuid::new_v4().to_string()));
    access.insert("username".into(), json!(user.username));
    let signer = &cognito.pools.signer;
    let mut result = json!({
        "AccessToken": signer.sign(pool, &access)?,
        "ExpiresIn": client.validity.access_s,
        "TokenType": "Bearer",
        "IdToken": signer.sign(pool, &id)?,
    });
    if new_refresh {
        let token = cognito
            .pools
            .open_session(pool, client, user, &origin_jti, auth_time)
            .await?;
        result["RefreshToken"] = json!(token);
    }
    Ok(json!({ "AuthenticationResult": result, "ChallengeParameters": {} }))
}

/// The user an access token is for, with its pool and claims. The token must be this node's,
/// current, of a session not signed out, and its user must still exist and be enabled.
async fn bearer(cognito: &Cognito, input: &Value) -> Result<(Arc<Pool>, User, Map<String, Value>)> {
    let token = required(input, "AccessToken")?;
    let invalid_token = || not_authorized("Invalid Access Token");
    let pool_id = tokens::claimed_pool(token).ok_or_else(invalid_token)?;
    let pool = cognito.pools.pool(&pool_id).ok_or_else(invalid_token)?;
    let claims = tokens::verify(
        &pool,
        &cognito.issuer(&pool.id),
        token,
        "access",
        now_ms() / 1000,
    )?;
    let jti = claims
        .get("origin_jti")
        .and_then(Value::as_str)
        .ok_or_else(invalid_token)?;
    if cognito.pools.session_by_jti(jti)?.is_none() {
        return Err(not_authorized("Access Token has been revoked"));
    }
    let username = claims
        .get("username")
        .and_then(Value::as_str)
        .ok_or_else(invalid_token)?;
    let user = cognito
        .pools
        .user(&pool, username)?
        .filter(|u| u.sub() == claims.get("sub").and_then(Value::as_str).unwrap_or(""))
        .ok_or_else(|| not_authorized("User does not exist."))?;
    if !user.enabled {
        return Err(not_authorized("User is disabled."));
    }
    Ok((pool, user, claims))
}

// ---- sign-up ----

async fn sign_up(cognito: &Cognito, source: Option<IpAddr>, input: &Value) -> Result<Value> {
    let (pool, client) = client_of(cognito, input)?;
    let username = required(input, "Username")?;
    let given_password = required(input, "Password")?;
    check_secret(&client, string(input, "SecretHash")?, &[username])?;
    if pool.settings.allow_admin_create_user_only {
        return Err(not_authorized("SignUp is not permitted for this user pool"));
    }
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    let attributes = attribute_list(input, "UserAttributes")?;
    if !client.write_attributes.is_empty()
        && let Some((name, _)) = attributes
            .iter()
            .find(|(n, _)| !client.write_attributes.contains(n))
    {
        return Err(not_authorized(format!(
            "A client attempted to write unauthorized attribute {name}"
        )));
    }
    password::check(&pool.settings.password_policy, given_password)?;
    let mut user = make_user(
        &pool,
        username,
        &attributes,
        false,
        Status::Unconfirmed,
        None,
    )?;
    if cognito.pools.user(&pool, &user.username)?.is_some()
        || (pool.uses_username_attributes() && cognito.pools.user(&pool, username)?.is_some())
    {
        return Err(CognitoError::new(
            "UsernameExistsException",
            "User already exists",
        ));
    }
    if let Some(returned) = cognito
        .triggers
        .pre_sign_up(&pool, Some(&client.id), &user, "PreSignUp_SignUp", input)
        .await?
    {
        if triggers::response_flag(&returned, "autoConfirmUser") {
            user.status = Status::Confirmed;
        }
        for (flag, attr) in [
            ("autoVerifyEmail", "email"),
            ("autoVerifyPhone", "phone_number"),
        ] {
            if triggers::response_flag(&returned, flag) && user.attributes.contains_key(attr) {
                user.attributes
                    .insert(format!("{attr}_verified"), "true".into());
            }
        }
    }
    let (hash, srp) = secrets(&pool.id, &user.username, given_password).await?;
    user.password = Some(hash);
    user.srp = Some(srp);
    let delivered = delivery_attribute(&pool, &user);
    if user.status == Status::Unconfirmed {
        user.signup_code = Some(code_for(
            &pool,
            &user,
            CodeKind::SignUp,
            cognito.code_validity_ms,
        ));
    }
    let user = cognito.pools.create_user(&pool, user).await?;
    let mut out = json!({
        "UserConfirmed": user.status == Status::Confirmed,
        "UserSub": user.sub(),
    });
    if user.status == Status::Unconfirmed
        && let Some(attr) = delivered
    {
        out["CodeDeliveryDetails"] = render::delivery(&user, attr);
    }
    Ok(out)
}

/// What checking a code inside a transaction found.
enum Checked {
    Matched,
    Mismatch,
    Expired,
    WrongState(Status),
}

fn checked(result: Result<bool>) -> Checked {
    match result {
        Ok(true) => Checked::Matched,
        Ok(false) => Checked::Mismatch,
        Err(_) => Checked::Expired,
    }
}

fn expired_code() -> CognitoError {
    CognitoError::new(
        "ExpiredCodeException",
        "Invalid code provided, please request a code again.",
    )
}

/// Whether `user` may try another code: wrong codes count with wrong passwords towards the
/// user's lockout, so that no run of fresh codes makes guessing them cheap.
fn guessing_allowed(cognito: &Cognito, pool: &Pool, user: &User) -> Result<()> {
    if cognito.limiter.locked(&pool.id, &user.username) {
        return Err(CognitoError::new(
            "LimitExceededException",
            "Attempt limit exceeded, please try after some time.",
        ));
    }
    Ok(())
}

/// The answer to a checked code, counting a miss.
fn code_outcome(cognito: &Cognito, pool: &Pool, user: &User, outcome: Checked) -> Result<()> {
    match outcome {
        Checked::Matched => Ok(()),
        Checked::Mismatch => {
            cognito.limiter.failed(&pool.id, &user.username);
            Err(mismatch())
        }
        Checked::Expired => Err(expired_code()),
        Checked::WrongState(s) => Err(not_authorized(format!(
            "User cannot be confirmed. Current status is {}",
            s.as_str()
        ))),
    }
}

/// The user a public request names, or the error that hides whether it exists.
fn named_user(
    cognito: &Cognito,
    pool: &Pool,
    client: &Client,
    name: &str,
    hidden: impl FnOnce() -> CognitoError,
) -> Result<User> {
    crate::users::check_username(name)?;
    match cognito.pools.user(pool, name)? {
        Some(u) => Ok(u),
        None if client.hides_users() => Err(hidden()),
        None => Err(CognitoError::new(
            "UserNotFoundException",
            "Username/client id combination not found.",
        )),
    }
}

async fn confirm_sign_up(
    cognito: &Cognito,
    source: Option<IpAddr>,
    input: &Value,
) -> Result<Value> {
    let (pool, client) = client_of(cognito, input)?;
    let name = required(input, "Username")?;
    let code = required(input, "ConfirmationCode")?.to_owned();
    check_secret(&client, string(input, "SecretHash")?, &[name])?;
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    let user = named_user(cognito, &pool, &client, name, mismatch)?;
    guessing_allowed(cognito, &pool, &user)?;
    let auto: Vec<String> = pool.settings.auto_verified_attributes.clone();
    let (outcome, user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            if u.status != Status::Unconfirmed {
                return Ok(Checked::WrongState(u.status));
            }
            let outcome = checked(check_code(&mut u.signup_code, &code));
            if matches!(outcome, Checked::Matched) {
                u.status = Status::Confirmed;
                u.signup_code = None;
                for attr in &auto {
                    if u.attributes.contains_key(attr) {
                        u.attributes
                            .insert(format!("{attr}_verified"), "true".into());
                    }
                }
            }
            Ok(outcome)
        })
        .await?;
    code_outcome(cognito, &pool, &user, outcome)?;
    post_confirmation(
        cognito,
        &pool,
        Some(&client.id),
        &user,
        "PostConfirmation_ConfirmSignUp",
        string_map(input, "ClientMetadata")?,
    )
    .await?;
    Ok(json!({}))
}

/// A delivery answer for a user who does not exist, shaped like a real one.
fn pretend_delivery(pool: &Pool, name: &str) -> Value {
    let attr = if pool
        .settings
        .auto_verified_attributes
        .iter()
        .any(|a| a == "email")
    {
        "email"
    } else {
        "phone_number"
    };
    let mut fake = make_user(pool, "x", &[], true, Status::Unconfirmed, None).ok();
    if let Some(u) = fake.as_mut() {
        let value = if attr == "email" && name.contains('@') {
            name.to_owned()
        } else if attr == "email" {
            format!("{name}@example.com")
        } else {
            "+10000000000".to_owned()
        };
        u.attributes.insert(attr.to_owned(), value);
    }
    fake.map_or(Value::Null, |u| render::delivery(&u, attr))
}

/// Who a request for a code (ResendConfirmationCode, ForgotPassword) names: the user, or the
/// answer to give for one who does not exist.
enum Addressee {
    User(Arc<Pool>, Box<User>),
    Nobody(Value),
}

fn addressee(cognito: &Cognito, source: Option<IpAddr>, input: &Value) -> Result<Addressee> {
    let (pool, client) = client_of(cognito, input)?;
    let name = required(input, "Username")?;
    crate::users::check_username(name)?;
    check_secret(&client, string(input, "SecretHash")?, &[name])?;
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    match cognito.pools.user(&pool, name)? {
        Some(user) => Ok(Addressee::User(pool, Box::new(user))),
        None if client.hides_users() => Ok(Addressee::Nobody(
            json!({ "CodeDeliveryDetails": pretend_delivery(&pool, name) }),
        )),
        None => Err(CognitoError::new(
            "UserNotFoundException",
            "Username/client id combination not found.",
        )),
    }
}

async fn resend_code(cognito: &Cognito, source: Option<IpAddr>, input: &Value) -> Result<Value> {
    let (pool, user) = match addressee(cognito, source, input)? {
        Addressee::User(pool, user) => (pool, *user),
        Addressee::Nobody(answer) => return Ok(answer),
    };
    let validity = cognito.code_validity_ms;
    let owned = pool.clone();
    let (confirmed, user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            if u.status != Status::Unconfirmed {
                return Ok(true);
            }
            u.signup_code = Some(code_for(&owned, u, CodeKind::SignUp, validity));
            Ok(false)
        })
        .await?;
    if confirmed {
        return Err(invalid("User is already confirmed."));
    }
    let details =
        delivery_attribute(&pool, &user).map_or(Value::Null, |a| render::delivery(&user, a));
    Ok(json!({ "CodeDeliveryDetails": details }))
}

// ---- sign-in ----

/// A required member of `AuthParameters` or `ChallengeResponses`.
fn param<'a>(params: &'a BTreeMap<String, String>, name: &str) -> Result<&'a String> {
    params
        .get(name)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| invalid(format!("Missing required parameter {name}")))
}

/// The user a sign-in names, if there is one, once the client's secret hash and the source's
/// limit allow the attempt.
fn sign_in_user(
    cognito: &Cognito,
    source: Option<IpAddr>,
    pool: &Pool,
    client: &Client,
    params: &BTreeMap<String, String>,
    name: &str,
) -> Result<Option<User>> {
    crate::users::check_username(name)?;
    let user = cognito.pools.user(pool, name)?;
    let mut names = vec![name];
    if let Some(u) = &user {
        names.push(&u.username);
    }
    check_secret(
        client,
        params.get("SECRET_HASH").map(String::as_str),
        &names,
    )?;
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    Ok(user)
}

/// Signs in with a password (USER_PASSWORD_AUTH, ADMIN_USER_PASSWORD_AUTH).
#[allow(clippy::too_many_arguments)]
async fn password_sign_in(
    cognito: &Cognito,
    source: Option<IpAddr>,
    pool: &Pool,
    client: &Client,
    params: &BTreeMap<String, String>,
    metadata: &BTreeMap<String, String>,
    validation: Value,
) -> Result<Value> {
    let name = param(params, "USERNAME")?;
    let given = param(params, "PASSWORD")?;
    let user = sign_in_user(cognito, source, pool, client, params, name)?;
    let lock_key = user
        .as_ref()
        .map_or_else(|| name.to_lowercase(), |u| u.username.clone());
    if cognito.limiter.locked(&pool.id, &lock_key) {
        return Err(not_authorized("Password attempts exceeded"));
    }
    if let Some(u) = &user {
        let event = triggers::event(
            pool,
            Some(&client.id),
            &u.username,
            "PreAuthentication_Authentication",
            json!({
                "userAttributes": triggers::attributes(&u.attributes, Some(u.status.as_str())),
                "validationData": validation,
                "userNotFound": false,
            }),
            json!({}),
        );
        cognito
            .triggers
            .run(pool, "PreAuthentication", event)
            .await?;
    }
    let stored = user.as_ref().and_then(|u| u.password.as_deref());
    if !password::verify(given, stored).await? {
        cognito.limiter.failed(&pool.id, &lock_key);
        if user.is_none() && !client.hides_users() {
            return Err(CognitoError::new(
                "UserNotFoundException",
                "User does not exist.",
            ));
        }
        return Err(wrong_password());
    }
    let Some(user) = user else {
        return Err(wrong_password());
    };
    cognito.limiter.succeeded(&pool.id, &lock_key);
    signed_in(cognito, pool, client, user, metadata).await
}

/// What follows a proven password, whichever way it was proven: the user's state decides
/// between tokens, a challenge and a refusal.
async fn signed_in(
    cognito: &Cognito,
    pool: &Pool,
    client: &Client,
    user: User,
    metadata: &BTreeMap<String, String>,
) -> Result<Value> {
    if !user.enabled {
        return Err(not_authorized("User is disabled."));
    }
    match user.status {
        Status::Unconfirmed => {
            return Err(CognitoError::new(
                "UserNotConfirmedException",
                "User is not confirmed.",
            ));
        }
        Status::ResetRequired => {
            return Err(CognitoError::new(
                "PasswordResetRequiredException",
                "Password reset required for the user",
            ));
        }
        Status::ForceChangePassword => {
            if user.temporary_until_ms.is_some_and(|t| t <= now_ms()) {
                return Err(not_authorized(
                    "Temporary password has expired and must be reset by an administrator.",
                ));
            }
            let shown: Map<String, Value> = user
                .attributes
                .iter()
                .filter(|(k, _)| *k != "sub")
                .map(|(k, v)| (k.clone(), json!(v)))
                .collect();
            return Ok(json!({
                "ChallengeName": "NEW_PASSWORD_REQUIRED",
                "Session": session_for(cognito, pool, client, &user, "NEW_PASSWORD_REQUIRED"),
                "ChallengeParameters": {
                    "USER_ID_FOR_SRP": user.username,
                    "requiredAttributes": "[]",
                    "userAttributes": Value::Object(shown).to_string(),
                },
            }));
        }
        Status::Confirmed => {}
    }
    post_authentication(cognito, pool, client, &user, metadata).await?;
    issue(
        cognito,
        pool,
        client,
        &user,
        "TokenGeneration_Authentication",
        None,
        metadata,
    )
    .await
}

async fn post_authentication(
    cognito: &Cognito,
    pool: &Pool,
    client: &Client,
    user: &User,
    metadata: &BTreeMap<String, String>,
) -> Result<()> {
    let extra = json!({ "newDeviceUsed": false, "clientMetadata": metadata });
    cognito
        .triggers
        .tell(
            pool,
            Some(&client.id),
            user,
            "PostAuthentication",
            "PostAuthentication_Authentication",
            extra,
        )
        .await
}

/// REFRESH_TOKEN_AUTH: new ID and access tokens for a live refresh session.
async fn refresh(
    cognito: &Cognito,
    pool: &Pool,
    client: &Client,
    params: &BTreeMap<String, String>,
    metadata: &BTreeMap<String, String>,
) -> Result<Value> {
    let token = params
        .get("REFRESH_TOKEN")
        .filter(|t| !t.is_empty())
        .ok_or_else(|| invalid("Missing required parameter REFRESH_TOKEN"))?;
    let bad = || not_authorized("Invalid Refresh Token");
    let (jti, session) = cognito.pools.session(token)?.ok_or_else(|| {
        // A token of a signed-out session is indistinguishable from a made-up one, except
        // to its owner: say it was revoked when its form is right.
        if URL_SAFE_NO_PAD
            .decode(token.trim())
            .is_ok_and(|raw| raw.len() == 69)
        {
            not_authorized("Refresh Token has been revoked")
        } else {
            bad()
        }
    })?;
    if session.client_id != client.id || session.pool_id != pool.id {
        return Err(bad());
    }
    if session.expires_ms <= now_ms() {
        return Err(not_authorized("Refresh Token has expired"));
    }
    let user = cognito
        .pools
        .user(pool, &session.username)?
        .filter(|u| session.sub.is_empty() || u.sub() == session.sub)
        .ok_or_else(|| not_authorized("User does not exist."))?;
    let mut names = vec![user.username.as_str(), user.sub()];
    if let Some(u) = params.get("USERNAME") {
        names.push(u);
    }
    check_secret(
        client,
        params.get("SECRET_HASH").map(String::as_str),
        &names,
    )?;
    if !user.enabled {
        return Err(not_authorized("User is disabled."));
    }
    issue(
        cognito,
        pool,
        client,
        &user,
        "TokenGeneration_RefreshTokens",
        Some((jti, session.auth_time)),
        metadata,
    )
    .await
}

/// Whether `client` allows `flow`, or the error Cognito gives.
fn allowed(client: &Client, flow: &str, shown: &str) -> Result<()> {
    if client.allows(flow) {
        Ok(())
    } else {
        Err(invalid(format!("{shown} flow not enabled for this client")))
    }
}

async fn initiate(cognito: &Cognito, source: Option<IpAddr>, input: &Value) -> Result<Value> {
    let (pool, client) = client_of(cognito, input)?;
    let flow = required(input, "AuthFlow")?;
    let params = string_map(input, "AuthParameters")?;
    let metadata = string_map(input, "ClientMetadata")?;
    match flow {
        "USER_PASSWORD_AUTH" => {
            allowed(&client, "ALLOW_USER_PASSWORD_AUTH", flow)?;
            password_sign_in(
                cognito,
                source,
                &pool,
                &client,
                &params,
                &metadata,
                json!({}),
            )
            .await
        }
        "REFRESH_TOKEN_AUTH" | "REFRESH_TOKEN" => {
            allowed(&client, "ALLOW_REFRESH_TOKEN_AUTH", "REFRESH_TOKEN_AUTH")?;
            refresh(cognito, &pool, &client, &params, &metadata).await
        }
        "USER_SRP_AUTH" => {
            allowed(&client, "ALLOW_USER_SRP_AUTH", flow)?;
            srp_start(cognito, source, &pool, &client, &params).await
        }
        "CUSTOM_AUTH" | "USER_AUTH" => Err(invalid(format!(
            "{flow} is not available on nimbus: it has no challenge triggers"
        ))),
        "ADMIN_USER_PASSWORD_AUTH" | "ADMIN_NO_SRP_AUTH" => Err(invalid(format!(
            "Initiate Auth method not supported: {flow} is for AdminInitiateAuth"
        ))),
        other => Err(invalid(format!(
            "1 validation error detected: Value '{other}' at 'authFlow' failed to satisfy constraint: Member must satisfy enum value set: [USER_SRP_AUTH, REFRESH_TOKEN_AUTH, REFRESH_TOKEN, CUSTOM_AUTH, USER_PASSWORD_AUTH, ADMIN_USER_PASSWORD_AUTH, ADMIN_NO_SRP_AUTH, USER_AUTH]"
        ))),
    }
}

/// The client of an administrator's sign-in call: in the named pool.
fn admin_client(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<(Arc<Pool>, Arc<Client>)> {
    let pool = pool_of(cognito, account, input)?;
    let (client_pool, client) = client_of(cognito, input)?;
    if client_pool.id != pool.id {
        return Err(CognitoError::new(
            "ResourceNotFoundException",
            format!("User pool client {} does not exist.", client.id),
        ));
    }
    Ok((pool, client))
}

pub(crate) async fn admin_initiate(
    cognito: &Cognito,
    account: &str,
    source: Option<IpAddr>,
    input: &Value,
) -> Result<Value> {
    let (pool, client) = admin_client(cognito, account, input)?;
    let flow = required(input, "AuthFlow")?;
    let params = string_map(input, "AuthParameters")?;
    let metadata = string_map(input, "ClientMetadata")?;
    let validation = field(input, "ContextData").cloned().unwrap_or(json!({}));
    match flow {
        "ADMIN_USER_PASSWORD_AUTH" | "ADMIN_NO_SRP_AUTH" => {
            allowed(&client, "ALLOW_ADMIN_USER_PASSWORD_AUTH", flow)?;
            password_sign_in(
                cognito, source, &pool, &client, &params, &metadata, validation,
            )
            .await
        }
        "REFRESH_TOKEN_AUTH" | "REFRESH_TOKEN" => {
            allowed(&client, "ALLOW_REFRESH_TOKEN_AUTH", "REFRESH_TOKEN_AUTH")?;
            refresh(cognito, &pool, &client, &params, &metadata).await
        }
        other => Err(invalid(format!(
            "Initiate Auth method not supported: {other}"
        ))),
    }
}

pub(crate) async fn admin_respond(
    cognito: &Cognito,
    account: &str,
    input: &Value,
) -> Result<Value> {
    let (pool, _) = admin_client(cognito, account, input)?;
    respond(cognito, None, input, Some(&pool.id)).await
}

/// RespondToAuthChallenge: NEW_PASSWORD_REQUIRED, the only challenge nimbus poses.
async fn respond(
    cognito: &Cognito,
    source: Option<IpAddr>,
    input: &Value,
    admin_pool: Option<&str>,
) -> Result<Value> {
    let (pool, client) = client_of(cognito, input)?;
    if admin_pool.is_some_and(|p| p != pool.id) {
        return Err(CognitoError::new(
            "ResourceNotFoundException",
            format!("User pool client {} does not exist.", client.id),
        ));
    }
    let challenge = required(input, "ChallengeName")?;
    if challenge == "PASSWORD_VERIFIER" {
        let responses = string_map(input, "ChallengeResponses")?;
        let metadata = string_map(input, "ClientMetadata")?;
        return srp_finish(cognito, source, &pool, &client, &responses, &metadata).await;
    }
    if challenge != "NEW_PASSWORD_REQUIRED" {
        return Err(invalid(format!(
            "nimbus does not pose the {challenge} challenge"
        )));
    }
    let responses = string_map(input, "ChallengeResponses")?;
    let session = required(input, "Session")?;
    let (pool_id, client_id, username, named) = open_session(cognito, session)?;
    if pool_id != pool.id || client_id != client.id || named != challenge {
        return Err(not_authorized(
            "Invalid session for the user, session is expired.",
        ));
    }
    let given = responses
        .get("USERNAME")
        .ok_or_else(|| invalid("Missing required parameter USERNAME"))?;
    let user = cognito
        .pools
        .user(&pool, given)?
        .filter(|u| u.username == username)
        .ok_or_else(|| not_authorized("Invalid session for the user, session is expired."))?;
    check_secret(
        &client,
        responses.get("SECRET_HASH").map(String::as_str),
        &[given, &user.username],
    )?;
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    let new = responses
        .get("NEW_PASSWORD")
        .filter(|p| !p.is_empty())
        .ok_or_else(|| invalid("Missing required parameter NEW_PASSWORD"))?;
    password::check(&pool.settings.password_policy, new)?;
    let changes: Vec<(String, String)> = responses
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("userAttributes.")
                .map(|n| (n.to_owned(), v.clone()))
        })
        .collect();
    render::check_attributes(&pool, &changes, false, false)?;
    let (hash, srp) = secrets(&pool.id, &user.username, new).await?;
    let owned = pool.clone();
    let validity = cognito.code_validity_ms;
    let (ok, user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            if u.status != Status::ForceChangePassword {
                return Ok(false);
            }
            u.password = Some(hash);
            u.srp = Some(srp);
            u.issued_password = None;
            u.status = Status::Confirmed;
            u.temporary_until_ms = None;
            if !changes.is_empty() {
                apply_attributes(&owned, u, &changes, validity);
            }
            Ok(true)
        })
        .await?;
    if !ok {
        return Err(not_authorized(
            "Invalid session for the user, session is expired.",
        ));
    }
    let metadata = string_map(input, "ClientMetadata")?;
    post_authentication(cognito, &pool, &client, &user, &metadata).await?;
    issue(
        cognito,
        &pool,
        &client,
        &user,
        "TokenGeneration_NewPasswordChallenge",
        None,
        &metadata,
    )
    .await
}

// ---- a signed-in user's own operations ----

async fn get_user(cognito: &Cognito, input: &Value) -> Result<Value> {
    let (_, user, _) = bearer(cognito, input).await?;
    Ok(json!({
        "Username": user.username,
        "UserAttributes": render::attribute_list(&user, None),
        "MFAOptions": [],
        "UserMFASettingList": [],
    }))
}

async fn update_attributes(cognito: &Cognito, input: &Value) -> Result<Value> {
    let (pool, user, claims) = bearer(cognito, input).await?;
    let changes = attribute_list(input, "UserAttributes")?;
    if let Some(client) = claims
        .get("client_id")
        .and_then(Value::as_str)
        .and_then(|c| cognito.pools.client(c))
        && !client.write_attributes.is_empty()
        && let Some((name, _)) = changes
            .iter()
            .find(|(n, _)| !client.write_attributes.contains(n))
    {
        return Err(not_authorized(format!(
            "A client attempted to write unauthorized attribute {name}"
        )));
    }
    render::check_attributes(&pool, &changes, false, false)?;
    let owned = pool.clone();
    let validity = cognito.code_validity_ms;
    let (coded, user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            Ok(apply_attributes(&owned, u, &changes, validity))
        })
        .await?;
    let list: Vec<Value> = coded.iter().map(|a| render::delivery(&user, a)).collect();
    Ok(json!({ "CodeDeliveryDetailsList": list }))
}

async fn delete_user(cognito: &Cognito, input: &Value) -> Result<Value> {
    let (pool, user, _) = bearer(cognito, input).await?;
    cognito.pools.delete_user(&pool, &user.username).await?;
    Ok(json!({}))
}

async fn change_password(
    cognito: &Cognito,
    source: Option<IpAddr>,
    input: &Value,
) -> Result<Value> {
    let (pool, user, _) = bearer(cognito, input).await?;
    let previous = required(input, "PreviousPassword")?;
    let proposed = required(input, "ProposedPassword")?;
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    if cognito.limiter.locked(&pool.id, &user.username) {
        return Err(not_authorized("Password attempts exceeded"));
    }
    if !password::verify(previous, user.password.as_deref()).await? {
        cognito.limiter.failed(&pool.id, &user.username);
        return Err(wrong_password());
    }
    cognito.limiter.succeeded(&pool.id, &user.username);
    password::check(&pool.settings.password_policy, proposed)?;
    let (hash, srp) = secrets(&pool.id, &user.username, proposed).await?;
    cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            u.password = Some(hash);
            u.srp = Some(srp);
            u.issued_password = None;
            Ok(())
        })
        .await?;
    Ok(json!({}))
}

async fn forgot_password(
    cognito: &Cognito,
    source: Option<IpAddr>,
    input: &Value,
) -> Result<Value> {
    let (pool, user) = match addressee(cognito, source, input)? {
        Addressee::User(pool, user) => (pool, *user),
        Addressee::Nobody(answer) => return Ok(answer),
    };
    if !user.enabled {
        return Err(not_authorized("User is disabled."));
    }
    let Some(attr) = ["email", "phone_number"]
        .into_iter()
        .find(|a| user.verified(a))
    else {
        return Err(invalid(
            "Cannot reset password for the user as there is no registered/verified email or phone_number",
        ));
    };
    let owned = pool.clone();
    let validity = cognito.code_validity_ms;
    let ((), user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            u.reset_code = Some(code_for(&owned, u, CodeKind::Reset, validity));
            Ok(())
        })
        .await?;
    Ok(json!({ "CodeDeliveryDetails": render::delivery(&user, attr) }))
}

async fn confirm_forgot_password(
    cognito: &Cognito,
    source: Option<IpAddr>,
    input: &Value,
) -> Result<Value> {
    let (pool, client) = client_of(cognito, input)?;
    let name = required(input, "Username")?;
    let code = required(input, "ConfirmationCode")?.to_owned();
    let new = required(input, "Password")?;
    check_secret(&client, string(input, "SecretHash")?, &[name])?;
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    let user = named_user(cognito, &pool, &client, name, mismatch)?;
    password::check(&pool.settings.password_policy, new)?;
    guessing_allowed(cognito, &pool, &user)?;
    // The code first (spent if it matches), the costly hash only then: a wrong guess costs
    // the node no hashing.
    let (outcome, _) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            let outcome = checked(check_code(&mut u.reset_code, &code));
            if matches!(outcome, Checked::Matched) {
                u.reset_code = None;
            }
            Ok(outcome)
        })
        .await?;
    code_outcome(cognito, &pool, &user, outcome)?;
    let (hash, srp) = secrets(&pool.id, &user.username, new).await?;
    let ((), user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            u.password = Some(hash);
            u.srp = Some(srp);
            u.issued_password = None;
            u.status = Status::Confirmed;
            u.temporary_until_ms = None;
            Ok(())
        })
        .await?;
    cognito.limiter.succeeded(&pool.id, &user.username);
    post_confirmation(
        cognito,
        &pool,
        Some(&client.id),
        &user,
        "PostConfirmation_ConfirmForgotPassword",
        string_map(input, "ClientMetadata")?,
    )
    .await?;
    Ok(json!({}))
}

async fn global_sign_out(cognito: &Cognito, input: &Value) -> Result<Value> {
    let (pool, user, _) = bearer(cognito, input).await?;
    cognito.pools.end_sessions(&pool, &user.username).await?;
    Ok(json!({}))
}

async fn revoke_token(cognito: &Cognito, input: &Value) -> Result<Value> {
    let (_, client) = client_of(cognito, input)?;
    let token = required(input, "Token")?;
    if let Some(secret) = &client.secret {
        let given = string(input, "ClientSecret")?.unwrap_or("");
        if !nimbus_userpools::same_bytes(secret.as_bytes(), given.as_bytes()) {
            return Err(not_authorized("Client authentication failed."));
        }
    }
    if !client.enable_token_revocation {
        return Err(CognitoError::new(
            "UnsupportedOperationException",
            "Token revocation is not enabled for this client.",
        ));
    }
    match cognito.pools.session(token)? {
        Some((jti, s)) if s.client_id == client.id => cognito.pools.end_session(&jti).await?,
        Some(_) => {
            return Err(CognitoError::new(
                "UnauthorizedException",
                "The token was not issued to this client.",
            ));
        }
        // An unknown token is already as good as revoked (RFC 7009).
        None => {}
    }
    Ok(json!({}))
}

async fn attribute_code(cognito: &Cognito, input: &Value) -> Result<Value> {
    let (pool, user, _) = bearer(cognito, input).await?;
    let attr = required(input, "AttributeName")?;
    let attr: &'static str = match attr {
        "email" => "email",
        "phone_number" => "phone_number",
        other => return Err(invalid(format!("{other} cannot be verified"))),
    };
    if user.attribute(attr).is_none() {
        return Err(invalid(format!("The user has no {attr}")));
    }
    let owned = pool.clone();
    let validity = cognito.code_validity_ms;
    let ((), user) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            let code = code_for(&owned, u, CodeKind::Attribute, validity);
            u.attribute_codes.insert(attr.to_owned(), code);
            Ok(())
        })
        .await?;
    Ok(json!({ "CodeDeliveryDetails": render::delivery(&user, attr) }))
}

async fn verify_attribute(
    cognito: &Cognito,
    source: Option<IpAddr>,
    input: &Value,
) -> Result<Value> {
    let (pool, user, _) = bearer(cognito, input).await?;
    let attr = required(input, "AttributeName")?.to_owned();
    let code = required(input, "Code")?.to_owned();
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    guessing_allowed(cognito, &pool, &user)?;
    let (outcome, _) = cognito
        .pools
        .update_user(&pool, &user.username, move |u| {
            let mut slot = u.attribute_codes.remove(&attr);
            let outcome = checked(check_code(&mut slot, &code));
            match outcome {
                Checked::Matched => {
                    u.attributes
                        .insert(format!("{attr}_verified"), "true".into());
                }
                _ => {
                    if let Some(c) = slot {
                        u.attribute_codes.insert(attr.clone(), c);
                    }
                }
            }
            Ok(outcome)
        })
        .await?;
    code_outcome(cognito, &pool, &user, outcome)?;
    Ok(json!({}))
}

// ---- SRP ----

/// How long a `PASSWORD_VERIFIER` challenge may be answered.
const SRP_WINDOW: std::time::Duration = std::time::Duration::from_secs(180);

/// Attempts most kept waiting for their answer (each holds a few kilobytes of numbers).
const MAX_SRP_ATTEMPTS: usize = 10_000;

/// An SRP attempt between its two calls. The server's secret must never reach the client, so
/// attempts stay here, in memory, found by their secret block (a restart forgets them, and the
/// client starts again).
struct SrpAttempt {
    pool_id: String,
    client_id: String,
    /// The user's username, or the name given for a user who does not exist (`real` false).
    username: String,
    real: bool,
    challenge: nimbus_userpools::srp::Challenge,
    started: std::time::Instant,
}

/// The attempts waiting for their answer.
#[derive(Default)]
pub struct SrpAttempts {
    waiting: std::sync::Mutex<std::collections::HashMap<String, SrpAttempt>>,
}

impl SrpAttempts {
    fn put(&self, block: String, attempt: SrpAttempt) -> Result<()> {
        let mut waiting = self
            .waiting
            .lock()
            .map_err(|_| CognitoError::new("InternalErrorException", "Internal server error"))?;
        if waiting.len() >= MAX_SRP_ATTEMPTS {
            waiting.retain(|_, a| a.started.elapsed() < SRP_WINDOW);
            // Still full: whoever fills it does not lock everyone else out; a tenth of the
            // waiting attempts (in no particular order) make room, and their clients start over.
            if waiting.len() >= MAX_SRP_ATTEMPTS {
                let gone: Vec<String> = waiting
                    .keys()
                    .take(MAX_SRP_ATTEMPTS / 10)
                    .cloned()
                    .collect();
                for k in gone {
                    waiting.remove(&k);
                }
            }
        }
        waiting.insert(block, attempt);
        Ok(())
    }

    fn take(&self, block: &str) -> Option<SrpAttempt> {
        let attempt = self.waiting.lock().ok()?.remove(block)?;
        (attempt.started.elapsed() < SRP_WINDOW).then_some(attempt)
    }
}

/// USER_SRP_AUTH: the client's `SRP_A` in, the `PASSWORD_VERIFIER` challenge out. A user who
/// does not exist gets a challenge of the same shape that no answer satisfies.
async fn srp_start(
    cognito: &Cognito,
    source: Option<IpAddr>,
    pool: &Pool,
    client: &Client,
    params: &BTreeMap<String, String>,
) -> Result<Value> {
    let name = param(params, "USERNAME")?;
    let srp_a = param(params, "SRP_A")?.clone();
    let user = sign_in_user(cognito, source, pool, client, params, name)?;
    let (username, verifier) = match &user {
        Some(u) => (u.username.clone(), u.srp.clone()),
        None if !client.hides_users() => {
            return Err(CognitoError::new(
                "UserNotFoundException",
                "User does not exist.",
            ));
        }
        None => (name.clone(), None),
    };
    if cognito.limiter.locked(&pool.id, &username) {
        return Err(not_authorized("Password attempts exceeded"));
    }
    let real = verifier.is_some();
    let seed: [u8; 32] = {
        let mut mac = Hmac::<Sha256>::new_from_slice(cognito.pools.session_secret())
            .map_err(|_| nimbus_userpools::Error::storage("a bad node secret"))?;
        mac.update(b"srp-decoy\0");
        mac.update(pool.id.as_bytes());
        mac.update(b"\0");
        mac.update(name.to_lowercase().as_bytes());
        mac.finalize().into_bytes().into()
    };
    let challenge = tokio::task::spawn_blocking(move || match verifier {
        Some(v) => nimbus_userpools::srp::challenge(&srp_a, &v),
        None => nimbus_userpools::srp::decoy(&srp_a, &seed),
    })
    .await
    .map_err(|e| nimbus_userpools::Error::storage(e.to_string()))?
    .ok_or_else(|| invalid("SRP_A is not a valid value"))?;
    let mut block = [0u8; 48];
    nimbus_userpools::random_bytes(&mut block);
    let block = STANDARD.encode(block);
    let out = json!({
        "ChallengeName": "PASSWORD_VERIFIER",
        "ChallengeParameters": {
            "SALT": challenge.salt,
            "SECRET_BLOCK": block,
            "SRP_B": challenge.srp_b,
            "USERNAME": username,
            "USER_ID_FOR_SRP": username,
        },
    });
    cognito.srp.put(
        block,
        SrpAttempt {
            pool_id: pool.id.clone(),
            client_id: client.id.clone(),
            username,
            real,
            challenge,
            started: std::time::Instant::now(),
        },
    )?;
    Ok(out)
}

/// The `PASSWORD_VERIFIER` answer: the client's signature checked against the session key
/// only the password's holder can derive.
async fn srp_finish(
    cognito: &Cognito,
    source: Option<IpAddr>,
    pool: &Pool,
    client: &Client,
    responses: &BTreeMap<String, String>,
    metadata: &BTreeMap<String, String>,
) -> Result<Value> {
    let block = param(responses, "PASSWORD_CLAIM_SECRET_BLOCK")?;
    let signature = param(responses, "PASSWORD_CLAIM_SIGNATURE")?;
    let timestamp = param(responses, "TIMESTAMP")?;
    if timestamp.len() > 64 {
        return Err(invalid("TIMESTAMP is not a valid value"));
    }
    let attempt = cognito
        .srp
        .take(block)
        .filter(|a| a.pool_id == pool.id && a.client_id == client.id)
        .ok_or_else(wrong_password)?;
    let mut names = vec![attempt.username.as_str()];
    if let Some(u) = responses.get("USERNAME") {
        names.push(u);
    }
    check_secret(
        client,
        responses.get("SECRET_HASH").map(String::as_str),
        &names,
    )?;
    if !cognito.limiter.source_allows(source) {
        return Err(too_many());
    }
    if cognito.limiter.locked(&pool.id, &attempt.username) {
        return Err(not_authorized("Password attempts exceeded"));
    }
    let block_bytes = STANDARD.decode(block).map_err(|_| wrong_password())?;
    let given = STANDARD.decode(signature).unwrap_or_default();
    let (pool_id, username, timestamp) =
        (pool.id.clone(), attempt.username.clone(), timestamp.clone());
    let challenge = attempt.challenge;
    let expected = tokio::task::spawn_blocking(move || {
        nimbus_userpools::srp::expected_signature(
            &challenge,
            &pool_id,
            &username,
            &block_bytes,
            &timestamp,
        )
    })
    .await
    .map_err(|e| nimbus_userpools::Error::storage(e.to_string()))?;
    let proven = attempt.real && expected.is_some_and(|e| nimbus_userpools::same_bytes(&e, &given));
    if !proven {
        cognito.limiter.failed(&pool.id, &attempt.username);
        return Err(wrong_password());
    }
    cognito.limiter.succeeded(&pool.id, &attempt.username);
    let user = cognito
        .pools
        .user(pool, &attempt.username)?
        .ok_or_else(wrong_password)?;
    signed_in(cognito, pool, client, user, metadata).await
}
