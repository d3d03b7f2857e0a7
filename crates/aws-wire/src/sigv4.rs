//! AWS Signature Version 4: verifying the `Authorization` header the SDKs and the `aws` CLI
//! send, and signing requests the same way (for nimbus's own clients and tests).
//!
//! The canonical request is rebuilt from what arrived: the method; the path as it came over
//! the wire, percent-encoded once more (services other than S3 sign the path encoded twice);
//! the query's parameters decoded, re-encoded and sorted; the signed headers, lower-cased, their
//! values trimmed with inner runs of spaces collapsed; the list of signed headers; and the
//! payload's SHA-256. The string to sign names the algorithm, the request time, the credential
//! scope and that request's hash; the key is derived from the secret through the scope's date,
//! region and service. Signatures are compared in constant time.

use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

type HmacSha256 = Hmac<Sha256>;

/// How far a request's time may be from the node's clock, either way.
pub const MAX_SKEW_S: i64 = 5 * 60;

const ALGORITHM: &str = "AWS4-HMAC-SHA256";

/// Why a request is not authenticated. Each protocol turns these into its own codes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AuthError {
    /// No `Authorization` header (or presigned query) at all.
    Missing,
    /// An `Authorization` header that is not a SigV4 one, or lacks a part.
    Malformed(String),
    /// The access key id is not known (or was deleted).
    UnknownKey(String),
    /// The signature does not match the request.
    BadSignature,
    /// The request's time is more than [`MAX_SKEW_S`] from now (or the scope's date is not
    /// the request's).
    Expired { request_time: String, now: String },
    /// The session token is missing, unknown or expired for temporary credentials.
    BadToken,
}

impl std::fmt::Display for AuthError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Missing => f.write_str("Missing Authentication Token"),
            Self::Malformed(why) => write!(f, "Authorization header is malformed: {why}"),
            Self::UnknownKey(_) => {
                f.write_str("The security token included in the request is invalid.")
            }
            Self::BadSignature => f.write_str(
                "The request signature we calculated does not match the signature you provided. \
                 Check your AWS Secret Access Key and signing method. Consult the service \
                 documentation for details.",
            ),
            Self::Expired { request_time, now } => write!(
                f,
                "Signature expired: {request_time} is now earlier than {now} (or later than \
                 the allowed skew of {MAX_SKEW_S} seconds)"
            ),
            Self::BadToken => f.write_str("The security token included in the request is invalid."),
        }
    }
}

impl std::error::Error for AuthError {}

/// The parts of an `Authorization: AWS4-HMAC-SHA256 …` header.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Authorization<'a> {
    pub access_key_id: &'a str,
    /// `YYYYMMDD`.
    pub date: &'a str,
    pub region: &'a str,
    pub service: &'a str,
    /// The signed headers' names as sent: lower-case, sorted, joined by `;`.
    pub signed_headers: &'a str,
    pub signature: &'a str,
}

impl<'a> Authorization<'a> {
    pub fn parse(header: &'a str) -> Result<Self, AuthError> {
        let malformed = |why: &str| AuthError::Malformed(why.to_owned());
        let rest = header
            .strip_prefix(ALGORITHM)
            .ok_or_else(|| malformed("only AWS4-HMAC-SHA256 is supported"))?;
        let (mut credential, mut signed, mut signature) = (None, None, None);
        for part in rest.split(',') {
            let part = part.trim();
            if let Some(v) = part.strip_prefix("Credential=") {
                credential = Some(v);
            } else if let Some(v) = part.strip_prefix("SignedHeaders=") {
                signed = Some(v);
            } else if let Some(v) = part.strip_prefix("Signature=") {
                signature = Some(v);
            } else if !part.is_empty() {
                return Err(malformed("unknown component"));
            }
        }
        let credential = credential.ok_or_else(|| malformed("Credential is missing"))?;
        let signed = signed.ok_or_else(|| malformed("SignedHeaders is missing"))?;
        let signature = signature.ok_or_else(|| malformed("Signature is missing"))?;
        let mut scope = credential.split('/');
        let (Some(key), Some(date), Some(region), Some(service), Some("aws4_request"), None) = (
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
            scope.next(),
        ) else {
            return Err(malformed(
                "Credential must be KEY/DATE/REGION/SERVICE/aws4_request",
            ));
        };
        let printable =
            |s: &str| !s.is_empty() && s.len() <= 128 && s.bytes().all(|b| b.is_ascii_graphic());
        if !printable(key)
            || date.len() != 8
            || !date.bytes().all(|b| b.is_ascii_digit())
            || !printable(region)
            || !printable(service)
        {
            return Err(malformed("the credential scope is not valid"));
        }
        if signature.len() != 64 || !signature.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(malformed("Signature must be 64 hexadecimal digits"));
        }
        let mut previous: Option<&str> = None;
        let mut well_formed = true;
        for name in signed.split(';') {
            well_formed &= !name.is_empty()
                && name.bytes().all(|b| {
                    b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_'
                })
                && previous.is_none_or(|p| p < name);
            previous = Some(name);
        }
        if !well_formed || !signed.split(';').any(|h| h == "host") {
            return Err(malformed(
                "SignedHeaders must be sorted, lower-case, and include host",
            ));
        }
        Ok(Self {
            access_key_id: key,
            date,
            region,
            service,
            signed_headers: signed,
            signature,
        })
    }

    /// Whether a header (lower-case) is among the signed ones.
    pub fn signs(&self, name: &str) -> bool {
        self.signed_headers.split(';').any(|h| h == name)
    }

    /// `DATE/REGION/SERVICE/aws4_request`.
    pub fn scope(&self) -> String {
        format!(
            "{}/{}/{}/aws4_request",
            self.date, self.region, self.service
        )
    }
}

/// What a request is signed over, as it arrived.
#[derive(Clone)]
pub struct Request<'a> {
    pub method: &'a str,
    /// The path as sent, still percent-encoded.
    pub raw_path: &'a str,
    /// The query as sent, without `?`.
    pub raw_query: Option<&'a str>,
    /// Every header, names in any case; repeated names allowed.
    pub headers: Vec<(&'a str, &'a str)>,
    /// Hex SHA-256 of the body, or what `x-amz-content-sha256` declares.
    pub payload_hash: String,
}

/// Hex SHA-256 of a body.
pub fn payload_hash(body: &[u8]) -> String {
    nimbus_types::hex::encode(&Sha256::digest(body))
}

const HEX_UPPER: &[u8; 16] = b"0123456789ABCDEF";

/// Percent-encodes everything but RFC 3986's unreserved characters (and `/` if asked).
fn uri_encode(input: &str, keep_slash: bool, out: &mut String) {
    for b in input.bytes() {
        let unreserved = b.is_ascii_alphanumeric() || b"-_.~".contains(&b);
        if unreserved || (keep_slash && b == b'/') {
            out.push(b as char);
        } else {
            out.push('%');
            out.push(HEX_UPPER[usize::from(b >> 4)] as char);
            out.push(HEX_UPPER[usize::from(b & 15)] as char);
        }
    }
}

fn percent_decode(input: &str) -> Vec<u8> {
    let bytes = input.as_bytes();
    let hex = |i: usize| bytes.get(i).and_then(|b| (*b as char).to_digit(16));
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%'
            && let (Some(h), Some(l)) = (hex(i + 1), hex(i + 2))
        {
            out.push((h * 16 + l) as u8);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    out
}

/// Appends the canonical query: parameters decoded, encoded again, sorted.
fn canonical_query(raw: Option<&str>, out: &mut String) {
    let Some(raw) = raw.filter(|q| !q.is_empty()) else {
        return;
    };
    let mut pairs: Vec<(String, String)> = raw
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            // `+` in a query is a space only in forms; SigV4 clients encode spaces as %20.
            let k = String::from_utf8_lossy(&percent_decode(k)).into_owned();
            let v = String::from_utf8_lossy(&percent_decode(v)).into_owned();
            let (mut ek, mut ev) = (String::new(), String::new());
            uri_encode(&k, false, &mut ek);
            uri_encode(&v, false, &mut ev);
            (ek, ev)
        })
        .filter(|(k, _)| k != "X-Amz-Signature")
        .collect();
    pairs.sort();
    for (i, (k, v)) in pairs.iter().enumerate() {
        if i > 0 {
            out.push('&');
        }
        out.push_str(k);
        out.push('=');
        out.push_str(v);
    }
}

/// Appends the canonical path: the path as sent, encoded once more (S3 signs it as sent).
fn canonical_path(raw: &str, service: &str, out: &mut String) {
    let raw = if raw.is_empty() { "/" } else { raw };
    if service == "s3" {
        out.push_str(raw);
    } else {
        uri_encode(raw, true, out);
    }
}

/// Appends the canonical headers: each signed header's name, `:`, its values (repeated
/// headers joined by `,`) trimmed with inner runs of blanks made one space, and a newline.
fn canonical_headers(
    request: &Request<'_>,
    auth: &Authorization<'_>,
    out: &mut String,
) -> Result<(), AuthError> {
    for name in auth.signed_headers.split(';') {
        out.push_str(name);
        out.push(':');
        let mut found = false;
        for (_, value) in request
            .headers
            .iter()
            .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        {
            if found {
                out.push(',');
            }
            found = true;
            let mut space = false;
            for c in value.trim().chars() {
                if c == ' ' || c == '\t' {
                    space = true;
                } else {
                    if space {
                        out.push(' ');
                        space = false;
                    }
                    out.push(c);
                }
            }
        }
        if !found {
            return Err(AuthError::Malformed(format!(
                "signed header {name} is not in the request"
            )));
        }
        out.push('\n');
    }
    Ok(())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    // HMAC takes a key of any length.
    let mut mac = HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

/// An HMAC keyed with a scope's signing key, its key already absorbed.
fn keyed(key: &[u8]) -> HmacSha256 {
    HmacSha256::new_from_slice(key).unwrap_or_else(|_| unreachable!())
}

/// Signing keys already derived, by secret and scope: a key serves one day, region and
/// service, so a client signing many requests costs one derivation a day instead of four
/// HMACs a request. What is kept is the HMAC with the key absorbed, so that a signature
/// costs only its message's blocks.
///
/// The most recently used entries are kept in a short list searched front to back: a lookup
/// compares a few strings and allocates nothing, which matters on every request, while a node
/// with more active keys than the list holds derives keys for the rest (four HMACs).
#[derive(Default)]
pub struct KeyCache {
    keys: std::sync::Mutex<std::collections::VecDeque<CachedKey>>,
}

struct CachedKey {
    secret: String,
    date: String,
    region: String,
    service: String,
    mac: HmacSha256,
}

/// Entries kept at most, the least recently derived dropped first.
const KEY_CACHE_MAX: usize = 64;

impl KeyCache {
    fn get(&self, secret: &str, date: &str, region: &str, service: &str) -> HmacSha256 {
        if let Ok(keys) = self.keys.lock()
            && let Some(hit) = keys.iter().find(|k| {
                k.date == date && k.service == service && k.region == region && k.secret == secret
            })
        {
            return hit.mac.clone();
        }
        let mac = keyed(&signing_key(secret, date, region, service));
        // A poisoned cache is only a cache: derive without it.
        if let Ok(mut keys) = self.keys.lock() {
            if keys.len() >= KEY_CACHE_MAX {
                keys.pop_back();
            }
            keys.push_front(CachedKey {
                secret: secret.to_owned(),
                date: date.to_owned(),
                region: region.to_owned(),
                service: service.to_owned(),
                mac: mac.clone(),
            });
        }
        mac
    }
}

/// The key a scope's signatures are made with.
pub fn signing_key(secret: &str, date: &str, region: &str, service: &str) -> Vec<u8> {
    let k_date = hmac(format!("AWS4{secret}").as_bytes(), date.as_bytes());
    let k_region = hmac(&k_date, region.as_bytes());
    let k_service = hmac(&k_region, service.as_bytes());
    hmac(&k_service, b"aws4_request")
}

fn header<'a>(request: &Request<'a>, name: &str) -> Option<&'a str> {
    request
        .headers
        .iter()
        .find(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| *v)
}

/// Seconds since the epoch of a `YYYYMMDDTHHMMSSZ` time.
pub fn parse_amz_date(s: &str) -> Option<i64> {
    let b = s.as_bytes();
    if b.len() != 16 || b[8] != b'T' || b[15] != b'Z' {
        return None;
    }
    let num = |r: std::ops::Range<usize>| -> Option<i64> {
        let part = s.get(r)?;
        part.bytes()
            .all(|c| c.is_ascii_digit())
            .then(|| part.parse().ok())
            .flatten()
    };
    let (y, m, d) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hh, mm, ss) = (num(9..11)?, num(11..13)?, num(13..15)?);
    if !(1..=12).contains(&m) || !(1..=31).contains(&d) || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    // Days from the civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    Some(days * 86_400 + hh * 3600 + mm * 60 + ss)
}

/// Formats seconds since the epoch as `YYYYMMDDTHHMMSSZ`.
pub fn format_amz_date(secs: i64) -> String {
    let days = secs.div_euclid(86_400);
    let rem = secs.rem_euclid(86_400);
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = doy - (153 * mp + 2) / 5 + 1;
    let m = if mp < 10 { mp + 3 } else { mp - 9 };
    let y = yoe + era * 400 + i64::from(m <= 2);
    format!(
        "{y:04}{m:02}{d:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The signature a request should carry under `secret`. The canonical request is written
/// into one buffer and hashed; the string to sign is fed to the HMAC piece by piece.
fn expected_signature(
    request: &Request<'_>,
    auth: &Authorization<'_>,
    amz_date: &str,
    secret: &str,
    cache: Option<&KeyCache>,
) -> Result<[u8; 32], AuthError> {
    let mut canonical = String::with_capacity(512);
    canonical.push_str(request.method);
    canonical.push('\n');
    canonical_path(request.raw_path, auth.service, &mut canonical);
    canonical.push('\n');
    canonical_query(request.raw_query, &mut canonical);
    canonical.push('\n');
    canonical_headers(request, auth, &mut canonical)?;
    canonical.push('\n');
    canonical.push_str(auth.signed_headers);
    canonical.push('\n');
    canonical.push_str(&request.payload_hash);
    let mut mac = match cache {
        Some(cache) => cache.get(secret, auth.date, auth.region, auth.service),
        None => keyed(&signing_key(secret, auth.date, auth.region, auth.service)),
    };
    for part in [
        ALGORITHM,
        "\n",
        amz_date,
        "\n",
        auth.date,
        "/",
        auth.region,
        "/",
        auth.service,
        "/aws4_request\n",
    ] {
        mac.update(part.as_bytes());
    }
    mac.update(&hex_lower(&Sha256::digest(canonical.as_bytes()).into()));
    Ok(mac.finalize().into_bytes().into())
}

/// Lower-case hex of a 32-byte digest, without allocating.
fn hex_lower(digest: &[u8; 32]) -> [u8; 64] {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = [0u8; 64];
    for (i, b) in digest.iter().enumerate() {
        out[2 * i] = HEX[usize::from(b >> 4)];
        out[2 * i + 1] = HEX[usize::from(b & 15)];
    }
    out
}

/// What can be checked before the body is read: the `Authorization` header's form and the
/// request's time. A caller that must read the body to hash it refuses these requests first.
pub fn check_header<'a>(request: &Request<'a>, now: i64) -> Result<Authorization<'a>, AuthError> {
    let header_value = header(request, "authorization").ok_or(AuthError::Missing)?;
    let auth = Authorization::parse(header_value)?;
    let amz_date = header(request, "x-amz-date")
        .ok_or_else(|| AuthError::Malformed("X-Amz-Date is missing".into()))?;
    let time = parse_amz_date(amz_date)
        .ok_or_else(|| AuthError::Malformed("X-Amz-Date is not YYYYMMDDTHHMMSSZ".into()))?;
    if (time - now).abs() > MAX_SKEW_S || !amz_date.starts_with(auth.date) {
        return Err(AuthError::Expired {
            request_time: amz_date.to_owned(),
            now: format_amz_date(now),
        });
    }
    if !auth.signs("x-amz-date") && !auth.signs("date") {
        return Err(AuthError::Malformed(
            "the request time is not signed".into(),
        ));
    }
    Ok(auth)
}

/// Checks a request's SigV4 signature. `secret_of` looks up an access key's secret (`None`
/// for an unknown key); `now` is the node's clock in seconds since the epoch. Returns the
/// parsed authorization, whose access key id names the caller.
pub fn verify<'a>(
    request: &Request<'a>,
    now: i64,
    secret_of: impl FnOnce(&str) -> Option<String>,
) -> Result<Authorization<'a>, AuthError> {
    verify_cached(request, now, secret_of, None)
}

/// [`verify`], with derived signing keys kept in `cache`.
pub fn verify_cached<'a>(
    request: &Request<'a>,
    now: i64,
    secret_of: impl FnOnce(&str) -> Option<String>,
    cache: Option<&KeyCache>,
) -> Result<Authorization<'a>, AuthError> {
    let auth = check_header(request, now)?;
    let secret = secret_of(auth.access_key_id)
        .ok_or_else(|| AuthError::UnknownKey(auth.access_key_id.to_owned()))?;
    verify_checked(request, &auth, &secret, cache)?;
    Ok(auth)
}

/// The rest of [`verify_cached`] for a request whose header [`check_header`] has passed
/// already (so that it is parsed once), with the key's secret.
pub fn verify_checked(
    request: &Request<'_>,
    auth: &Authorization<'_>,
    secret: &str,
    cache: Option<&KeyCache>,
) -> Result<(), AuthError> {
    let amz_date = header(request, "x-amz-date").unwrap_or_default();
    let expected = hex_lower(&expected_signature(request, auth, amz_date, secret, cache)?);
    if constant_time_eq_ignore_case(&expected, auth.signature.as_bytes()) {
        Ok(())
    } else {
        Err(AuthError::BadSignature)
    }
}

/// Compares lowercase hex with hex of either case, in time that depends only on the length.
fn constant_time_eq_ignore_case(lower: &[u8], any: &[u8]) -> bool {
    lower.len() == any.len()
        && lower
            .iter()
            .zip(any)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y.to_ascii_lowercase()))
            == 0
}

/// Signs a request: returns the `X-Amz-Date` and `Authorization` headers to add. The request's
/// headers must already hold `host` and anything else to sign; every header given is signed.
pub fn sign(
    request: &Request<'_>,
    access_key_id: &str,
    secret: &str,
    region: &str,
    service: &str,
    now: i64,
) -> (String, String) {
    let amz_date = format_amz_date(now);
    let mut names: Vec<String> = request
        .headers
        .iter()
        .map(|(k, _)| k.to_ascii_lowercase())
        .chain(std::iter::once("x-amz-date".to_owned()))
        .collect();
    names.sort();
    names.dedup();
    let mut headers = request.headers.clone();
    headers.push(("x-amz-date", &amz_date));
    let with_date = Request {
        method: request.method,
        raw_path: request.raw_path,
        raw_query: request.raw_query,
        headers,
        payload_hash: request.payload_hash.clone(),
    };
    let signed_headers = names.join(";");
    let auth = Authorization {
        access_key_id,
        date: &amz_date[..8],
        region,
        service,
        signed_headers: &signed_headers,
        signature: "",
    };
    // Every header named is present, so this cannot fail.
    let signature = expected_signature(&with_date, &auth, &amz_date, secret, None)
        .map(|s| hex_lower(&s))
        .unwrap_or([b'0'; 64]);
    let authorization = format!(
        "{ALGORITHM} Credential={access_key_id}/{}, SignedHeaders={signed_headers}, Signature={}",
        auth.scope(),
        String::from_utf8_lossy(&signature)
    );
    (amz_date, authorization)
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AKIDEXAMPLE";
    const SECRET: &str = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY";
    const DATE: &str = "20261128T140047Z";

    fn now() -> i64 {
        parse_amz_date(DATE).unwrap()
    }

    fn secret_of(key: &str) -> Option<String> {
        (key == KEY).then(|| SECRET.to_owned())
    }

    /// Requests signed by botocore (`botocore.auth.SigV4Auth`), as boto3 and the `aws` CLI
    /// send them.
    fn botocore_requests() -> Vec<(Request<'static>, &'static str)> {
        vec![
            (
                Request {
                    method: "POST",
                    raw_path: "/2015-03-31/functions/arn%3Aaws%3Alambda%3Aus-east-1%3A000000000000%3Afunction%3Aecho/invocations",
                    raw_query: Some("Qualifier=%24LATEST"),
                    headers: vec![
                        ("Host", "127.0.0.1:9000"),
                        ("Content-Type", "application/json"),
                        ("X-Amz-Invocation-Type", "Event"),
                        ("X-Amz-Date", DATE),
                        (
                            "Authorization",
                            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/us-east-1/lambda/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-invocation-type, Signature=0ff3dcfb40d100ea935bcd9733b63b629510cdbe844f66b6b824a703b502810a",
                        ),
                    ],
                    payload_hash: payload_hash(br#"{"a": 1}"#),
                },
                "lambda",
            ),
            (
                Request {
                    method: "POST",
                    raw_path: "/",
                    raw_query: None,
                    headers: vec![
                        ("host", "127.0.0.1:9000"),
                        ("content-type", "application/x-amz-json-1.0"),
                        ("x-amz-target", "AmazonSQS.CreateQueue"),
                        ("x-amz-date", DATE),
                        ("x-amz-security-token", "SESSIONTOKEN"),
                        (
                            "authorization",
                            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/us-east-1/sqs/aws4_request, SignedHeaders=content-type;host;x-amz-date;x-amz-security-token;x-amz-target, Signature=724378c15a6e3186687ff784a13ead601de06b9a07437a1e5ed13a866c82f0b0",
                        ),
                    ],
                    payload_hash: payload_hash(br#"{"QueueName":"q"}"#),
                },
                "sqs",
            ),
            (
                Request {
                    method: "GET",
                    raw_path: "/2015-03-31/functions/",
                    raw_query: Some("MaxItems=10&Marker=a%20b"),
                    headers: vec![
                        ("Host", "localhost:9000"),
                        ("X-Amz-Date", DATE),
                        (
                            "Authorization",
                            "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261128/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=c34b10184790d5fe5f5da005755633cb992690741a356cd489e8fb3d182b78ce",
                        ),
                    ],
                    payload_hash: payload_hash(b""),
                },
                "lambda",
            ),
        ]
    }

    #[test]
    fn botocores_signatures_verify() {
        for (request, service) in botocore_requests() {
            let auth =
                verify(&request, now(), secret_of).unwrap_or_else(|e| panic!("{service}: {e}"));
            assert_eq!(auth.access_key_id, KEY);
            assert_eq!(auth.service, service);
        }
    }

    #[test]
    fn any_change_breaks_the_signature() {
        for (mut request, _) in botocore_requests() {
            request.payload_hash = payload_hash(b"something else");
            assert_eq!(
                verify(&request, now(), secret_of).unwrap_err(),
                AuthError::BadSignature
            );
        }
        for (mut request, _) in botocore_requests() {
            for (k, v) in request.headers.iter_mut() {
                if k.eq_ignore_ascii_case("host") {
                    *v = "evil.example:9000";
                }
            }
            assert_eq!(
                verify(&request, now(), secret_of).unwrap_err(),
                AuthError::BadSignature
            );
        }
        for (mut request, _) in botocore_requests() {
            request.raw_path = "/2015-03-31/functions/other/invocations";
            assert_eq!(
                verify(&request, now(), secret_of).unwrap_err(),
                AuthError::BadSignature
            );
        }
        let (request, _) = botocore_requests().remove(0);
        let wrong = |_: &str| Some("another secret".to_owned());
        assert_eq!(
            verify(&request, now(), wrong).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn keys_times_and_headers_are_checked() {
        let (request, _) = botocore_requests().remove(0);
        assert!(matches!(
            verify(&request, now(), |_| None).unwrap_err(),
            AuthError::UnknownKey(k) if k == KEY
        ));
        assert!(verify(&request, now() + MAX_SKEW_S, secret_of).is_ok());
        assert!(matches!(
            verify(&request, now() + MAX_SKEW_S + 1, secret_of).unwrap_err(),
            AuthError::Expired { .. }
        ));
        assert!(matches!(
            verify(&request, now() - MAX_SKEW_S - 1, secret_of).unwrap_err(),
            AuthError::Expired { .. }
        ));
        let mut unsigned = request;
        unsigned
            .headers
            .retain(|(k, _)| !k.eq_ignore_ascii_case("authorization"));
        assert_eq!(
            verify(&unsigned, now(), secret_of).unwrap_err(),
            AuthError::Missing
        );
        for bad in [
            "Bearer x",
            "AWS4-HMAC-SHA256 Credential=K/20261128/us-east-1/lambda/aws4_request, SignedHeaders=host",
            "AWS4-HMAC-SHA256 Credential=K/2026112/us-east-1/lambda/aws4_request, SignedHeaders=host;x-amz-date, Signature=00",
            "AWS4-HMAC-SHA256 Credential=K/20261128/us-east-1/lambda, SignedHeaders=host;x-amz-date, Signature=0000000000000000000000000000000000000000000000000000000000000000",
            "AWS4-HMAC-SHA256 Credential=K/20261128/us-east-1/lambda/aws4_request, SignedHeaders=x-amz-date;host, Signature=0000000000000000000000000000000000000000000000000000000000000000",
            "AWS4-HMAC-SHA256 Credential=K/20261128/us-east-1/lambda/aws4_request, SignedHeaders=content-type, Signature=0000000000000000000000000000000000000000000000000000000000000000",
        ] {
            assert!(
                matches!(Authorization::parse(bad), Err(AuthError::Malformed(_))),
                "{bad:?} parsed"
            );
        }
    }

    #[test]
    fn what_we_sign_verifies() {
        let body = br#"{"FunctionName":"f"}"#;
        let base = Request {
            method: "POST",
            raw_path: "/2015-03-31/functions/a%20b/invocations",
            raw_query: Some("Qualifier=1&A=%2F"),
            headers: vec![
                ("host", "127.0.0.1:9000"),
                ("content-type", "application/json"),
            ],
            payload_hash: payload_hash(body),
        };
        let (date, authorization) = sign(&base, KEY, SECRET, "us-east-1", "lambda", now());
        let mut signed = base.clone();
        signed.headers.push(("x-amz-date", &date));
        signed.headers.push(("authorization", &authorization));
        assert!(verify(&signed, now(), secret_of).is_ok());
        // Hex of either case is the same signature; one digit off is not.
        let (head, signature) = authorization.rsplit_once('=').unwrap();
        let upper = format!("{head}={}", signature.to_ascii_uppercase());
        let mut flipped = signature.to_owned().into_bytes();
        flipped[0] = if flipped[0] == b'0' { b'1' } else { b'0' };
        let flipped = format!("{head}={}", String::from_utf8(flipped).unwrap());
        for (auth, ok) in [(upper, true), (flipped, false)] {
            let mut r = base.clone();
            r.headers.push(("x-amz-date", &date));
            r.headers.push(("authorization", &auth));
            assert_eq!(verify(&r, now(), secret_of).is_ok(), ok, "{auth}");
        }
    }

    #[test]
    fn the_key_cache_keeps_the_most_recent_keys() {
        // Keyed HMACs are compared by what they make of the same message.
        let tag = |mac: HmacSha256| {
            let mut mac = mac;
            mac.update(b"message");
            mac.finalize().into_bytes().to_vec()
        };
        let cache = KeyCache::default();
        let first = tag(cache.get("secret-0", "20261206", "us-east-1", "sqs"));
        for i in 1..=KEY_CACHE_MAX {
            let secret = format!("secret-{i}");
            assert_eq!(
                tag(cache.get(&secret, "20261206", "us-east-1", "sqs")),
                hmac(
                    &signing_key(&secret, "20261206", "us-east-1", "sqs"),
                    b"message"
                )
            );
        }
        assert_eq!(cache.keys.lock().unwrap().len(), KEY_CACHE_MAX);
        // The first was dropped and is derived again, the same.
        assert_eq!(
            tag(cache.get("secret-0", "20261206", "us-east-1", "sqs")),
            first
        );
        assert_ne!(
            tag(cache.get("secret-0", "20261206", "us-east-1", "lambda")),
            first
        );
    }

    #[test]
    fn cached_keys_verify_the_same() {
        let cache = KeyCache::default();
        for _ in 0..2 {
            for (request, _) in botocore_requests() {
                assert!(verify_cached(&request, now(), secret_of, Some(&cache)).is_ok());
            }
        }
        let (request, _) = botocore_requests().remove(0);
        let wrong = |_: &str| Some("another secret".to_owned());
        assert_eq!(
            verify_cached(&request, now(), wrong, Some(&cache)).unwrap_err(),
            AuthError::BadSignature
        );
    }

    #[test]
    fn dates_round_trip() {
        for s in [
            "19700101T000000Z",
            "20000229T235959Z",
            DATE,
            "21000301T120000Z",
        ] {
            assert_eq!(format_amz_date(parse_amz_date(s).unwrap()), s);
        }
        assert_eq!(parse_amz_date("19700101T000001Z"), Some(1));
        for bad in [
            "2026-11-28T14:00:47Z",
            "20261328T000000Z",
            "20261128T250000Z",
            "x",
        ] {
            assert_eq!(parse_amz_date(bad), None, "{bad}");
        }
    }
}
