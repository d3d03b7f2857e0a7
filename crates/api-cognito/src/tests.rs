//! The protocol in-process: what needs a clock or a key the end-to-end tests cannot reach.

use std::sync::Arc;

use axum::body::Body;
use axum::http::HeaderMap;
use serde_json::{Value, json};

use super::*;

fn service() -> (Cognito, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let pools = Arc::new(UserPools::open(dir.path(), "us-east-1").unwrap());
    let cognito = Cognito {
        pools,
        issuer_base: "http://127.0.0.1:9000".into(),
        triggers: Triggers { control: None },
        limiter: Limiter::default(),
        code_validity_ms: 60_000,
        srp: SrpAttempts::default(),
    };
    (cognito, dir)
}

async fn call(cognito: &Cognito, caller: Option<&Caller>, op: &str, input: Value) -> (u16, Value) {
    let request = Request {
        caller,
        source: Some("192.0.2.7".parse().unwrap()),
    };
    let response = handle(
        cognito,
        request,
        op,
        &HeaderMap::new(),
        Body::from(input.to_string()),
    )
    .await;
    let status = response.status().as_u16();
    let bytes = axum::body::to_bytes(response.into_body(), 1 << 20)
        .await
        .unwrap();
    (status, serde_json::from_slice(&bytes).unwrap())
}

#[tokio::test]
async fn expired_and_foreign_access_tokens_are_refused_at_get_user() {
    let (cognito, _dir) = service();
    let admin = Caller::root("000000000000");
    let (status, pool) = call(
        &cognito,
        Some(&admin),
        "CreateUserPool",
        json!({ "PoolName": "p" }),
    )
    .await;
    assert_eq!(status, 200, "{pool}");
    let pool_id = pool["UserPool"]["Id"].as_str().unwrap().to_owned();
    let (_, client) = call(
        &cognito,
        Some(&admin),
        "CreateUserPoolClient",
        json!({ "UserPoolId": pool_id, "ClientName": "c", "ExplicitAuthFlows": ["ALLOW_USER_PASSWORD_AUTH"] }),
    )
    .await;
    let client_id = client["UserPoolClient"]["ClientId"]
        .as_str()
        .unwrap()
        .to_owned();
    let (status, out) = call(
        &cognito,
        Some(&admin),
        "AdminCreateUser",
        json!({ "UserPoolId": pool_id, "Username": "zoe", "TemporaryPassword": "Temp-Pass1!" }),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let (_, _) = call(
        &cognito,
        Some(&admin),
        "AdminSetUserPassword",
        json!({ "UserPoolId": pool_id, "Username": "zoe", "Password": "Perm-Pass1!", "Permanent": true }),
    )
    .await;
    let (status, signed) = call(
        &cognito,
        None,
        "InitiateAuth",
        json!({ "ClientId": client_id, "AuthFlow": "USER_PASSWORD_AUTH",
                "AuthParameters": { "USERNAME": "zoe", "PASSWORD": "Perm-Pass1!" } }),
    )
    .await;
    assert_eq!(status, 200, "{signed}");
    let access = signed["AuthenticationResult"]["AccessToken"]
        .as_str()
        .unwrap();
    let (status, _) = call(&cognito, None, "GetUser", json!({ "AccessToken": access })).await;
    assert_eq!(status, 200);
    // The same claims, an hour in the past, signed with the pool's own key.
    let pool = cognito.pools.pool(&pool_id).unwrap();
    let mut claims = tokens_claims(access);
    let now = nimbus_types::time::now_ms() / 1000;
    claims.insert("iat".into(), json!(now - 7200));
    claims.insert("exp".into(), json!(now - 3600));
    let expired = cognito.pools.signer.sign(&pool, &claims).unwrap();
    let (status, err) = call(&cognito, None, "GetUser", json!({ "AccessToken": expired })).await;
    assert_eq!(status, 400);
    assert_eq!(err["__type"], "NotAuthorizedException");
    assert_eq!(err["message"], "Access Token has expired");
    // Signed by another pool's key but claiming this pool: refused.
    let (_, other) = call(
        &cognito,
        Some(&admin),
        "CreateUserPool",
        json!({ "PoolName": "q" }),
    )
    .await;
    let other = cognito
        .pools
        .pool(other["UserPool"]["Id"].as_str().unwrap())
        .unwrap();
    let foreign = cognito
        .pools
        .signer
        .sign(&other, &tokens_claims(access))
        .unwrap();
    let (_, err) = call(&cognito, None, "GetUser", json!({ "AccessToken": foreign })).await;
    assert_eq!(err["__type"], "NotAuthorizedException");
    // A trigger that cannot run refuses the operation instead of being skipped.
    let (status, out) = call(
        &cognito,
        Some(&admin),
        "UpdateUserPool",
        json!({ "UserPoolId": pool_id, "LambdaConfig": {
            "PostAuthentication": "arn:aws:lambda:us-east-1:000000000000:function:f" } }),
    )
    .await;
    assert_eq!(status, 200, "{out}");
    let (_, err) = call(
        &cognito,
        None,
        "InitiateAuth",
        json!({ "ClientId": client_id, "AuthFlow": "USER_PASSWORD_AUTH",
                "AuthParameters": { "USERNAME": "zoe", "PASSWORD": "Perm-Pass1!" } }),
    )
    .await;
    assert_eq!(err["__type"], "UserLambdaValidationException");
    // Administrators' operations need a signed caller.
    let (_, err) = call(
        &cognito,
        None,
        "ListUsers",
        json!({ "UserPoolId": pool_id }),
    )
    .await;
    assert_eq!(err["__type"], "MissingAuthenticationTokenException");
}

fn tokens_claims(token: &str) -> serde_json::Map<String, Value> {
    use base64::Engine;
    let payload = token.split('.').nth(1).unwrap();
    let bytes = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(payload)
        .unwrap();
    serde_json::from_slice(&bytes).unwrap()
}

#[test]
fn secret_hashes_are_cognitos() {
    // HMAC-SHA256(secret, username + client id), base64: the value the SDKs compute.
    assert_eq!(
        auth::secret_hash("secret", "alice", "client"),
        "RTsve+FQ659UKyESgvLg9GYmZEL+QjzQsW/OjL77/b0="
    );
}

#[test]
fn issuer_documents_are_told_apart_from_other_paths() {
    assert!(is_issuer_document("/us-east-1_abc/.well-known/jwks.json"));
    assert!(is_issuer_document(
        "/us-east-1_abc/.well-known/openid-configuration"
    ));
    assert!(!is_issuer_document("/bucket/.well-known/jwks.json"));
    assert!(!is_issuer_document("/us-east-1_abc/other"));
    assert!(!is_issuer_document("/2015-03-31/functions"));
}
