//! S3's rules for bucket names and object keys.

use crate::Error;

/// The longest key S3 stores, in bytes of UTF-8.
pub const MAX_KEY_BYTES: usize = 1024;

/// Checks a bucket name against S3's rules for general purpose buckets: 3 to 63 characters of
/// lowercase letters, digits, dots and hyphens, starting and ending with a letter or digit, no
/// two adjacent dots, not shaped like an IP address, and none of the prefixes and suffixes S3
/// reserves.
pub fn check_bucket_name(name: &str) -> Result<(), Error> {
    let bad = |why: &str| Err(Error::InvalidBucketName(format!("{name:?}: {why}")));
    if !(3..=63).contains(&name.len()) {
        return bad("a bucket name is 3 to 63 characters long");
    }
    if !name
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'.' || b == b'-')
    {
        return bad("only lowercase letters, digits, dots and hyphens are allowed");
    }
    let edge = |b: u8| b.is_ascii_lowercase() || b.is_ascii_digit();
    let bytes = name.as_bytes();
    if !edge(bytes[0]) || !edge(bytes[bytes.len() - 1]) {
        return bad("a bucket name starts and ends with a letter or digit");
    }
    if name.contains("..") {
        return bad("two adjacent periods are not allowed");
    }
    if name.parse::<std::net::Ipv4Addr>().is_ok() {
        return bad("a bucket name is not formatted as an IP address");
    }
    for prefix in ["xn--", "sthree-", "amzn-s3-demo-"] {
        if name.starts_with(prefix) {
            return bad("the prefix is reserved");
        }
    }
    for suffix in ["-s3alias", "--ol-s3", ".mrap", "--x-s3", "--table-s3"] {
        if name.ends_with(suffix) {
            return bad("the suffix is reserved");
        }
    }
    Ok(())
}

/// Checks an object key: 1 to 1,024 bytes.
pub fn check_key(key: &str) -> Result<(), Error> {
    if key.is_empty() {
        return Err(Error::InvalidArgument(
            "an object key cannot be empty".into(),
        ));
    }
    if key.len() > MAX_KEY_BYTES {
        return Err(Error::KeyTooLong(key.len()));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bucket_names_follow_s3s_rules() {
        for good in [
            "abc",
            "my-bucket.logs",
            "a1b2c3",
            &"a".repeat(63),
            "1bucket",
        ] {
            assert!(check_bucket_name(good).is_ok(), "{good}");
        }
        for bad in [
            "ab",
            &"a".repeat(64),
            "My-Bucket",
            "bucket_name",
            "-bucket",
            "bucket-",
            ".bucket",
            "my..bucket",
            "192.168.5.4",
            "xn--bucket",
            "sthree-data",
            "data-s3alias",
            "data--ol-s3",
            "data.mrap",
            "data--x-s3",
            "buc ket",
        ] {
            assert!(
                matches!(check_bucket_name(bad), Err(Error::InvalidBucketName(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn keys_are_one_to_1024_bytes() {
        assert!(check_key("a").is_ok());
        assert!(check_key(&"k".repeat(1024)).is_ok());
        // Counted in bytes, not characters.
        assert!(matches!(
            check_key(&"é".repeat(513)),
            Err(Error::KeyTooLong(1026))
        ));
        assert!(check_key("").is_err());
    }
}
