//! Between S3's wire types (`s3s::dto`) and the object store's.

use std::collections::BTreeMap;

use nimbus_objects::{
    Checksum, ChecksumAlgorithm, ChecksumKind, ContentHeaders, Error, EtagMatch, ObjectRecord,
};
use s3s::S3Error;
use s3s::S3ErrorCode;
use s3s::dto::{self, ETag, ETagCondition, Timestamp, TimestampFormat};

/// The most user metadata an object carries (names and values), as S3 limits it.
pub const MAX_METADATA_BYTES: usize = 2 * 1024;
/// Tags per object or bucket.
pub const MAX_OBJECT_TAGS: usize = 10;
pub const MAX_BUCKET_TAGS: usize = 50;

/// The object store's error as S3's.
pub fn error(e: Error) -> S3Error {
    let code = match &e {
        Error::InvalidBucketName(_) => S3ErrorCode::InvalidBucketName,
        Error::NoSuchBucket => S3ErrorCode::NoSuchBucket,
        Error::BucketAlreadyExists => S3ErrorCode::BucketAlreadyExists,
        Error::BucketAlreadyOwnedByYou => S3ErrorCode::BucketAlreadyOwnedByYou,
        Error::BucketNotEmpty => S3ErrorCode::BucketNotEmpty,
        Error::NoSuchKey => S3ErrorCode::NoSuchKey,
        Error::NoSuchVersion => S3ErrorCode::NoSuchVersion,
        Error::DeleteMarker { version_id, named } => {
            let code = if *named {
                S3ErrorCode::MethodNotAllowed
            } else {
                S3ErrorCode::NoSuchKey
            };
            let mut err = S3Error::with_message(code, e.to_string());
            let mut headers = axum::http::HeaderMap::new();
            headers.insert(
                "x-amz-delete-marker",
                axum::http::HeaderValue::from_static("true"),
            );
            if let Ok(v) = version_id.as_deref().unwrap_or("null").parse() {
                headers.insert("x-amz-version-id", v);
            }
            err.set_headers(headers);
            return err;
        }
        Error::KeyTooLong(_) => S3ErrorCode::KeyTooLongError,
        Error::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
        Error::InvalidRequest(_) => S3ErrorCode::InvalidRequest,
        Error::MalformedXml(_) => S3ErrorCode::MalformedXML,
        Error::PreconditionFailed => S3ErrorCode::PreconditionFailed,
        Error::NotModified(record) => {
            let mut err = S3Error::new(S3ErrorCode::NotModified);
            let mut headers = axum::http::HeaderMap::new();
            if let Ok(v) = format!("\"{}\"", record.etag).parse() {
                headers.insert(axum::http::header::ETAG, v);
            }
            if let Some(v) = http_date(record.last_modified_ms)
                .and_then(|d| axum::http::HeaderValue::from_str(&d).ok())
            {
                headers.insert(axum::http::header::LAST_MODIFIED, v);
            }
            err.set_headers(headers);
            return err;
        }
        Error::InvalidRange { .. } => S3ErrorCode::InvalidRange,
        Error::InvalidDigest => S3ErrorCode::InvalidDigest,
        Error::BadDigest(_) => S3ErrorCode::BadDigest,
        Error::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
        Error::EntityTooLarge(_) => S3ErrorCode::EntityTooLarge,
        Error::EntityTooSmall => S3ErrorCode::EntityTooSmall,
        Error::NoSuchUpload => S3ErrorCode::NoSuchUpload,
        Error::InvalidPart(_) => S3ErrorCode::InvalidPart,
        Error::InvalidPartOrder => S3ErrorCode::InvalidPartOrder,
        Error::Body(source) => {
            // A chunk whose signature does not verify, or a body cut short.
            let text = source.to_string();
            let code = if text.contains("Sha256Mismatch") {
                let mut e = S3Error::with_message(
                    S3ErrorCode::Custom("XAmzContentSHA256Mismatch".into()),
                    "The provided 'x-amz-content-sha256' header does not match what was computed.",
                );
                e.set_status_code(axum::http::StatusCode::BAD_REQUEST);
                return e;
            } else if text.contains("Md5Mismatch") {
                S3ErrorCode::BadDigest
            } else if text.to_ascii_lowercase().contains("signature") {
                S3ErrorCode::SignatureDoesNotMatch
            } else {
                S3ErrorCode::IncompleteBody
            };
            return S3Error::with_message(
                code,
                format!("The request body could not be read: {text}"),
            );
        }
        Error::Storage(message) => {
            tracing::error!(error = %message, "object store failure");
            return S3Error::with_message(
                S3ErrorCode::InternalError,
                "We encountered an internal error. Please try again.",
            );
        }
    };
    S3Error::with_message(code, e.to_string())
}

pub fn timestamp(ms: i64) -> Timestamp {
    let odt = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    Timestamp::from(odt)
}

pub fn ms_of(ts: &Timestamp) -> i64 {
    let odt: time::OffsetDateTime = ts.clone().into();
    (odt.unix_timestamp_nanos() / 1_000_000) as i64
}

pub fn http_date(ms: i64) -> Option<String> {
    let mut out = Vec::new();
    timestamp(ms)
        .format(TimestampFormat::HttpDate, &mut out)
        .ok()?;
    String::from_utf8(out).ok()
}

fn parse_http_date(s: &str) -> Option<Timestamp> {
    Timestamp::parse(TimestampFormat::HttpDate, s).ok()
}

pub fn etag(value: &str) -> ETag {
    ETag::Strong(value.to_owned())
}

pub fn etag_match(condition: Option<ETagCondition>) -> Option<EtagMatch> {
    condition.map(|c| match c {
        ETagCondition::Any => EtagMatch::Any,
        ETagCondition::ETag(tag) => EtagMatch::Tags(vec![tag.into_value()]),
    })
}

pub fn range(r: Option<dto::Range>) -> Option<nimbus_objects::ByteRange> {
    r.map(|r| match r {
        dto::Range::Int { first, last } => nimbus_objects::ByteRange::From { first, last },
        dto::Range::Suffix { length } => nimbus_objects::ByteRange::Suffix(length),
    })
}

/// The five checksum fields of an output: (CRC32, CRC32C, CRC64NVME, SHA1, SHA256).
pub type ChecksumFields = (
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
    Option<String>,
);

pub fn checksum_fields(c: Option<&Checksum>) -> ChecksumFields {
    let mut out: ChecksumFields = Default::default();
    if let Some(c) = c {
        let v = Some(c.value.clone());
        match c.algorithm {
            ChecksumAlgorithm::Crc32 => out.0 = v,
            ChecksumAlgorithm::Crc32c => out.1 = v,
            ChecksumAlgorithm::Crc64Nvme => out.2 = v,
            ChecksumAlgorithm::Sha1 => out.3 = v,
            ChecksumAlgorithm::Sha256 => out.4 = v,
        }
    }
    out
}

pub fn checksum_type(c: Option<&Checksum>) -> Option<dto::ChecksumType> {
    c.map(|c| dto::ChecksumType::from(c.kind.name().to_owned()))
}

pub fn checksum_kind(t: Option<&dto::ChecksumType>) -> Option<ChecksumKind> {
    match t.map(dto::ChecksumType::as_str) {
        Some("FULL_OBJECT") => Some(ChecksumKind::FullObject),
        Some("COMPOSITE") => Some(ChecksumKind::Composite),
        _ => None,
    }
}

/// The one checksum value a request carries in its headers, if any, with its algorithm.
pub fn sent_checksum(
    fields: ChecksumFields,
) -> Result<Option<(ChecksumAlgorithm, String)>, S3Error> {
    let all = [
        (ChecksumAlgorithm::Crc32, fields.0),
        (ChecksumAlgorithm::Crc32c, fields.1),
        (ChecksumAlgorithm::Crc64Nvme, fields.2),
        (ChecksumAlgorithm::Sha1, fields.3),
        (ChecksumAlgorithm::Sha256, fields.4),
    ];
    let mut found = all.into_iter().filter_map(|(a, v)| v.map(|v| (a, v)));
    let first = found.next();
    if found.next().is_some() {
        return Err(s3s::s3_error!(
            InvalidRequest,
            "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
        ));
    }
    Ok(first)
}

pub fn algorithm(a: Option<&dto::ChecksumAlgorithm>) -> Result<Option<ChecksumAlgorithm>, S3Error> {
    match a {
        None => Ok(None),
        Some(a) => ChecksumAlgorithm::parse(a.as_str())
            .map(Some)
            .ok_or_else(|| {
                s3s::s3_error!(
                    InvalidRequest,
                    "Value for x-amz-checksum-algorithm header is invalid."
                )
            }),
    }
}

/// The algorithm a trailer (`x-amz-trailer: x-amz-checksum-crc32`) announces.
pub fn trailer_algorithm(headers: &axum::http::HeaderMap) -> Option<ChecksumAlgorithm> {
    let name = headers.get("x-amz-trailer")?.to_str().ok()?;
    ChecksumAlgorithm::parse(name.trim().strip_prefix("x-amz-checksum-")?)
}

/// The checksum a trailer carried.
pub fn trailer_checksum(
    trailers: Option<axum::http::HeaderMap>,
) -> Option<(ChecksumAlgorithm, String)> {
    let trailers = trailers?;
    for (name, value) in &trailers {
        if let Some(a) = name
            .as_str()
            .strip_prefix("x-amz-checksum-")
            .and_then(ChecksumAlgorithm::parse)
        {
            return Some((a, value.to_str().ok()?.trim().to_owned()));
        }
    }
    None
}

/// The body's length as the client declared it (its decoded length for aws-chunked bodies).
pub fn declared_length(
    headers: &axum::http::HeaderMap,
    content_length: Option<i64>,
) -> Option<u64> {
    headers
        .get("x-amz-decoded-content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse().ok())
        .or_else(|| content_length.and_then(|l| u64::try_from(l).ok()))
}

pub fn metadata(m: Option<dto::Metadata>) -> Result<BTreeMap<String, String>, S3Error> {
    let m: BTreeMap<String, String> = m
        .unwrap_or_default()
        .into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect();
    let size: usize = m.iter().map(|(k, v)| k.len() + v.len()).sum();
    if size > MAX_METADATA_BYTES {
        return Err(s3s::s3_error!(
            MetadataTooLarge,
            "Your metadata headers exceed the maximum allowed metadata size of 2048 bytes."
        ));
    }
    Ok(m)
}

pub fn metadata_out(m: &BTreeMap<String, String>) -> Option<dto::Metadata> {
    (!m.is_empty()).then(|| m.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
}

pub struct Headers {
    pub content_type: Option<String>,
    pub content_encoding: Option<String>,
    pub content_disposition: Option<String>,
    pub content_language: Option<String>,
    pub cache_control: Option<String>,
    pub expires: Option<Timestamp>,
}

pub fn headers(h: Headers) -> ContentHeaders {
    ContentHeaders {
        content_type: h.content_type,
        // aws-chunked is how the body travelled, not what it is.
        content_encoding: h
            .content_encoding
            .map(|e| {
                e.split(',')
                    .map(str::trim)
                    .filter(|p| !p.eq_ignore_ascii_case("aws-chunked") && !p.is_empty())
                    .collect::<Vec<_>>()
                    .join(",")
            })
            .filter(|e| !e.is_empty()),
        content_disposition: h.content_disposition,
        content_language: h.content_language,
        cache_control: h.cache_control,
        expires: h.expires.and_then(|t| {
            let mut out = Vec::new();
            t.format(TimestampFormat::HttpDate, &mut out).ok()?;
            String::from_utf8(out).ok()
        }),
    }
}

pub fn expires_out(h: &ContentHeaders) -> Option<Timestamp> {
    h.expires.as_deref().and_then(parse_http_date)
}

/// Tags from the `x-amz-tagging` header (a URL query string).
pub fn tagging_header(header: Option<&str>) -> Result<Vec<(String, String)>, S3Error> {
    let Some(h) = header.filter(|h| !h.is_empty()) else {
        return Ok(Vec::new());
    };
    let tags: Vec<(String, String)> = form_urlencoded::parse(h.as_bytes())
        .map(|(k, v)| (k.into_owned(), v.into_owned()))
        .collect();
    check_tags(tags, MAX_OBJECT_TAGS)
}

pub fn tags_in(set: dto::TagSet, max: usize) -> Result<Vec<(String, String)>, S3Error> {
    let tags = set
        .into_iter()
        .map(|t| (t.key.unwrap_or_default(), t.value.unwrap_or_default()))
        .collect();
    check_tags(tags, max)
}

fn check_tags(tags: Vec<(String, String)>, max: usize) -> Result<Vec<(String, String)>, S3Error> {
    if tags.len() > max {
        let mut e = S3Error::with_message(
            S3ErrorCode::Custom("BadRequest".into()),
            format!("Object tags cannot be greater than {max}"),
        );
        e.set_status_code(axum::http::StatusCode::BAD_REQUEST);
        return Err(e);
    }
    let mut seen = std::collections::HashSet::new();
    for (k, v) in &tags {
        if k.is_empty() || k.chars().count() > 128 {
            return Err(s3s::s3_error!(
                InvalidTag,
                "The TagKey you have provided is invalid"
            ));
        }
        if v.chars().count() > 256 {
            return Err(s3s::s3_error!(
                InvalidTag,
                "The TagValue you have provided is invalid"
            ));
        }
        if k.starts_with("aws:") {
            return Err(s3s::s3_error!(
                InvalidTag,
                "Your TagKey cannot be prefixed with aws:"
            ));
        }
        if !seen.insert(k.clone()) {
            return Err(s3s::s3_error!(
                InvalidTag,
                "Cannot provide multiple Tags with the same key"
            ));
        }
    }
    Ok(tags)
}

pub fn tag_set(tags: &[(String, String)]) -> dto::TagSet {
    tags.iter()
        .map(|(k, v)| dto::Tag {
            key: Some(k.clone()),
            value: Some(v.clone()),
        })
        .collect()
}

/// Percent-encodes a key or prefix for `encoding-type=url` listings.
pub fn url_encode(s: &str) -> String {
    /// Everything but RFC 3986's unreserved characters and `/`.
    const KEEP: &percent_encoding::AsciiSet = &percent_encoding::NON_ALPHANUMERIC
        .remove(b'-')
        .remove(b'_')
        .remove(b'.')
        .remove(b'~')
        .remove(b'/');
    percent_encoding::utf8_percent_encode(s, KEEP).to_string()
}

/// An object as a listing shows it.
pub fn listed(
    key: String,
    record: &ObjectRecord,
    encode: bool,
    owner: Option<&str>,
) -> dto::Object {
    dto::Object {
        checksum_algorithm: record
            .checksum
            .as_ref()
            .map(|c| vec![dto::ChecksumAlgorithm::from(c.algorithm.name().to_owned())]),
        checksum_type: checksum_type(record.checksum.as_ref()),
        e_tag: Some(etag(&record.etag)),
        key: Some(if encode { url_encode(&key) } else { key }),
        last_modified: Some(timestamp(record.last_modified_ms)),
        owner: owner.map(|o| dto::Owner {
            display_name: None,
            id: Some(o.to_owned()),
        }),
        restore_status: None,
        size: Some(i64::try_from(record.size).unwrap_or(i64::MAX)),
        storage_class: Some(dto::ObjectStorageClass::from_static(
            dto::ObjectStorageClass::STANDARD,
        )),
    }
}

/// A version in ListObjectVersions: an object's, or a delete marker.
pub enum ListedVersion {
    Object(dto::ObjectVersion),
    Marker(dto::DeleteMarkerEntry),
}

pub fn listed_version(
    v: nimbus_objects::ListedVersion,
    encode: bool,
    owner: &str,
) -> ListedVersion {
    let version_id = Some(nimbus_objects::shown_id(&v.record).to_owned());
    let o = listed(v.key, &v.record, encode, Some(owner));
    if v.record.delete_marker {
        return ListedVersion::Marker(dto::DeleteMarkerEntry {
            is_latest: Some(v.latest),
            key: o.key,
            last_modified: o.last_modified,
            owner: o.owner,
            version_id,
        });
    }
    ListedVersion::Object(dto::ObjectVersion {
        checksum_algorithm: o.checksum_algorithm,
        checksum_type: o.checksum_type,
        e_tag: o.e_tag,
        is_latest: Some(v.latest),
        key: o.key,
        last_modified: o.last_modified,
        owner: o.owner,
        restore_status: None,
        size: o.size,
        storage_class: Some(dto::ObjectVersionStorageClass::from_static(
            dto::ObjectVersionStorageClass::STANDARD,
        )),
        version_id,
    })
}

/// A notification configuration's rules (functions and queues; topics and EventBridge are
/// refused).
pub fn notification_rules(
    config: dto::NotificationConfiguration,
) -> Result<Vec<nimbus_objects::NotificationRule>, S3Error> {
    use nimbus_objects::{NotificationRule, Target};
    if config
        .topic_configurations
        .as_ref()
        .is_some_and(|t| !t.is_empty())
    {
        return Err(s3s::s3_error!(
            InvalidArgument,
            "Topic configurations are not supported: notify a function or a queue"
        ));
    }
    if config.event_bridge_configuration.is_some() {
        return Err(s3s::s3_error!(
            InvalidArgument,
            "EventBridge configurations are not supported: notify a function or a queue"
        ));
    }
    let mut rules = Vec::new();
    let mut add = |id: Option<String>,
                   target: Target,
                   events: Vec<dto::Event>,
                   filter: Option<dto::NotificationConfigurationFilter>|
     -> Result<(), S3Error> {
        let (mut prefix, mut suffix) = (None, None);
        for rule in filter
            .and_then(|f| f.key)
            .and_then(|k| k.filter_rules)
            .unwrap_or_default()
        {
            let name = rule.name.map(|n| n.as_str().to_ascii_lowercase());
            let slot = match name.as_deref() {
                Some("prefix") => &mut prefix,
                Some("suffix") => &mut suffix,
                _ => {
                    return Err(s3s::s3_error!(
                        InvalidArgument,
                        "filter rule name must be either prefix or suffix"
                    ));
                }
            };
            if slot.is_some() {
                return Err(s3s::s3_error!(
                    InvalidArgument,
                    "Cannot specify more than one prefix rule or suffix rule in a filter."
                ));
            }
            *slot = Some(rule.value.unwrap_or_default());
        }
        rules.push(NotificationRule {
            id: id
                .filter(|i| !i.is_empty())
                .unwrap_or_else(|| format!("nimbus-notification-{}", rules.len() + 1)),
            target,
            events: events.into_iter().map(|e| e.as_ref().to_owned()).collect(),
            prefix: prefix.unwrap_or_default(),
            suffix: suffix.unwrap_or_default(),
        });
        Ok(())
    };
    for c in config.lambda_function_configurations.unwrap_or_default() {
        add(
            c.id,
            Target::Function(c.lambda_function_arn),
            c.events,
            c.filter,
        )?;
    }
    for c in config.queue_configurations.unwrap_or_default() {
        add(c.id, Target::Queue(c.queue_arn), c.events, c.filter)?;
    }
    Ok(rules)
}

/// A bucket's rules as GetBucketNotificationConfiguration shows them.
pub fn notification_configuration(
    rules: &[nimbus_objects::NotificationRule],
) -> dto::GetBucketNotificationConfigurationOutput {
    use nimbus_objects::Target;
    let filter = |r: &nimbus_objects::NotificationRule| {
        let mut filter_rules = Vec::new();
        if !r.prefix.is_empty() {
            filter_rules.push(dto::FilterRule {
                name: Some(dto::FilterRuleName::from_static(
                    dto::FilterRuleName::PREFIX,
                )),
                value: Some(r.prefix.clone()),
            });
        }
        if !r.suffix.is_empty() {
            filter_rules.push(dto::FilterRule {
                name: Some(dto::FilterRuleName::from_static(
                    dto::FilterRuleName::SUFFIX,
                )),
                value: Some(r.suffix.clone()),
            });
        }
        (!filter_rules.is_empty()).then_some(dto::NotificationConfigurationFilter {
            key: Some(dto::S3KeyFilter {
                filter_rules: Some(filter_rules),
            }),
        })
    };
    let events = |r: &nimbus_objects::NotificationRule| {
        r.events
            .iter()
            .map(|e| dto::Event::from(e.clone()))
            .collect()
    };
    let mut functions = Vec::new();
    let mut queues = Vec::new();
    for r in rules {
        match &r.target {
            Target::Function(arn) => functions.push(dto::LambdaFunctionConfiguration {
                events: events(r),
                filter: filter(r),
                id: Some(r.id.clone()),
                lambda_function_arn: arn.clone(),
            }),
            Target::Queue(arn) => queues.push(dto::QueueConfiguration {
                events: events(r),
                filter: filter(r),
                id: Some(r.id.clone()),
                queue_arn: arn.clone(),
            }),
        }
    }
    dto::GetBucketNotificationConfigurationOutput {
        lambda_function_configurations: (!functions.is_empty()).then_some(functions),
        queue_configurations: (!queues.is_empty()).then_some(queues),
        ..Default::default()
    }
}

pub fn cors_rules(config: dto::CORSConfiguration) -> Vec<nimbus_objects::CorsRule> {
    config
        .cors_rules
        .into_iter()
        .map(|r| nimbus_objects::CorsRule {
            id: r.id,
            allowed_origins: r.allowed_origins,
            allowed_methods: r.allowed_methods,
            allowed_headers: r.allowed_headers.unwrap_or_default(),
            expose_headers: r.expose_headers.unwrap_or_default(),
            max_age_seconds: r.max_age_seconds,
        })
        .collect()
}

pub fn cors_out(rules: &[nimbus_objects::CorsRule]) -> dto::CORSRules {
    rules
        .iter()
        .map(|r| dto::CORSRule {
            id: r.id.clone(),
            allowed_origins: r.allowed_origins.clone(),
            allowed_methods: r.allowed_methods.clone(),
            allowed_headers: (!r.allowed_headers.is_empty()).then(|| r.allowed_headers.clone()),
            expose_headers: (!r.expose_headers.is_empty()).then(|| r.expose_headers.clone()),
            max_age_seconds: r.max_age_seconds,
        })
        .collect()
}
