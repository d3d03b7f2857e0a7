//! The pool's tokens: RS256 JWTs signed with the pool's own RSA key (`kid` in the header, as
//! Cognito signs), their verification, and the key set the pool publishes.
//!
//! Keys are made with the `rsa` crate (ring cannot generate RSA keys) and used with ring,
//! whose signing does not have the timing leak the `rsa` crate's private-key operations do.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use ring::signature::{self, RsaKeyPair, RsaPublicKeyComponents};
use serde_json::{Map, Value, json};
use sha2::Digest;

use crate::model::{Pool, SigningKey};
use crate::{Error, Kind};

/// The size of a pool's keys.
pub const KEY_BITS: usize = 2048;

/// Makes a new signing key (about 0.1–1 s of CPU: call it off the async threads).
pub fn generate(now_ms: i64) -> Result<SigningKey, Error> {
    use rsa::pkcs8::EncodePrivateKey;
    use rsa::traits::PublicKeyParts;
    let key = rsa::RsaPrivateKey::new(&mut rand_core::OsRng, KEY_BITS)
        .map_err(|e| Error::storage(format!("making a signing key failed: {e}")))?;
    let der = key
        .to_pkcs8_der()
        .map_err(|e| Error::storage(format!("encoding a signing key failed: {e}")))?;
    let n = URL_SAFE_NO_PAD.encode(key.n().to_bytes_be());
    let e = URL_SAFE_NO_PAD.encode(key.e().to_bytes_be());
    // The key's RFC 7638 thumbprint: the hash of its members in a fixed order.
    let thumbprint = sha2::Sha256::digest(format!(r#"{{"e":"{e}","kty":"RSA","n":"{n}"}}"#));
    Ok(SigningKey {
        kid: STANDARD.encode(thumbprint),
        pkcs8: STANDARD.encode(der.as_bytes()),
        n,
        e,
        created_ms: now_ms,
        retired_ms: None,
    })
}

/// The key set a pool publishes at `/.well-known/jwks.json`.
pub fn jwks(pool: &Pool) -> Value {
    let keys: Vec<Value> = pool
        .keys
        .iter()
        .map(|k| json!({ "alg": "RS256", "e": k.e, "kid": k.kid, "kty": "RSA", "n": k.n, "use": "sig" }))
        .collect();
    json!({ "keys": keys })
}

/// Signing keys parsed once, by `kid`.
#[derive(Default)]
pub struct Signer {
    parsed: Mutex<HashMap<String, Arc<RsaKeyPair>>>,
}

impl Signer {
    fn key_pair(&self, key: &SigningKey) -> Result<Arc<RsaKeyPair>, Error> {
        if let Some(k) = self
            .parsed
            .lock()
            .ok()
            .and_then(|m| m.get(&key.kid).cloned())
        {
            return Ok(k);
        }
        let der = STANDARD
            .decode(&key.pkcs8)
            .map_err(|_| Error::storage("a damaged signing key"))?;
        let pair = Arc::new(
            RsaKeyPair::from_pkcs8(&der)
                .map_err(|e| Error::storage(format!("a damaged signing key: {e}")))?,
        );
        if let Ok(mut m) = self.parsed.lock() {
            m.insert(key.kid.clone(), pair.clone());
        }
        Ok(pair)
    }

    /// A JWT of `claims`, signed with the pool's active key.
    pub fn sign(&self, pool: &Pool, claims: &Map<String, Value>) -> Result<String, Error> {
        let key = pool
            .active_key()
            .ok_or_else(|| Error::storage("the pool has no signing key"))?;
        let pair = self.key_pair(key)?;
        let header = json!({ "kid": key.kid, "alg": "RS256" });
        let mut token = URL_SAFE_NO_PAD.encode(header.to_string());
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(Value::Object(claims.clone()).to_string()));
        let mut sig = vec![0u8; pair.public().modulus_len()];
        pair.sign(
            &signature::RSA_PKCS1_SHA256,
            &ring::rand::SystemRandom::new(),
            token.as_bytes(),
            &mut sig,
        )
        .map_err(|_| Error::storage("signing a token failed"))?;
        token.push('.');
        token.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(token)
    }
}

/// The pool a token claims to come from (its `iss`'s last segment), read without checking it.
pub fn claimed_pool(token: &str) -> Option<String> {
    let payload = token.split('.').nth(1)?;
    let claims: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
    let iss = claims.get("iss")?.as_str()?;
    Some(iss.rsplit('/').next()?.to_owned())
}

/// Checks a token of `pool`: its form, algorithm, signature by one of the pool's keys, issuer,
/// expiry and use. Every failure is Cognito's `NotAuthorizedException`.
pub fn verify(
    pool: &Pool,
    issuer: &str,
    token: &str,
    token_use: &str,
    now_s: i64,
) -> Result<Map<String, Value>, Error> {
    let invalid = || {
        Error::new(
            Kind::NotAuthorized,
            match token_use {
                "access" => "Invalid Access Token",
                _ => "Invalid ID Token",
            },
        )
    };
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) =
        (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return Err(invalid());
    };
    let header: Value = URL_SAFE_NO_PAD
        .decode(h)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    if header.get("alg").and_then(Value::as_str) != Some("RS256") {
        return Err(invalid());
    }
    let kid = header
        .get("kid")
        .and_then(Value::as_str)
        .ok_or_else(invalid)?;
    let key = pool
        .keys
        .iter()
        .find(|k| k.kid == kid)
        .ok_or_else(invalid)?;
    let (n, e) = (
        URL_SAFE_NO_PAD.decode(&key.n).map_err(|_| invalid())?,
        URL_SAFE_NO_PAD.decode(&key.e).map_err(|_| invalid())?,
    );
    let sig = URL_SAFE_NO_PAD.decode(s).map_err(|_| invalid())?;
    let signed = &token[..h.len() + 1 + p.len()];
    RsaPublicKeyComponents { n: &n, e: &e }
        .verify(
            &signature::RSA_PKCS1_2048_8192_SHA256,
            signed.as_bytes(),
            &sig,
        )
        .map_err(|_| invalid())?;
    let claims: Map<String, Value> = URL_SAFE_NO_PAD
        .decode(p)
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok())
        .ok_or_else(invalid)?;
    if claims.get("iss").and_then(Value::as_str) != Some(issuer)
        || claims.get("token_use").and_then(Value::as_str) != Some(token_use)
    {
        return Err(invalid());
    }
    let exp = claims
        .get("exp")
        .and_then(Value::as_i64)
        .ok_or_else(invalid)?;
    if exp <= now_s {
        return Err(Error::new(
            Kind::NotAuthorized,
            match token_use {
                "access" => "Access Token has expired",
                _ => "ID Token has expired",
            },
        ));
    }
    Ok(claims)
}
