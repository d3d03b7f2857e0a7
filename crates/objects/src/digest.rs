//! What is computed over an object's bytes while they arrive: the MD5 that makes its ETag and
//! the additional checksum a client asked for (CRC32, CRC32C, CRC64NVME, SHA-1, SHA-256). (The
//! SHA-256 a signature names for the payload is the protocol's to check.)

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use md5::Digest as _;
use serde::{Deserialize, Serialize};

/// An additional checksum algorithm of S3's.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum ChecksumAlgorithm {
    Crc32,
    Crc32c,
    Crc64Nvme,
    Sha1,
    Sha256,
}

impl ChecksumAlgorithm {
    pub const ALL: [Self; 5] = [
        Self::Crc32,
        Self::Crc32c,
        Self::Crc64Nvme,
        Self::Sha1,
        Self::Sha256,
    ];

    /// The name S3 gives it (`CRC32`, `CRC64NVME`, `SHA256`, …).
    pub fn name(self) -> &'static str {
        match self {
            Self::Crc32 => "CRC32",
            Self::Crc32c => "CRC32C",
            Self::Crc64Nvme => "CRC64NVME",
            Self::Sha1 => "SHA1",
            Self::Sha256 => "SHA256",
        }
    }

    /// By S3's name, in any case.
    pub fn parse(name: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|a| a.name().eq_ignore_ascii_case(name))
    }

    fn crc(self) -> Option<crc_fast::CrcAlgorithm> {
        match self {
            Self::Crc32 => Some(crc_fast::CrcAlgorithm::Crc32IsoHdlc),
            Self::Crc32c => Some(crc_fast::CrcAlgorithm::Crc32Iscsi),
            Self::Crc64Nvme => Some(crc_fast::CrcAlgorithm::Crc64Nvme),
            Self::Sha1 | Self::Sha256 => None,
        }
    }

    /// Whether a multipart object's checksum can be of the whole object (the CRCs combine),
    /// rather than a checksum of the parts' checksums.
    pub fn combines(self) -> bool {
        self.crc().is_some()
    }
}

/// How a multipart object's checksum was made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, Default)]
pub enum ChecksumKind {
    /// Over the object's bytes (every single-part object; multipart objects with a CRC).
    #[default]
    FullObject,
    /// Over the parts' checksums, shown with `-N`.
    Composite,
}

impl ChecksumKind {
    pub fn name(self) -> &'static str {
        match self {
            Self::FullObject => "FULL_OBJECT",
            Self::Composite => "COMPOSITE",
        }
    }
}

/// An additional checksum, base64 as S3 shows it (`-N` appended for a composite one).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Checksum {
    pub algorithm: ChecksumAlgorithm,
    pub value: String,
    #[serde(default)]
    pub kind: ChecksumKind,
}

enum Running {
    Crc(crc_fast::Digest, ChecksumAlgorithm),
    Sha1(sha1::Sha1),
    Sha256(sha2::Sha256),
}

impl Running {
    fn new(algorithm: ChecksumAlgorithm) -> Self {
        match algorithm.crc() {
            Some(crc) => Self::Crc(crc_fast::Digest::new(crc), algorithm),
            None if algorithm == ChecksumAlgorithm::Sha1 => Self::Sha1(sha1::Sha1::new()),
            None => Self::Sha256(sha2::Sha256::new()),
        }
    }

    fn update(&mut self, data: &[u8]) {
        match self {
            Self::Crc(d, _) => d.update(data),
            Self::Sha1(d) => d.update(data),
            Self::Sha256(d) => d.update(data),
        }
    }

    fn finish(self) -> Vec<u8> {
        match self {
            Self::Crc(d, algorithm) => crc_bytes(algorithm, d.finalize()),
            Self::Sha1(d) => d.finalize().to_vec(),
            Self::Sha256(d) => d.finalize().to_vec(),
        }
    }
}

/// A CRC's value as the bytes S3 encodes: big-endian, 4 bytes for the 32-bit ones.
fn crc_bytes(algorithm: ChecksumAlgorithm, value: u64) -> Vec<u8> {
    if algorithm == ChecksumAlgorithm::Crc64Nvme {
        value.to_be_bytes().to_vec()
    } else {
        (value as u32).to_be_bytes().to_vec()
    }
}

/// Which digests to compute over a body.
#[derive(Debug, Clone, Copy, Default)]
pub struct Wanted {
    pub checksum: Option<ChecksumAlgorithm>,
}

/// Computes digests over bytes as they arrive.
pub(crate) struct Hasher {
    md5: md5::Md5,
    checksum: Option<Running>,
    len: u64,
}

impl Hasher {
    pub(crate) fn new(wanted: Wanted) -> Self {
        Self {
            md5: md5::Md5::new(),
            checksum: wanted.checksum.map(Running::new),
            len: 0,
        }
    }

    pub(crate) fn update(&mut self, data: &[u8]) {
        self.md5.update(data);
        if let Some(c) = &mut self.checksum {
            c.update(data);
        }
        self.len += data.len() as u64;
    }

    pub(crate) fn finish(self) -> Digests {
        let checksum = self.checksum.map(|c| {
            let algorithm = match &c {
                Running::Crc(_, a) => *a,
                Running::Sha1(_) => ChecksumAlgorithm::Sha1,
                Running::Sha256(_) => ChecksumAlgorithm::Sha256,
            };
            Checksum {
                algorithm,
                value: STANDARD.encode(c.finish()),
                kind: ChecksumKind::FullObject,
            }
        });
        Digests {
            md5: self.md5.finalize().into(),
            checksum,
            len: self.len,
        }
    }
}

/// The digests of a body that arrived whole.
#[derive(Debug, Clone)]
pub struct Digests {
    pub md5: [u8; 16],
    pub checksum: Option<Checksum>,
    pub len: u64,
}

/// What a client said a body's digests would be; each named one is compared.
#[derive(Debug, Clone, Default)]
pub struct Expected {
    /// `Content-MD5`, base64 as sent.
    pub content_md5: Option<String>,
    /// `x-amz-checksum-*`, from a header or a trailer, base64 as sent.
    pub checksum: Option<(ChecksumAlgorithm, String)>,
    /// `Content-Length` (or `x-amz-decoded-content-length`).
    pub length: Option<u64>,
}

impl Digests {
    /// Compares what a client said against what arrived.
    pub fn check(&self, expected: &Expected) -> Result<(), crate::Error> {
        if let Some(len) = expected.length
            && len != self.len
        {
            return Err(crate::Error::IncompleteBody {
                expected: len,
                got: self.len,
            });
        }
        if let Some(md5) = &expected.content_md5 {
            let decoded = STANDARD
                .decode(md5.trim())
                .map_err(|_| crate::Error::InvalidDigest)?;
            if decoded.len() != 16 {
                return Err(crate::Error::InvalidDigest);
            }
            if decoded != self.md5 {
                return Err(crate::Error::BadDigest(
                    "The Content-MD5 you specified did not match what we received.".into(),
                ));
            }
        }
        if let Some((algorithm, value)) = &expected.checksum {
            let got = self
                .checksum
                .as_ref()
                .filter(|c| c.algorithm == *algorithm)
                .ok_or_else(|| {
                    crate::Error::InvalidRequest(format!(
                        "the {} checksum was not computed for this body",
                        algorithm.name()
                    ))
                })?;
            if got.value != value.trim() {
                return Err(crate::Error::BadDigest(format!(
                    "The {} you specified did not match the calculated checksum.",
                    algorithm.name()
                )));
            }
        }
        Ok(())
    }
}

pub(crate) fn to_hex(bytes: &[u8]) -> String {
    nimbus_types::hex::encode(bytes)
}

/// The checksum of a multipart object made of parts with these checksums (base64) and sizes:
/// for a CRC of kind [`ChecksumKind::FullObject`], the parts' CRCs combined into the CRC of
/// the whole; otherwise the checksum of the parts' checksums, with `-N`.
pub fn multipart_checksum(
    algorithm: ChecksumAlgorithm,
    kind: ChecksumKind,
    parts: &[(&str, u64)],
) -> Option<Checksum> {
    let raw: Vec<Vec<u8>> = parts
        .iter()
        .map(|(value, _)| STANDARD.decode(value).ok())
        .collect::<Option<_>>()?;
    let value = match (kind, algorithm.crc()) {
        (ChecksumKind::FullObject, Some(crc)) => {
            let mut whole: Option<u64> = None;
            for (bytes, (_, len)) in raw.iter().zip(parts) {
                let mut buf = [0u8; 8];
                buf[8 - bytes.len()..].copy_from_slice(bytes);
                let value = u64::from_be_bytes(buf);
                whole = Some(match whole {
                    None => value,
                    Some(w) => crc_fast::checksum_combine(crc, w, value, *len),
                });
            }
            STANDARD.encode(crc_bytes(algorithm, whole.unwrap_or(0)))
        }
        (ChecksumKind::FullObject, None) => return None,
        (ChecksumKind::Composite, _) => {
            let mut running = Running::new(algorithm);
            for bytes in &raw {
                running.update(bytes);
            }
            format!("{}-{}", STANDARD.encode(running.finish()), parts.len())
        }
    };
    Some(Checksum {
        algorithm,
        value,
        kind,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn digest(algorithm: ChecksumAlgorithm, data: &[u8]) -> String {
        let mut h = Hasher::new(Wanted {
            checksum: Some(algorithm),
        });
        h.update(data);
        h.finish().checksum.map(|c| c.value).unwrap_or_default()
    }

    #[test]
    fn checksums_match_known_values() {
        // "123456789" is the check input of the CRC catalogue.
        let crc32 = u32::from_be_bytes(
            STANDARD
                .decode(digest(ChecksumAlgorithm::Crc32, b"123456789"))
                .unwrap()[..]
                .try_into()
                .unwrap(),
        );
        assert_eq!(crc32, 0xCBF4_3926);
        let crc32c = u32::from_be_bytes(
            STANDARD
                .decode(digest(ChecksumAlgorithm::Crc32c, b"123456789"))
                .unwrap()[..]
                .try_into()
                .unwrap(),
        );
        assert_eq!(crc32c, 0xE306_9283);
        let crc64 = u64::from_be_bytes(
            STANDARD
                .decode(digest(ChecksumAlgorithm::Crc64Nvme, b"123456789"))
                .unwrap()[..]
                .try_into()
                .unwrap(),
        );
        assert_eq!(crc64, 0xAE8B_1486_0A79_9888);
        assert_eq!(
            digest(ChecksumAlgorithm::Sha256, b""),
            "47DEQpj8HBSa+/TImW+5JCeuQeRkm5NMpJWZG3hSuFU="
        );
    }

    #[test]
    fn combined_crcs_equal_the_crc_of_the_whole() {
        for algorithm in [
            ChecksumAlgorithm::Crc32,
            ChecksumAlgorithm::Crc32c,
            ChecksumAlgorithm::Crc64Nvme,
        ] {
            let (a, b) = (b"hello, ".as_slice(), b"multipart world".as_slice());
            let whole = digest(algorithm, &[a, b].concat());
            let parts = [
                (digest(algorithm, a), a.len() as u64),
                (digest(algorithm, b), b.len() as u64),
            ];
            let parts: Vec<(&str, u64)> = parts.iter().map(|(v, l)| (v.as_str(), *l)).collect();
            let combined = multipart_checksum(algorithm, ChecksumKind::FullObject, &parts).unwrap();
            assert_eq!(combined.value, whole, "{algorithm:?}");
        }
    }

    #[test]
    fn a_body_is_checked_against_every_claim() {
        let mut h = Hasher::new(Wanted {
            checksum: Some(ChecksumAlgorithm::Crc32),
        });
        h.update(b"hello");
        let d = h.finish();
        let good = Expected {
            content_md5: Some("XUFAKrxLKna5cZ2REBfFkg==".into()),
            checksum: Some((
                ChecksumAlgorithm::Crc32,
                digest(ChecksumAlgorithm::Crc32, b"hello"),
            )),
            length: Some(5),
        };
        d.check(&good).unwrap();
        let wrong_md5 = Expected {
            content_md5: Some("AAAAAAAAAAAAAAAAAAAAAA==".into()),
            ..good.clone()
        };
        assert!(matches!(
            d.check(&wrong_md5),
            Err(crate::Error::BadDigest(_))
        ));
        let short = Expected {
            length: Some(6),
            ..good.clone()
        };
        assert!(matches!(
            d.check(&short),
            Err(crate::Error::IncompleteBody { .. })
        ));
        let wrong_crc = Expected {
            checksum: Some((ChecksumAlgorithm::Crc32, "AAAAAA==".into())),
            ..good.clone()
        };
        assert!(matches!(
            d.check(&wrong_crc),
            Err(crate::Error::BadDigest(_))
        ));
    }
}
