//! Secure Remote Password sign-in as Cognito speaks it (`USER_SRP_AUTH`, then the
//! `PASSWORD_VERIFIER` challenge), so that Amplify and the Cognito client libraries sign in
//! without sending the password.
//!
//! SRP-6a over the 3072-bit group of RFC 3526 with g = 2 and SHA-256, in Cognito's encoding:
//! numbers are hashed as big-endian hex padded to whole bytes with a leading zero byte where
//! the top bit is set; x = H(salt ‖ H(pool ‖ user ‖ ":" ‖ password)), k = H(N ‖ g),
//! u = H(A ‖ B); the session key is 16 bytes of HKDF-SHA256 of S salted with u, with the info
//! "Caldera Derived Key"; the client proves it with HMAC-SHA256(key, pool ‖ user ‖ secret
//! block ‖ timestamp).
//!
//! What is stored per user is the salt and the verifier v = g^x, computed whenever the password
//! is set. The big-number arithmetic is not constant-time; the exponents it handles (b, the
//! server's per-attempt secret, and u) are fresh for every attempt.

use std::sync::LazyLock;

use hmac::{Hmac, Mac};
use num_bigint_dig::BigUint;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// The group's prime, RFC 3526's 3072-bit MODP group.
const N_HEX: &str = concat!(
    "FFFFFFFFFFFFFFFFC90FDAA22168C234C4C6628B80DC1CD1",
    "29024E088A67CC74020BBEA63B139B22514A08798E3404DD",
    "EF9519B3CD3A431B302B0A6DF25F14374FE1356D6D51C245",
    "E485B576625E7EC6F44C42E9A637ED6B0BFF5CB6F406B7ED",
    "EE386BFB5A899FA5AE9F24117C4B1FE649286651ECE45B3D",
    "C2007CB8A163BF0598DA48361C55D39A69163FA8FD24CF5F",
    "83655D23DCA3AD961C62F356208552BB9ED529077096966D",
    "670C354E4ABC9804F1746C08CA18217C32905E462E36CE3B",
    "E39E772C180E86039B2783A2EC07A28FB5C55DF06F4C52C9",
    "DE2BCBF6955817183995497CEA956AE515D2261898FA0510",
    "15728E5A8AAAC42DAD33170D04507A33A85521ABDF1CBA64",
    "ECFB850458DBEF0A8AEA71575D060C7DB3970F85A6E1E4C7",
    "ABF5AE8CDB0933D71E8C94E04A25619DCEE3D2261AD2EE6B",
    "F12FFA06D98A0864D87602733EC86A64521F2B18177B200C",
    "BBE117577A615D6C770988C0BAD946E208E24FA074E5AB31",
    "43DB5BFCE0FD108E4B82D120A93AD2CAFFFFFFFFFFFFFFFF",
);

struct Group {
    n: BigUint,
    g: BigUint,
    k: BigUint,
}

static GROUP: LazyLock<Group> = LazyLock::new(|| {
    #[allow(clippy::unwrap_used)] // a constant
    let n = BigUint::parse_bytes(N_HEX.as_bytes(), 16).unwrap();
    let g = BigUint::from(2u32);
    let k = hash_numbers(&[&n, &g]);
    Group { n, g, k }
});

/// A number as Cognito hashes it: big-endian bytes, with a zero byte in front when the top bit
/// is set (as its padded hex reads).
fn padded(x: &BigUint) -> Vec<u8> {
    let mut bytes = x.to_bytes_be();
    if bytes.first().is_some_and(|b| b & 0x80 != 0) {
        bytes.insert(0, 0);
    }
    bytes
}

fn hash_numbers(numbers: &[&BigUint]) -> BigUint {
    let mut h = Sha256::new();
    for n in numbers {
        h.update(padded(n));
    }
    BigUint::from_bytes_be(&h.finalize())
}

/// The part of a pool id after the region (`us-east-1_AbC` → `AbC`).
fn pool_name(pool_id: &str) -> &str {
    pool_id.split_once('_').map_or(pool_id, |(_, n)| n)
}

/// What a user's record keeps for SRP: the salt and the verifier, both hex.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct Verifier {
    pub salt: String,
    pub verifier: String,
}

fn private_key(pool_id: &str, username: &str, password: &str, salt: &BigUint) -> BigUint {
    let inner = Sha256::digest(format!("{}{username}:{password}", pool_name(pool_id)));
    let mut h = Sha256::new();
    h.update(padded(salt));
    h.update(inner);
    BigUint::from_bytes_be(&h.finalize())
}

/// The verifier of a password, with a fresh salt (a few milliseconds of CPU).
pub fn verifier(pool_id: &str, username: &str, password: &str) -> Verifier {
    let mut salt = [0u8; 16];
    crate::random_bytes(&mut salt);
    let salt = BigUint::from_bytes_be(&salt);
    let x = private_key(pool_id, username, password, &salt);
    let v = GROUP.g.modpow(&x, &GROUP.n);
    Verifier {
        salt: hex(&salt),
        verifier: hex(&v),
    }
}

/// Lower-case hex, padded as Cognito's clients pad it.
fn hex(x: &BigUint) -> String {
    padded(x).iter().map(|b| format!("{b:02x}")).collect()
}

fn parse_hex(text: &str) -> Option<BigUint> {
    if text.is_empty() || text.len() > 2048 || !text.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    BigUint::parse_bytes(text.as_bytes(), 16)
}

/// The server's half of an attempt: its secret b and what it sends.
#[derive(Debug, Clone)]
pub struct Challenge {
    b: BigUint,
    a: BigUint,
    big_b: BigUint,
    /// `SRP_B` and `SALT` as sent.
    pub srp_b: String,
    pub salt: String,
    verifier: BigUint,
}

/// Starts an attempt for the client's `SRP_A` against a stored verifier; `None` for an `A`
/// that is not a number, or is zero modulo N (which would let a client skip the password).
pub fn challenge(srp_a: &str, stored: &Verifier) -> Option<Challenge> {
    let group = &*GROUP;
    let a = parse_hex(srp_a)?;
    if (&a % &group.n) == BigUint::from(0u32) {
        return None;
    }
    let v = parse_hex(&stored.verifier)?;
    loop {
        let mut secret = [0u8; 32];
        crate::random_bytes(&mut secret);
        let b = BigUint::from_bytes_be(&secret);
        let big_b = (&group.k * &v + group.g.modpow(&b, &group.n)) % &group.n;
        if big_b == BigUint::from(0u32) {
            continue;
        }
        return Some(Challenge {
            srp_b: hex(&big_b),
            salt: stored.salt.clone(),
            b,
            a,
            big_b,
            verifier: v,
        });
    }
}

/// A challenge for a user who does not exist, shaped like a real one and never answerable.
/// Its salt and verifier come from `seed` (a keyed hash of the pool and the name), so that
/// asking twice gives the same salt, as for a real user; and the verifier is a number drawn
/// from the seed rather than a power of g, so that the answer costs what a real one does.
pub fn decoy(srp_a: &str, seed: &[u8; 32]) -> Option<Challenge> {
    let block = |i: u8| {
        let mut h = Sha256::new();
        h.update(seed);
        h.update([i]);
        h.finalize()
    };
    let salt = BigUint::from_bytes_be(&block(0)[..16]);
    let mut wide = Vec::with_capacity(13 * 32);
    for i in 1..=13 {
        wide.extend_from_slice(&block(i));
    }
    let v = BigUint::from_bytes_be(&wide) % &GROUP.n;
    let fake = Verifier {
        salt: hex(&salt),
        verifier: hex(&v),
    };
    challenge(srp_a, &fake)
}

/// The client's proof that it holds the password: HMAC-SHA256 under the session key of the
/// pool's name, the username, the secret block and the timestamp, base64.
pub fn expected_signature(
    c: &Challenge,
    pool_id: &str,
    username: &str,
    secret_block: &[u8],
    timestamp: &str,
) -> Option<[u8; 32]> {
    let group = &*GROUP;
    let u = hash_numbers(&[&c.a, &c.big_b]);
    if u == BigUint::from(0u32) {
        return None;
    }
    // S = (A · v^u)^b
    let s = (&c.a * c.verifier.modpow(&u, &group.n)).modpow(&c.b, &group.n);
    let key = session_key(&s, &u);
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).ok()?;
    mac.update(pool_name(pool_id).as_bytes());
    mac.update(username.as_bytes());
    mac.update(secret_block);
    mac.update(timestamp.as_bytes());
    Some(mac.finalize().into_bytes().into())
}

/// HKDF-SHA256 of S with u as its salt and "Caldera Derived Key" as its info: 16 bytes.
fn session_key(s: &BigUint, u: &BigUint) -> [u8; 16] {
    #[allow(clippy::unwrap_used)] // HMAC takes a key of any length
    let mut extract = Hmac::<Sha256>::new_from_slice(&padded(u)).unwrap();
    extract.update(&padded(s));
    let prk = extract.finalize().into_bytes();
    #[allow(clippy::unwrap_used)] // as above
    let mut expand = Hmac::<Sha256>::new_from_slice(&prk).unwrap();
    expand.update(b"Caldera Derived Key\x01");
    let okm = expand.finalize().into_bytes();
    let mut key = [0u8; 16];
    key.copy_from_slice(&okm[..16]);
    key
}

#[cfg(test)]
pub(crate) mod client {
    //! The client's side, as Cognito's client libraries compute it: for the tests.
    use super::*;

    pub struct Client {
        a: BigUint,
        pub srp_a: String,
    }

    pub fn start() -> Client {
        let mut secret = [0u8; 32];
        crate::random_bytes(&mut secret);
        let a = BigUint::from_bytes_be(&secret);
        let big_a = GROUP.g.modpow(&a, &GROUP.n);
        Client {
            srp_a: hex(&big_a),
            a,
        }
    }

    impl Client {
        #[allow(clippy::too_many_arguments)]
        pub fn signature(
            &self,
            pool_id: &str,
            username: &str,
            password: &str,
            salt: &str,
            srp_b: &str,
            secret_block: &[u8],
            timestamp: &str,
        ) -> [u8; 32] {
            let group = &*GROUP;
            let big_a = group.g.modpow(&self.a, &group.n);
            let big_b = parse_hex(srp_b).unwrap();
            let u = hash_numbers(&[&big_a, &big_b]);
            let x = private_key(pool_id, username, password, &parse_hex(salt).unwrap());
            let gx = group.g.modpow(&x, &group.n);
            // (B - k·g^x) mod N, kept non-negative.
            let kgx = (&group.k * gx) % &group.n;
            let base = (&big_b + &group.n - kgx) % &group.n;
            let s = base.modpow(&(&self.a + &u * &x), &group.n);
            let key = session_key(&s, &u);
            let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
            mac.update(pool_name(pool_id).as_bytes());
            mac.update(username.as_bytes());
            mac.update(secret_block);
            mac.update(timestamp.as_bytes());
            mac.finalize().into_bytes().into()
        }
    }

    #[test]
    fn a_client_with_the_password_proves_it_and_one_without_does_not() {
        let pool = "us-east-1_Abc123";
        let stored = verifier(pool, "alice", "Corr3ct-Horse");
        let block = b"secret block";
        let ts = "Mon Dec 7 05:55:00 UTC 2026";
        let client = start();
        let c = challenge(&client.srp_a, &stored).unwrap();
        let want = expected_signature(&c, pool, "alice", block, ts).unwrap();
        let good = client.signature(pool, "alice", "Corr3ct-Horse", &c.salt, &c.srp_b, block, ts);
        assert_eq!(want, good);
        let bad = client.signature(pool, "alice", "corr3ct-Horse", &c.salt, &c.srp_b, block, ts);
        assert_ne!(want, bad);
        let other_time = client.signature(
            pool,
            "alice",
            "Corr3ct-Horse",
            &c.salt,
            &c.srp_b,
            block,
            "x",
        );
        assert_ne!(want, other_time);
        // A = 0 or a multiple of N would make S known without the password.
        assert!(challenge("0", &stored).is_none());
        assert!(challenge(N_HEX, &stored).is_none());
        assert!(challenge("zz", &stored).is_none());
        let d1 = decoy(&client.srp_a, &[7; 32]).unwrap();
        let d2 = decoy(&client.srp_a, &[7; 32]).unwrap();
        assert_eq!(d1.salt, d2.salt);
        assert_ne!(d1.salt, decoy(&client.srp_a, &[8; 32]).unwrap().salt);
    }
}
