//! JWT authorizers: a route's token checked as API Gateway checks it. The issuer's signing
//! keys come from its OpenID discovery document (`{issuer}/.well-known/openid-configuration`,
//! then its `jwks_uri`), are cached per issuer, and are fetched again when a token names a key
//! the cache lacks (at most once per [`REFETCH_AFTER`], so forged key ids cannot make the node
//! hammer an issuer). RS256 and ES256 signatures; `iss`, `aud` (or an access token's
//! `client_id`), `exp` and `nbf` checked; `none` and every other algorithm refused.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{Map, Value};

/// How soon an issuer's keys may be fetched again for an unknown key id.
pub const REFETCH_AFTER: Duration = Duration::from_secs(30);

/// How long fetched keys are trusted before they are fetched again.
const KEYS_TTL: Duration = Duration::from_secs(3600);

#[derive(Clone)]
enum Key {
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    /// An uncompressed P-256 point: 0x04, x, y.
    P256(Vec<u8>),
}

struct IssuerKeys {
    keys: HashMap<String, Key>,
    fetched: Instant,
    /// How long these keys are trusted.
    ttl: Duration,
}

/// Why a token is refused: `Unauthorized` (401) or, for a valid token without a route's
/// scope, `Forbidden` (403).
#[derive(Debug, PartialEq, Eq)]
pub enum Refusal {
    Unauthorized(String),
    Forbidden,
}

fn unauthorized(why: impl Into<String>) -> Refusal {
    Refusal::Unauthorized(why.into())
}

/// A verified token's claims and scopes.
pub struct Verified {
    pub claims: Arc<Map<String, Value>>,
    pub scopes: Vec<String>,
    /// `requestContext.authorizer` as API Gateway fills it for the token: `{"jwt": {"claims",
    /// "scopes"}}`, every claim as a string.
    pub context: Arc<Value>,
}

/// A token whose signature verified, kept so that its next uses skip the signature and the
/// decoding: what is checked on every use (expiry, audience, scopes) is checked again from here.
struct Checked {
    issuer: String,
    kid: String,
    claims: Arc<Map<String, Value>>,
    exp: Option<i64>,
    nbf: Option<i64>,
    audiences: Vec<String>,
    granted: Vec<String>,
    context: Arc<Value>,
}

/// `requestContext.authorizer` for a token: its claims as strings, its scopes (null if none).
fn authorizer_context(claims: &Map<String, Value>, granted: &[String]) -> Value {
    let claims: Map<String, Value> = claims
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (k.clone(), Value::String(v))
        })
        .collect();
    let scopes = if granted.is_empty() {
        Value::Null
    } else {
        granted.into()
    };
    serde_json::json!({ "jwt": { "claims": claims, "scopes": scopes } })
}

/// The most verified tokens kept; past it the cache starts over.
const MAX_CHECKED: usize = 4096;

/// Tokens longer than this are verified every time, never kept: the cache holds at most
/// `MAX_CHECKED` × this many bytes of them.
const MAX_CHECKED_TOKEN: usize = 8 * 1024;

/// How long the keys of an issuer on this node are trusted before they are read again (cheap:
/// in-process), so that a deleted pool's tokens stop being accepted within this time.
const LOCAL_KEYS_TTL: Duration = Duration::from_secs(60);

/// The key set of an issuer this node is itself (a user pool's), if `issuer` is one.
pub type LocalIssuers = std::sync::Arc<dyn Fn(&str) -> Option<Value> + Send + Sync>;

#[derive(Default)]
pub struct Verifier {
    issuers: Mutex<HashMap<String, IssuerKeys>>,
    /// Tokens already verified, by their text.
    checked: Mutex<HashMap<String, Arc<Checked>>>,
    /// Issuers served by this node, whose keys are read in-process instead of over HTTP.
    local: Option<LocalIssuers>,
    /// This node's issuer for another name of it (Cognito's issuer URL of a local pool).
    aliases: Option<IssuerAliases>,
}

/// This node's issuer URL for an issuer URL that names one of its pools another way.
pub type IssuerAliases = std::sync::Arc<dyn Fn(&str) -> Option<String> + Send + Sync>;

fn b64(part: &str) -> Result<Vec<u8>, Refusal> {
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(part.trim_end_matches('='))
        .map_err(|_| unauthorized("the token is not base64url"))
}

/// Fetches an issuer's keys: discovery document, then the key set.
fn fetch_keys(issuer: &str) -> Result<HashMap<String, Key>, String> {
    let agent = ureq::Agent::config_builder()
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .new_agent();
    let get = |url: &str| -> Result<Value, String> {
        agent
            .get(url)
            .call()
            .map_err(|e| format!("{url}: {e}"))?
            .body_mut()
            .with_config()
            .limit(1 << 20)
            .read_json::<Value>()
            .map_err(|e| format!("{url}: {e}"))
    };
    let discovery = get(&format!(
        "{}/.well-known/openid-configuration",
        issuer.trim_end_matches('/')
    ))?;
    let jwks_uri = discovery
        .get("jwks_uri")
        .and_then(Value::as_str)
        .ok_or("the discovery document has no jwks_uri")?;
    parse_jwks(&get(jwks_uri)?)
}

/// The usable keys of a JWK set, by `kid`.
fn parse_jwks(jwks: &Value) -> Result<HashMap<String, Key>, String> {
    let mut keys = HashMap::new();
    for jwk in jwks
        .get("keys")
        .and_then(Value::as_array)
        .ok_or("the key set has no keys")?
    {
        let field = |name: &str| jwk.get(name).and_then(Value::as_str);
        let Some(kid) = field("kid") else { continue };
        let decode = |name: &str| field(name).and_then(|v| b64(v).ok());
        let key = match (field("kty"), field("crv")) {
            (Some("RSA"), _) => match (decode("n"), decode("e")) {
                (Some(n), Some(e)) => Key::Rsa { n, e },
                _ => continue,
            },
            (Some("EC"), Some("P-256")) => match (decode("x"), decode("y")) {
                (Some(x), Some(y)) if x.len() == 32 && y.len() == 32 => {
                    let mut point = vec![4u8];
                    point.extend(x);
                    point.extend(y);
                    Key::P256(point)
                }
                _ => continue,
            },
            _ => continue,
        };
        keys.insert(kid.to_owned(), key);
    }
    Ok(keys)
}

impl Verifier {
    /// A verifier that asks `local` first for an issuer's keys.
    pub fn with_local(local: LocalIssuers) -> Self {
        Self {
            issuers: Mutex::default(),
            checked: Mutex::default(),
            local: Some(local),
            aliases: None,
        }
    }

    /// Also takes the issuer names `aliases` maps to this node's own.
    pub fn with_aliases(mut self, aliases: IssuerAliases) -> Self {
        self.aliases = Some(aliases);
        self
    }

    /// The key `kid` of `issuer`, from the cache or fetched.
    async fn key(&self, issuer: &str, kid: &str) -> Result<Key, Refusal> {
        let stale = {
            let issuers = self.issuers.lock().map_err(|_| unauthorized("poisoned"))?;
            match issuers.get(issuer) {
                Some(cached) => {
                    if let Some(key) = cached.keys.get(kid)
                        && cached.fetched.elapsed() < cached.ttl
                    {
                        return Ok(key.clone());
                    }
                    cached.fetched.elapsed() >= REFETCH_AFTER
                }
                None => true,
            }
        };
        // This node's own issuers: read in-process, as often as an unknown key id asks.
        if let Some(jwks) = self.local.as_ref().and_then(|local| local(issuer)) {
            let keys = parse_jwks(&jwks).unwrap_or_default();
            let found = keys.get(kid).cloned();
            let mut issuers = self.issuers.lock().map_err(|_| unauthorized("poisoned"))?;
            issuers.insert(
                issuer.to_owned(),
                IssuerKeys {
                    keys,
                    fetched: Instant::now(),
                    ttl: LOCAL_KEYS_TTL,
                },
            );
            return found.ok_or_else(|| unauthorized("the token's key is not the issuer's"));
        }
        if !stale {
            return Err(unauthorized("the token's key is not the issuer's"));
        }
        let owned = issuer.to_owned();
        let fetched = tokio::task::spawn_blocking(move || fetch_keys(&owned))
            .await
            .map_err(|_| unauthorized("fetching the issuer's keys failed"))?;
        let mut issuers = self.issuers.lock().map_err(|_| unauthorized("poisoned"))?;
        match fetched {
            Ok(keys) => {
                issuers.insert(
                    issuer.to_owned(),
                    IssuerKeys {
                        keys,
                        fetched: Instant::now(),
                        ttl: KEYS_TTL,
                    },
                );
            }
            Err(e) => {
                tracing::warn!(issuer, error = %e, "could not fetch a JWT issuer's keys");
                // Remember the attempt, so that a failing issuer is not asked on every request.
                let entry = issuers.entry(issuer.to_owned()).or_insert(IssuerKeys {
                    keys: HashMap::new(),
                    fetched: Instant::now(),
                    ttl: KEYS_TTL,
                });
                entry.fetched = Instant::now();
            }
        }
        issuers
            .get(issuer)
            .and_then(|i| i.keys.get(kid).cloned())
            .ok_or_else(|| unauthorized("the token's key is not the issuer's"))
    }

    /// Verifies `token` for an authorizer of `issuer` and `audience`, and a route that needs
    /// one of `scopes` (none: any).
    pub async fn verify(
        &self,
        token: &str,
        issuer: &str,
        audience: &[String],
        scopes: &[String],
        now_s: i64,
    ) -> Result<Verified, Refusal> {
        let aliased = self.aliases.as_ref().and_then(|a| a(issuer));
        let issuer = aliased.as_deref().unwrap_or(issuer);
        let checked = match self.seen(token, issuer) {
            Some(c) => c,
            None => {
                let c = Arc::new(self.check_signature(token, issuer).await?);
                if token.len() <= MAX_CHECKED_TOKEN
                    && let Ok(mut seen) = self.checked.lock()
                {
                    if seen.len() >= MAX_CHECKED {
                        seen.clear();
                    }
                    seen.insert(token.to_owned(), c.clone());
                }
                c
            }
        };
        admit(&checked, audience, scopes, now_s)
    }

    /// A token verified before for `issuer`, if its key is still the issuer's.
    fn seen(&self, token: &str, issuer: &str) -> Option<Arc<Checked>> {
        let checked = self.checked.lock().ok()?.get(token).cloned()?;
        let issuers = self.issuers.lock().ok()?;
        let keys = issuers.get(issuer)?;
        (checked.issuer == issuer
            && keys.keys.contains_key(&checked.kid)
            && keys.fetched.elapsed() < keys.ttl)
            .then_some(checked)
    }

    /// Decodes a token and verifies its form, issuer and signature.
    async fn check_signature(&self, token: &str, issuer: &str) -> Result<Checked, Refusal> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(unauthorized("the token is not a JWS"));
        };
        let header: Value = serde_json::from_slice(&b64(header)?)
            .map_err(|_| unauthorized("the token's header is not JSON"))?;
        let alg = header
            .get("alg")
            .and_then(Value::as_str)
            .unwrap_or_default();
        if alg != "RS256" && alg != "ES256" {
            return Err(unauthorized(format!("algorithm {alg:?} is not accepted")));
        }
        let kid = header
            .get("kid")
            .and_then(Value::as_str)
            .ok_or_else(|| unauthorized("the token names no key"))?;
        let claims: Value = serde_json::from_slice(&b64(payload)?)
            .map_err(|_| unauthorized("the token's claims are not JSON"))?;
        let claims = claims
            .as_object()
            .cloned()
            .ok_or_else(|| unauthorized("the token's claims are not an object"))?;
        // The issuer is checked before any key is fetched, so a token cannot send the node
        // to an issuer of its choosing.
        if claims.get("iss").and_then(Value::as_str) != Some(issuer) {
            return Err(unauthorized("the token is from another issuer"));
        }
        let key = self.key(issuer, kid).await?;
        let signature = b64(signature)?;
        let message =
            &token.as_bytes()[..token.len() - token.rsplit('.').next().unwrap_or("").len() - 1];
        let valid = match (&key, alg) {
            (Key::Rsa { n, e }, "RS256") => ring::signature::RsaPublicKeyComponents { n, e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    message,
                    &signature,
                )
                .is_ok(),
            (Key::P256(point), "ES256") => ring::signature::UnparsedPublicKey::new(
                &ring::signature::ECDSA_P256_SHA256_FIXED,
                point,
            )
            .verify(message, &signature)
            .is_ok(),
            _ => false,
        };
        if !valid {
            return Err(unauthorized("the token's signature does not verify"));
        }
        let number = |name: &str| claims.get(name).and_then(Value::as_i64);
        let audiences: Vec<String> = match claims.get("aud") {
            Some(Value::String(a)) => vec![a.clone()],
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            // Access tokens (Cognito's among them) carry the client in `client_id`.
            _ => claims
                .get("client_id")
                .and_then(Value::as_str)
                .map(str::to_owned)
                .into_iter()
                .collect(),
        };
        let granted: Vec<String> = match claims.get("scope").or_else(|| claims.get("scp")) {
            Some(Value::String(s)) => s.split_whitespace().map(str::to_owned).collect(),
            Some(Value::Array(a)) => a
                .iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect(),
            _ => Vec::new(),
        };
        Ok(Checked {
            issuer: issuer.to_owned(),
            kid: kid.to_owned(),
            exp: number("exp"),
            nbf: number("nbf"),
            audiences,
            context: Arc::new(authorizer_context(&claims, &granted)),
            granted,
            claims: Arc::new(claims),
        })
    }
}

/// What is checked on every use of a token: its time, its audience, the route's scopes.
fn admit(
    c: &Checked,
    audience: &[String],
    scopes: &[String],
    now_s: i64,
) -> Result<Verified, Refusal> {
    match c.exp {
        Some(exp) if exp > now_s => {}
        _ => return Err(unauthorized("the token has expired")),
    }
    if c.nbf.is_some_and(|nbf| nbf > now_s) {
        return Err(unauthorized("the token is not valid yet"));
    }
    if !c
        .audiences
        .iter()
        .any(|a| audience.iter().any(|want| want == a))
    {
        return Err(unauthorized("the token is for another audience"));
    }
    if !scopes.is_empty() && !scopes.iter().any(|s| c.granted.contains(s)) {
        return Err(Refusal::Forbidden);
    }
    Ok(Verified {
        claims: c.claims.clone(),
        scopes: c.granted.clone(),
        context: c.context.clone(),
    })
}

/// The token an identity source (`$request.header.NAME`) names, `Bearer ` prefix removed.
pub fn token_from<'a>(
    headers: &'a axum::http::HeaderMap,
    identity_source: &[String],
) -> Option<&'a str> {
    let source = identity_source.first()?;
    let name = source.strip_prefix("$request.header.")?;
    let value = headers.get(name)?.to_str().ok()?.trim();
    let token = value
        .strip_prefix("Bearer ")
        .or_else(|| value.strip_prefix("bearer "))
        .unwrap_or(value)
        .trim();
    (!token.is_empty()).then_some(token)
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use serde_json::json;

    use super::*;

    /// Tokens of a user pool on this node, checked with its keys read in-process: what the
    /// end-to-end tests cannot make (an expired token needs the pool's private key).
    #[tokio::test]
    async fn local_issuers_keys_are_read_in_process() {
        let dir = tempfile::tempdir().unwrap();
        let pools = Arc::new(nimbus_userpools::UserPools::open(dir.path(), "us-east-1").unwrap());
        let settings = nimbus_userpools::model::PoolSettings::default();
        let pool = pools.create_pool("1", "p", settings.clone()).await.unwrap();
        let other = pools.create_pool("1", "q", settings).await.unwrap();
        let base = "http://127.0.0.1:9000";
        let lookup = pools.clone();
        let verifier = Verifier::with_local(Arc::new(move |issuer: &str| {
            let id = issuer.strip_prefix(base)?.strip_prefix('/')?;
            let pool = lookup.pool(id)?;
            Some(nimbus_userpools::tokens::jwks(&pool))
        }));
        let iss = format!("{base}/{}", pool.id);
        let now = 1_900_000_000;
        let token = |signer: &nimbus_userpools::model::Pool, exp: i64| {
            let claims =
                json!({ "iss": iss, "aud": "app", "sub": "u", "exp": exp, "token_use": "id" });
            pools
                .signer
                .sign(signer, claims.as_object().unwrap())
                .unwrap()
        };
        let aud = ["app".to_owned()];
        let ok = verifier
            .verify(&token(&pool, now + 60), &iss, &aud, &[], now)
            .await
            .unwrap();
        assert_eq!(ok.claims["sub"], "u");
        let expired = verifier
            .verify(&token(&pool, now - 1), &iss, &aud, &[], now)
            .await;
        assert_eq!(
            expired.err(),
            Some(Refusal::Unauthorized("the token has expired".into()))
        );
        // Another pool's key, claiming this pool's issuer.
        assert!(
            verifier
                .verify(&token(&other, now + 60), &iss, &aud, &[], now)
                .await
                .is_err()
        );
        // After a rotation the new key is found at once, without a refetch delay.
        let rotated = pools.rotate_key(&pool.id).await.unwrap();
        assert!(
            verifier
                .verify(&token(&rotated, now + 60), &iss, &aud, &[], now)
                .await
                .is_ok()
        );
    }
}

/// What verifying a user pool's token costs with a warm key cache, in-process: run with
/// `cargo test --release -p nimbus-api-apigateway --lib verify_cost -- --ignored --nocapture`.
#[cfg(test)]
mod cost {
    use std::sync::Arc;
    use std::time::Instant;

    use serde_json::json;

    use super::*;

    #[tokio::test]
    #[ignore]
    async fn verify_cost() {
        let dir = tempfile::tempdir().unwrap();
        let pools = Arc::new(nimbus_userpools::UserPools::open(dir.path(), "us-east-1").unwrap());
        let settings = nimbus_userpools::model::PoolSettings::default();
        let pool = pools.create_pool("1", "p", settings).await.unwrap();
        let lookup = pools.clone();
        let verifier = Verifier::with_local(Arc::new(move |issuer: &str| {
            let id = issuer.rsplit('/').next()?;
            let pool = lookup.pool(id)?;
            Some(nimbus_userpools::tokens::jwks(&pool))
        }));
        let iss = format!("http://127.0.0.1:9000/{}", pool.id);
        // An ID token's claims, as user pools issue them.
        let claims = json!({
            "sub": "6f1c2b9e-0d1a-4c4b-9a43-1d2f3e4a5b6c", "email_verified": true, "iss": iss,
            "cognito:username": "user000", "origin_jti": "0b8f0a0e-7a8c-4a57-8e7f-4b0e7f3f9c11",
            "aud": "app", "event_id": "3c7d8a9e-2f1b-4c6d-8e9f-0a1b2c3d4e5f", "token_use": "id",
            "auth_time": 1_900_000_000, "exp": 1_900_003_600, "iat": 1_900_000_000,
            "jti": "5a6b7c8d-9e0f-4a1b-8c2d-3e4f5a6b7c8d", "email": "user000@example.com",
        });
        let token = pools
            .signer
            .sign(&pool, claims.as_object().unwrap())
            .unwrap();
        let aud = ["app".to_owned()];
        let n = 20_000u32;
        for round in 0..3 {
            let t = Instant::now();
            for _ in 0..n {
                verifier
                    .verify(&token, &iss, &aud, &[], 1_900_000_100)
                    .await
                    .unwrap();
            }
            eprintln!("round {round}: {:?} per verification", t.elapsed() / n);
        }
        let (h, p, s) = {
            let mut parts = token.split('.');
            (
                parts.next().unwrap(),
                parts.next().unwrap(),
                parts.next().unwrap(),
            )
        };
        let key = verifier.key(&iss, &pool.keys[0].kid).await.unwrap();
        let Key::Rsa { n: modulus, e } = key else {
            panic!()
        };
        let sig = b64(s).unwrap();
        let message = format!("{h}.{p}");
        let t = Instant::now();
        for _ in 0..n {
            ring::signature::RsaPublicKeyComponents { n: &modulus, e: &e }
                .verify(
                    &ring::signature::RSA_PKCS1_2048_8192_SHA256,
                    message.as_bytes(),
                    &sig,
                )
                .unwrap();
        }
        eprintln!("RSA alone: {:?} per verification", t.elapsed() / n);
    }
}
