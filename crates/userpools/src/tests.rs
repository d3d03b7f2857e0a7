use std::collections::{BTreeMap, BTreeSet};

use serde_json::{Map, json};

use super::*;
use crate::model::{Client, PoolSettings, Status, User, Validity};

fn store() -> (UserPools, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    (UserPools::open(dir.path(), "us-east-1").unwrap(), dir)
}

fn user(name: &str, email: Option<&str>) -> User {
    let mut attributes = BTreeMap::new();
    attributes.insert("sub".to_owned(), uuid::Uuid::new_v4().to_string());
    if let Some(e) = email {
        attributes.insert("email".to_owned(), e.to_owned());
        attributes.insert("email_verified".to_owned(), "true".to_owned());
    }
    User {
        username: name.to_owned(),
        attributes,
        password: None,
        srp: None,
        status: Status::Confirmed,
        enabled: true,
        created_ms: 0,
        modified_ms: 0,
        groups: BTreeSet::new(),
        signup_code: None,
        reset_code: None,
        attribute_codes: BTreeMap::new(),
        temporary_until_ms: None,
        issued_password: None,
    }
}

fn client(pool: &Pool) -> Client {
    Client {
        id: random_string(b"abcdefghijklmnopqrstuvwxyz0123456789", 26),
        pool_id: pool.id.clone(),
        name: "app".into(),
        secret: None,
        explicit_auth_flows: vec![],
        validity: Validity::default(),
        units: BTreeMap::new(),
        prevent_user_existence_errors: "ENABLED".into(),
        enable_token_revocation: true,
        read_attributes: vec![],
        write_attributes: vec![],
        created_ms: 0,
        modified_ms: 0,
    }
}

#[tokio::test]
async fn pools_and_clients_survive_a_restart_and_the_file_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let (pool_id, client_id) = {
        let s = UserPools::open(dir.path(), "eu-west-1").unwrap();
        let pool = s
            .create_pool("111111111111", "users", PoolSettings::default())
            .await
            .unwrap();
        assert!(pool.id.starts_with("eu-west-1_") && pool.id.len() == "eu-west-1_".len() + 9);
        let c = s.put_client(client(&pool)).await.unwrap();
        s.close();
        (pool.id.clone(), c.id.clone())
    };
    let s = UserPools::open(dir.path(), "eu-west-1").unwrap();
    let pool = s.pool(&pool_id).unwrap();
    assert_eq!(pool.name, "users");
    assert!(s.pool_of("222222222222", &pool_id).is_err());
    assert_eq!(s.clients(&pool_id)[0].id, client_id);
    let mode = std::fs::metadata(dir.path().join("userpools.redb"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o077, 0, "the file holds private keys: {mode:o}");
}

#[tokio::test]
async fn users_are_found_by_name_alias_and_sub_and_aliases_stay_unique() {
    let (s, _dir) = store();
    let settings = PoolSettings {
        alias_attributes: vec!["email".into()],
        ..PoolSettings::default()
    };
    let pool = s.create_pool("1", "p", settings).await.unwrap();
    let alice = s
        .create_user(&pool, user("Alice", Some("Alice@Example.com")))
        .await
        .unwrap();
    // Usernames compare without case (the pool is not case sensitive).
    assert_eq!(s.user(&pool, "alice").unwrap().unwrap().username, "Alice");
    assert_eq!(
        s.user(&pool, "alice@example.com")
            .unwrap()
            .unwrap()
            .username,
        "Alice"
    );
    assert_eq!(
        s.user(&pool, alice.sub()).unwrap().unwrap().username,
        "Alice"
    );
    let err = s.create_user(&pool, user("ALICE", None)).await.unwrap_err();
    assert_eq!(err.kind, Kind::UsernameExists);
    let err = s
        .create_user(&pool, user("bob", Some("alice@example.com")))
        .await
        .unwrap_err();
    assert_eq!(err.kind, Kind::UsernameExists);
    // Bob without the address, then trying to take it: refused, nothing changed.
    s.create_user(&pool, user("bob", None)).await.unwrap();
    let err = s
        .update_user(&pool, "bob", |u| {
            u.attributes
                .insert("email".into(), "ALICE@example.com".into());
            u.attributes.insert("email_verified".into(), "true".into());
            Ok(())
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, Kind::AliasExists);
    assert!(
        s.user(&pool, "bob")
            .unwrap()
            .unwrap()
            .attribute("email")
            .is_none()
    );
    // Alice changes her address: the old alias goes, the new one finds her.
    s.update_user(&pool, "alice", |u| {
        u.attributes.insert("email".into(), "a2@example.com".into());
        Ok(())
    })
    .await
    .unwrap();
    assert!(s.user(&pool, "alice@example.com").unwrap().is_none());
    assert_eq!(
        s.user(&pool, "a2@example.com").unwrap().unwrap().username,
        "Alice"
    );
    // An error inside the change leaves the user as it was.
    let err = s
        .update_user(&pool, "alice", |u| {
            u.enabled = false;
            Err::<(), _>(Error::invalid("no"))
        })
        .await
        .unwrap_err();
    assert_eq!(err.kind, Kind::InvalidParameter);
    assert!(s.user(&pool, "alice").unwrap().unwrap().enabled);
    s.delete_user(&pool, "a2@example.com").await.unwrap();
    assert!(s.user(&pool, "alice").unwrap().is_none());
    assert!(s.user(&pool, alice.sub()).unwrap().is_none());
    assert_eq!(s.user_count(&pool.id).unwrap(), 1);
}

#[tokio::test]
async fn listing_pages_through_users_in_order() {
    let (s, _dir) = store();
    let pool = s
        .create_pool("1", "p", PoolSettings::default())
        .await
        .unwrap();
    for i in 0..7 {
        s.create_user(&pool, user(&format!("u{i}"), None))
            .await
            .unwrap();
    }
    let (first, next) = s.list_users(&pool, None, 3, |_| true).unwrap();
    assert_eq!(
        first
            .iter()
            .map(|u| u.username.as_str())
            .collect::<Vec<_>>(),
        ["u0", "u1", "u2"]
    );
    let (second, next) = s.list_users(&pool, next.as_deref(), 3, |_| true).unwrap();
    assert_eq!(second[0].username, "u3");
    let (third, next) = s.list_users(&pool, next.as_deref(), 3, |_| true).unwrap();
    assert_eq!(third.len(), 1);
    assert!(next.is_none());
    let (odd, _) = s
        .list_users(&pool, None, 60, |u| u.username.ends_with(['1', '3', '5']))
        .unwrap();
    assert_eq!(odd.len(), 3);
}

#[tokio::test]
async fn refresh_sessions_verify_their_secret_and_end_on_sign_out() {
    let (s, _dir) = store();
    let pool = s
        .create_pool("1", "p", PoolSettings::default())
        .await
        .unwrap();
    let c = s.put_client(client(&pool)).await.unwrap();
    let u = s.create_user(&pool, user("carol", None)).await.unwrap();
    let jti = uuid::Uuid::new_v4().to_string();
    let token = s.open_session(&pool, &c, &u, &jti, 42).await.unwrap();
    let (found, session) = s.session(&token).unwrap().unwrap();
    assert_eq!((found.as_str(), session.auth_time), (jti.as_str(), 42));
    // The same id with another secret is refused.
    let mut raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(&token)
        .unwrap();
    raw[40] ^= 1;
    let forged = base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw);
    assert!(s.session(&forged).unwrap().is_none());
    assert!(s.session("garbage").unwrap().is_none());
    let other = s
        .open_session(&pool, &c, &u, &uuid::Uuid::new_v4().to_string(), 1)
        .await
        .unwrap();
    s.end_sessions(&pool, "CAROL").await.unwrap();
    assert!(s.session(&token).unwrap().is_none());
    assert!(s.session(&other).unwrap().is_none());
}

#[tokio::test]
async fn tokens_verify_with_the_pool_keys_until_tampered_expired_or_rotated_away() {
    let (s, _dir) = store();
    let pool = s
        .create_pool("1", "p", PoolSettings::default())
        .await
        .unwrap();
    let other = s
        .create_pool("1", "q", PoolSettings::default())
        .await
        .unwrap();
    let iss = format!("http://127.0.0.1:9000/{}", pool.id);
    let claims = |exp: i64| -> Map<String, serde_json::Value> {
        json!({ "iss": iss, "token_use": "access", "exp": exp, "sub": "x" })
            .as_object()
            .unwrap()
            .clone()
    };
    let token = s.signer.sign(&pool, &claims(2_000_000_000)).unwrap();
    assert_eq!(
        tokens::claimed_pool(&token).as_deref(),
        Some(pool.id.as_str())
    );
    tokens::verify(&pool, &iss, &token, "access", 1_000).unwrap();
    assert!(tokens::verify(&pool, &iss, &token, "id", 1_000).is_err());
    assert!(tokens::verify(&other, &iss, &token, "access", 1_000).is_err());
    let expired = s.signer.sign(&pool, &claims(999)).unwrap();
    let err = tokens::verify(&pool, &iss, &expired, "access", 1_000).unwrap_err();
    assert_eq!(err.message, "Access Token has expired");
    let mut parts: Vec<String> = token.split('.').map(str::to_owned).collect();
    parts[1] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(json!({ "iss": iss, "token_use": "access", "exp": 2_000_000_001i64 }).to_string());
    assert!(tokens::verify(&pool, &iss, &parts.join("."), "access", 1_000).is_err());
    // `alg: none` is never accepted.
    let none = format!(
        "{}.{}.",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(r#"{"alg":"none"}"#),
        token.split('.').nth(1).unwrap()
    );
    assert!(tokens::verify(&pool, &iss, &none, "access", 1_000).is_err());
    // After a rotation the old key still verifies (it stays published), the new one signs.
    let rotated = s.rotate_key(&pool.id).await.unwrap();
    assert_eq!(rotated.keys.len(), 2);
    assert_eq!(tokens::jwks(&rotated)["keys"].as_array().unwrap().len(), 2);
    tokens::verify(&rotated, &iss, &token, "access", 1_000).unwrap();
    let fresh = s.signer.sign(&rotated, &claims(2_000_000_000)).unwrap();
    let kid = |t: &str| {
        let h = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(t.split('.').next().unwrap())
            .unwrap();
        serde_json::from_slice::<serde_json::Value>(&h).unwrap()["kid"].clone()
    };
    assert_ne!(kid(&fresh), kid(&token));
    assert_eq!(kid(&fresh), json!(rotated.active_key().unwrap().kid));
}

#[tokio::test]
async fn deleting_a_pool_takes_everything_of_it() {
    let (s, _dir) = store();
    let pool = s
        .create_pool("1", "p", PoolSettings::default())
        .await
        .unwrap();
    let c = s.put_client(client(&pool)).await.unwrap();
    let u = s
        .create_user(&pool, user("dave", Some("d@example.com")))
        .await
        .unwrap();
    let token = s
        .open_session(&pool, &c, &u, &uuid::Uuid::new_v4().to_string(), 1)
        .await
        .unwrap();
    s.delete_pool(&pool.id).await.unwrap();
    assert!(s.pool(&pool.id).is_none());
    assert!(s.client(&c.id).is_none());
    assert!(s.session(&token).unwrap().is_none());
    assert_eq!(s.user_count(&pool.id).unwrap(), 0);
    assert_eq!(
        s.delete_pool(&pool.id).await.unwrap_err().kind,
        Kind::ResourceNotFound
    );
}
