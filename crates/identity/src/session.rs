//! Temporary credentials of a role's session, as a sandbox gets them for its function's role.
//!
//! Nothing is stored per session. The session token carries the claims (account, role and its
//! id, function, access key id, expiry) with an HMAC-SHA256 over them under a secret the node
//! keeps in its store; the secret access key is derived from the same secret and the access
//! key id. Verifying a request signed with session credentials is thus a MAC check, an expiry
//! check and a look-up that the role (with the same id) and the function still exist.

use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

use nimbus_types::identity::SessionCredentials;

const TOKEN_PREFIX: &str = "NS1.";

/// What a session token vouches for.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Claims {
    #[serde(rename = "a")]
    pub account: String,
    #[serde(rename = "r")]
    pub role: String,
    #[serde(rename = "i")]
    pub role_id: String,
    /// The function whose sandbox holds the credentials, also the session's name.
    #[serde(rename = "f")]
    pub function: String,
    #[serde(rename = "k")]
    pub access_key_id: String,
    /// Expiry, Unix seconds.
    #[serde(rename = "e")]
    pub expires_s: i64,
}

pub(crate) struct SessionKey(Vec<u8>);

impl SessionKey {
    pub(crate) fn new(secret: Vec<u8>) -> Self {
        Self(secret)
    }

    fn mac(&self, label: &str, data: &[u8]) -> Hmac<Sha256> {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes any key length");
        mac.update(label.as_bytes());
        mac.update(data);
        mac
    }

    fn secret_for(&self, access_key_id: &str) -> String {
        let digest = self
            .mac("secret:", access_key_id.as_bytes())
            .finalize()
            .into_bytes();
        let mut s = STANDARD.encode(digest);
        s.truncate(40);
        s
    }

    pub(crate) fn mint(&self, claims: &Claims) -> SessionCredentials {
        let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims).unwrap_or_default());
        let tag = self
            .mac("token:", payload.as_bytes())
            .finalize()
            .into_bytes();
        SessionCredentials {
            access_key_id: claims.access_key_id.clone(),
            secret_access_key: self.secret_for(&claims.access_key_id),
            session_token: format!("{TOKEN_PREFIX}{payload}.{}", URL_SAFE_NO_PAD.encode(tag)),
            expiration_ms: claims.expires_s.saturating_mul(1000),
        }
    }

    /// The claims of a genuine, unexpired token for this access key id, with the secret its
    /// requests are signed with.
    pub(crate) fn open(
        &self,
        access_key_id: &str,
        token: &str,
        now_s: i64,
    ) -> Option<(Claims, String)> {
        if token.len() > 4096 {
            return None;
        }
        let (payload, tag) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
        let tag = URL_SAFE_NO_PAD.decode(tag).ok()?;
        self.mac("token:", payload.as_bytes())
            .verify_slice(&tag)
            .ok()?;
        let claims: Claims = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(payload).ok()?).ok()?;
        (claims.access_key_id == access_key_id && claims.expires_s > now_s).then(|| {
            let secret = self.secret_for(access_key_id);
            (claims, secret)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn claims() -> Claims {
        Claims {
            account: "000000000000".into(),
            role: "exec".into(),
            role_id: "AROAEXAMPLE".into(),
            function: "orders".into(),
            access_key_id: "ASIAEXAMPLE0000000".into(),
            expires_s: 2_000,
        }
    }

    #[test]
    fn tokens_open_only_unaltered_unexpired_and_for_their_key() {
        let key = SessionKey::new(b"a node secret of thirty-two byte".to_vec());
        let creds = key.mint(&claims());
        assert_eq!(creds.secret_access_key.len(), 40);
        let (opened, secret) = key
            .open("ASIAEXAMPLE0000000", &creds.session_token, 1_000)
            .unwrap();
        assert_eq!(opened, claims());
        assert_eq!(secret, creds.secret_access_key);
        // Expired, another key id, another node's secret, an altered payload.
        assert!(
            key.open("ASIAEXAMPLE0000000", &creds.session_token, 2_000)
                .is_none()
        );
        assert!(
            key.open("ASIAOTHER000000000", &creds.session_token, 1_000)
                .is_none()
        );
        let other = SessionKey::new(b"another node's secret, 32 bytes!".to_vec());
        assert!(
            other
                .open("ASIAEXAMPLE0000000", &creds.session_token, 1_000)
                .is_none()
        );
        let mut forged = claims();
        forged.role = "admin".into();
        let forged_payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&forged).unwrap());
        let tag = creds.session_token.rsplit('.').next().unwrap();
        let forged_token = format!("{TOKEN_PREFIX}{forged_payload}.{tag}");
        assert!(
            key.open("ASIAEXAMPLE0000000", &forged_token, 1_000)
                .is_none()
        );
        assert!(key.open("ASIAEXAMPLE0000000", "garbage", 1_000).is_none());
    }
}
