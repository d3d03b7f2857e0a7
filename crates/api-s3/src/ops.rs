//! The S3 operations, each mapped onto the object store.

use std::sync::Arc;

use nimbus_identity::Caller;
use nimbus_objects::{
    ChecksumAlgorithm, ChecksumKind, CompletedPart, Expected, ListQuery, MAX_PART_BYTES,
    MAX_PUT_BYTES, MetadataDirective, NewObject, ObjectRecord, Objects, ReadConditions,
    UploadRecord, VersionQuery, VersionRef, Versioning, Wanted, WriteConditions,
};
use s3s::dto::*;
use s3s::{S3, S3Request, S3Response, S3Result, s3_error};

use crate::access::{action_of, authorize};
use crate::convert::{self, error};

pub(crate) struct Handler {
    pub objects: Arc<Objects>,
    pub region: String,
    /// Checks the targets of notification configurations.
    pub targets: Arc<dyn nimbus_objects::Targets>,
}

/// Who is calling (the access check put it there).
fn caller<T>(req: &S3Request<T>) -> S3Result<Caller> {
    req.extensions
        .get::<Caller>()
        .cloned()
        .ok_or_else(|| s3_error!(AccessDenied, "Anonymous access is not allowed"))
}

/// The caller as a change's notification records name it.
fn actor<T>(req: &S3Request<T>, change: nimbus_objects::Change) -> S3Result<nimbus_objects::Actor> {
    Ok(nimbus_objects::Actor {
        principal: caller(req)?.arn(),
        change,
    })
}

/// The checksum algorithm a write's body is hashed with: the one the client names (in a
/// header value, `x-amz-sdk-checksum-algorithm` or the trailer it announces), else CRC64NVME,
/// which S3 computes for every new object.
fn body_algorithm(
    headers: &axum::http::HeaderMap,
    sent: &Option<(ChecksumAlgorithm, String)>,
    named: Option<&s3s::dto::ChecksumAlgorithm>,
) -> S3Result<ChecksumAlgorithm> {
    let named = convert::algorithm(named)?;
    if let (Some((a, _)), Some(n)) = (sent, named)
        && *a != n
    {
        return Err(s3_error!(
            InvalidRequest,
            "Value for x-amz-sdk-checksum-algorithm header is invalid."
        ));
    }
    Ok(sent
        .as_ref()
        .map(|(a, _)| *a)
        .or(named)
        .or_else(|| convert::trailer_algorithm(headers))
        .unwrap_or(ChecksumAlgorithm::Crc64Nvme))
}

/// A write's body and what its client claimed about it.
struct Incoming<'a> {
    headers: &'a axum::http::HeaderMap,
    trailers: Option<s3s::TrailingHeaders>,
    body: Option<StreamingBlob>,
    algorithm: ChecksumAlgorithm,
    /// A checksum sent in a header.
    sent: Option<(ChecksumAlgorithm, String)>,
    content_md5: Option<String>,
    content_length: Option<i64>,
}

/// Reads a request body into the store's staging area and checks every digest the client
/// claimed for it (Content-MD5, x-amz-checksum-* in a header or trailer, the declared length;
/// the payload hash a signature names is checked by the signature layer as the body streams
/// through).
async fn stage_body(
    objects: &Objects,
    incoming: Incoming<'_>,
    max: u64,
) -> S3Result<nimbus_objects::Staged> {
    let length = convert::declared_length(incoming.headers, incoming.content_length);
    let wanted = Wanted {
        checksum: Some(incoming.algorithm),
    };
    let body = incoming
        .body
        .unwrap_or_else(|| StreamingBlob::wrap::<_, std::io::Error>(futures_util::stream::empty()));
    let staged = objects
        .stage(body, wanted, length, max)
        .await
        .map_err(error)?;
    let checksum = match incoming.sent {
        Some(s) => Some(s),
        None => convert::trailer_checksum(incoming.trailers.and_then(|t| t.take())),
    };
    staged
        .digests
        .check(&Expected {
            content_md5: incoming.content_md5,
            checksum,
            length,
        })
        .map_err(error)?;
    Ok(staged)
}

/// A success without a body: 204.
fn no_content<T>(output: T) -> S3Result<S3Response<T>> {
    let mut response = S3Response::new(output);
    response.status = Some(axum::http::StatusCode::NO_CONTENT);
    Ok(response)
}

fn write_conditions(
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
) -> S3Result<WriteConditions> {
    let if_none_match_any = match if_none_match {
        None => false,
        Some(ETagCondition::Any) => true,
        Some(ETagCondition::ETag(_)) => {
            return Err(s3_error!(
                NotImplemented,
                "A header you provided implies functionality that is not implemented: If-None-Match takes only *"
            ));
        }
    };
    let if_match = match if_match {
        None => None,
        Some(ETagCondition::ETag(tag)) => Some(tag.into_value()),
        Some(ETagCondition::Any) => {
            return Err(s3_error!(
                NotImplemented,
                "A header you provided implies functionality that is not implemented: If-Match takes an ETag"
            ));
        }
    };
    Ok(WriteConditions {
        if_none_match_any,
        if_match,
    })
}

/// A `versionId` parameter.
fn version_ref(v: Option<&str>) -> S3Result<Option<VersionRef>> {
    v.map(VersionRef::parse).transpose().map_err(error)
}

/// A copy's source: bucket, key and the version named.
struct Source {
    bucket: String,
    key: String,
    version: Option<VersionRef>,
    /// The version id as the request gave it.
    version_id: Option<String>,
}

impl Source {
    /// The action reading it needs.
    fn action(&self) -> &'static str {
        if self.version.is_some() {
            "s3:GetObjectVersion"
        } else {
            "s3:GetObject"
        }
    }
}

fn source_of(source: &CopySource) -> S3Result<Source> {
    match source {
        CopySource::Bucket {
            bucket,
            key,
            version_id,
        } => Ok(Source {
            bucket: bucket.to_string(),
            key: key.to_string(),
            version: version_ref(version_id.as_deref())?,
            version_id: version_id.as_deref().map(str::to_owned),
        }),
        _ => Err(s3_error!(
            NotImplemented,
            "Access points and outposts are not supported"
        )),
    }
}

fn max_keys(m: Option<i32>) -> S3Result<usize> {
    match m {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys cannot be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

fn encode_url(e: &Option<EncodingType>) -> S3Result<bool> {
    match e.as_ref().map(EncodingType::as_str) {
        None => Ok(false),
        Some("url") => Ok(true),
        Some(_) => Err(s3_error!(
            InvalidArgument,
            "Invalid Encoding Method specified in Request"
        )),
    }
}

fn common_prefixes(prefixes: Vec<String>, encode: bool) -> Option<Vec<CommonPrefix>> {
    Some(
        prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(if encode { convert::url_encode(&p) } else { p }),
            })
            .collect(),
    )
}

fn check_delimiter(d: &Option<String>) -> Option<String> {
    d.clone().filter(|d| !d.is_empty())
}

fn part_number(n: i32) -> S3Result<u32> {
    u32::try_from(n)
        .ok()
        .filter(|n| (1..=nimbus_objects::MAX_PARTS).contains(n))
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "Part number must be an integer between 1 and 10000, inclusive"
            )
        })
}

/// What GetObject and HeadObject ask for.
struct ReadRequest<'a> {
    bucket: &'a str,
    key: &'a str,
    version_id: Option<&'a str>,
    conditions: ReadConditions,
    range: Option<Range>,
    part_number: Option<i32>,
    checksum_mode: bool,
}

/// An object opened for GetObject or HeadObject.
struct Read {
    opened: nimbus_objects::Opened,
    part: Option<u32>,
    /// The checksum to show: asked for, and of the whole object.
    checksum: Option<nimbus_objects::Checksum>,
    version_id: Option<String>,
}

fn read_conditions(
    if_match: Option<ETagCondition>,
    if_none_match: Option<ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> ReadConditions {
    ReadConditions {
        if_match: convert::etag_match(if_match),
        if_none_match: convert::etag_match(if_none_match),
        if_modified_since_ms: if_modified_since.map(convert::ms_of),
        if_unmodified_since_ms: if_unmodified_since.map(convert::ms_of),
    }
}

impl Handler {
    /// The version id a response shows for `record`: none in a bucket never versioned.
    fn shown_version(&self, bucket: &str, record: &ObjectRecord) -> Option<String> {
        if record.version_id.is_some() {
            return record.version_id.clone();
        }
        match self.objects.bucket(bucket) {
            Ok(Some(b)) if b.versioning != Versioning::Unversioned => Some("null".into()),
            _ => None,
        }
    }

    /// A bucket's record, or NoSuchBucket.
    fn bucket(&self, name: &str) -> S3Result<Arc<nimbus_objects::BucketRecord>> {
        self.objects
            .bucket(name)
            .map_err(error)?
            .ok_or_else(|| s3_error!(NoSuchBucket))
    }

    /// Stores an object from PutObject's input (or a form's, made into one).
    async fn store(
        &self,
        input: PutObjectInput,
        headers: &axum::http::HeaderMap,
        trailers: Option<s3s::TrailingHeaders>,
        actor: nimbus_objects::Actor,
    ) -> S3Result<PutObjectOutput> {
        nimbus_objects::check_key(&input.key).map_err(error)?;
        if self.objects.bucket(&input.bucket).map_err(error)?.is_none() {
            return Err(s3_error!(NoSuchBucket));
        }
        let sent = convert::sent_checksum((
            input.checksum_crc32,
            input.checksum_crc32c,
            input.checksum_crc64nvme,
            input.checksum_sha1,
            input.checksum_sha256,
        ))?;
        let algorithm = body_algorithm(headers, &sent, input.checksum_algorithm.as_ref())?;
        let new = NewObject {
            headers: convert::headers(convert::Headers {
                content_type: input.content_type.map(|c| c.to_string()),
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: input.expires,
            }),
            metadata: convert::metadata(input.metadata)?,
            tags: convert::tagging_header(input.tagging.as_deref())?,
        };
        let conditions = write_conditions(input.if_match, input.if_none_match)?;
        let staged = stage_body(
            &self.objects,
            Incoming {
                headers,
                trailers,
                body: input.body,
                algorithm,
                sent,
                content_md5: input.content_md5,
                content_length: input.content_length,
            },
            MAX_PUT_BYTES,
        )
        .await?;
        let size = staged.len();
        let record = self
            .objects
            .put(&input.bucket, &input.key, staged, new, conditions, &actor)
            .await
            .map_err(error)?;
        let (crc32, crc32c, crc64, sha1, sha256) =
            convert::checksum_fields(record.checksum.as_ref());
        Ok(PutObjectOutput {
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_type: convert::checksum_type(record.checksum.as_ref()),
            e_tag: Some(convert::etag(&record.etag)),
            size: Some(i64::try_from(size).unwrap_or(i64::MAX)),
            version_id: self.shown_version(&input.bucket, &record),
            ..Default::default()
        })
    }

    fn read(&self, r: ReadRequest<'_>) -> S3Result<Read> {
        let version = version_ref(r.version_id)?;
        let part = r.part_number.map(part_number).transpose()?;
        if part.is_some() && r.range.is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "Cannot specify both Range header and partNumber query parameter"
            ));
        }
        let opened = self
            .objects
            .open_object(
                r.bucket,
                r.key,
                version.as_ref(),
                &r.conditions,
                convert::range(r.range),
                part,
            )
            .map_err(error)?;
        let size = opened.record.size;
        let whole = opened.range.is_none() || opened.range == Some((0, size.saturating_sub(1)));
        let checksum = opened
            .record
            .checksum
            .clone()
            .filter(|_| whole && r.checksum_mode);
        Ok(Read {
            version_id: self.shown_version(r.bucket, &opened.record),
            opened,
            part,
            checksum,
        })
    }
}

/// A [`ReadRequest`] from GetObject's or HeadObject's input (the same fields in both).
macro_rules! read_request {
    ($input:ident) => {
        ReadRequest {
            bucket: &$input.bucket,
            key: &$input.key,
            version_id: $input.version_id.as_deref(),
            conditions: read_conditions(
                $input.if_match,
                $input.if_none_match,
                $input.if_modified_since.as_ref(),
                $input.if_unmodified_since.as_ref(),
            ),
            range: $input.range,
            part_number: $input.part_number,
            checksum_mode: $input.checksum_mode.is_some(),
        }
    };
}

/// The headers GetObject and HeadObject share, as one output type or the other.
macro_rules! object_output {
    ($ty:ident, $read:expr) => {{
        let read = &$read;
        let record = &read.opened.record;
        let (crc32, crc32c, crc64, sha1, sha256) = convert::checksum_fields(read.checksum.as_ref());
        $ty {
            accept_ranges: Some("bytes".into()),
            cache_control: record.headers.cache_control.clone(),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_type: convert::checksum_type(read.checksum.as_ref()),
            content_disposition: record.headers.content_disposition.clone(),
            content_encoding: record.headers.content_encoding.clone(),
            content_language: record.headers.content_language.clone(),
            content_length: Some(i64::try_from(read.opened.body.len()).unwrap_or(i64::MAX)),
            content_range: read
                .opened
                .range
                .map(|(first, last)| format!("bytes {first}-{last}/{}", record.size)),
            content_type: record
                .headers
                .content_type
                .as_deref()
                .and_then(|c| c.parse().ok()),
            e_tag: Some(convert::etag(&record.etag)),
            expires: convert::expires_out(&record.headers),
            last_modified: Some(convert::timestamp(record.last_modified_ms)),
            metadata: convert::metadata_out(&record.metadata),
            parts_count: read
                .part
                .filter(|_| !record.parts.is_empty())
                .map(|_| record.parts.len() as i32),
            version_id: read.version_id.clone(),
            ..Default::default()
        }
    }};
}

#[async_trait::async_trait]
impl S3 for Handler {
    // ---- buckets ----

    async fn list_buckets(
        &self,
        req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let caller = caller(&req)?;
        let prefix = req.input.prefix.clone().unwrap_or_default();
        let buckets = self
            .objects
            .buckets_of(&caller.account)
            .map_err(error)?
            .into_iter()
            .filter(|(name, _)| name.starts_with(&prefix))
            .map(|(name, record)| Bucket {
                bucket_region: Some(record.region.clone()),
                creation_date: Some(convert::timestamp(record.created_ms)),
                name: Some(name),
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            continuation_token: None,
            owner: Some(Owner {
                display_name: None,
                id: Some(caller.account),
            }),
            prefix: req.input.prefix,
        }))
    }

    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let caller = caller(&req)?;
        let input = req.input;
        let region = input
            .create_bucket_configuration
            .as_ref()
            .and_then(|c| c.location_constraint.as_ref())
            .map(|l| l.as_str().to_owned())
            .filter(|l| !l.is_empty())
            .unwrap_or_else(|| self.region.clone());
        if region != self.region {
            return Err(s3_error!(
                IllegalLocationConstraintException,
                "The {region} location constraint is incompatible for the region specific endpoint this request was sent to."
            ));
        }
        self.objects
            .create_bucket(&caller.account, &input.bucket, &region)
            .await
            .map_err(error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{}", input.bucket)),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        let record = self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(HeadBucketOutput {
            bucket_region: Some(record.region.clone()),
            ..Default::default()
        }))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        self.objects
            .delete_bucket(&req.input.bucket)
            .await
            .map_err(error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        let record = self.bucket(&req.input.bucket)?;
        // us-east-1 is shown as no constraint at all, as S3 does.
        let location_constraint = (record.region != "us-east-1")
            .then(|| BucketLocationConstraint::from(record.region.clone()));
        Ok(S3Response::new(GetBucketLocationOutput {
            location_constraint,
        }))
    }

    async fn get_bucket_versioning(
        &self,
        req: S3Request<GetBucketVersioningInput>,
    ) -> S3Result<S3Response<GetBucketVersioningOutput>> {
        let record = self.bucket(&req.input.bucket)?;
        // A bucket never versioned has no status at all.
        let status = match record.versioning {
            Versioning::Unversioned => None,
            Versioning::Enabled => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::ENABLED,
            )),
            Versioning::Suspended => Some(BucketVersioningStatus::from_static(
                BucketVersioningStatus::SUSPENDED,
            )),
        };
        Ok(S3Response::new(GetBucketVersioningOutput {
            status,
            ..Default::default()
        }))
    }

    async fn put_bucket_versioning(
        &self,
        req: S3Request<PutBucketVersioningInput>,
    ) -> S3Result<S3Response<PutBucketVersioningOutput>> {
        let config = req.input.versioning_configuration;
        if config
            .mfa_delete
            .as_ref()
            .is_some_and(|m| m.as_str() == MFADelete::ENABLED)
        {
            return Err(s3_error!(
                NotImplemented,
                "A header you provided implies functionality that is not implemented: MFA delete"
            ));
        }
        let state = match config.status.as_ref().map(BucketVersioningStatus::as_str) {
            Some(BucketVersioningStatus::ENABLED) => Versioning::Enabled,
            Some(BucketVersioningStatus::SUSPENDED) => Versioning::Suspended,
            _ => {
                return Err(s3_error!(
                    MalformedXML,
                    "The XML you provided was not well-formed or did not validate against our published schema: Status is Enabled or Suspended"
                ));
            }
        };
        self.objects
            .set_versioning(&req.input.bucket, state)
            .await
            .map_err(error)?;
        Ok(S3Response::new(PutBucketVersioningOutput {}))
    }

    async fn get_bucket_tagging(
        &self,
        req: S3Request<GetBucketTaggingInput>,
    ) -> S3Result<S3Response<GetBucketTaggingOutput>> {
        let record = self.bucket(&req.input.bucket)?;
        if record.tags.is_empty() {
            return Err(s3_error!(NoSuchTagSet, "The TagSet does not exist"));
        }
        Ok(S3Response::new(GetBucketTaggingOutput {
            tag_set: convert::tag_set(&record.tags),
        }))
    }

    async fn put_bucket_tagging(
        &self,
        req: S3Request<PutBucketTaggingInput>,
    ) -> S3Result<S3Response<PutBucketTaggingOutput>> {
        let tags = convert::tags_in(req.input.tagging.tag_set, convert::MAX_BUCKET_TAGS)?;
        self.objects
            .set_bucket_tags(&req.input.bucket, tags)
            .await
            .map_err(error)?;
        Ok(S3Response::new(PutBucketTaggingOutput {}))
    }

    async fn delete_bucket_tagging(
        &self,
        req: S3Request<DeleteBucketTaggingInput>,
    ) -> S3Result<S3Response<DeleteBucketTaggingOutput>> {
        self.objects
            .set_bucket_tags(&req.input.bucket, Vec::new())
            .await
            .map_err(error)?;
        no_content(DeleteBucketTaggingOutput {})
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let rules = convert::cors_rules(req.input.cors_configuration);
        if rules.is_empty() {
            return Err(error(nimbus_objects::Error::MalformedXml(
                "a CORS configuration holds at least one rule".into(),
            )));
        }
        self.objects
            .set_cors(&req.input.bucket, rules)
            .await
            .map_err(error)?;
        Ok(S3Response::new(PutBucketCorsOutput {}))
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let record = self.bucket(&req.input.bucket)?;
        if record.cors.is_empty() {
            return Err(s3_error!(
                NoSuchCORSConfiguration,
                "The CORS configuration does not exist"
            ));
        }
        Ok(S3Response::new(GetBucketCorsOutput {
            cors_rules: Some(convert::cors_out(&record.cors)),
        }))
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        self.objects
            .set_cors(&req.input.bucket, Vec::new())
            .await
            .map_err(error)?;
        no_content(DeleteBucketCorsOutput {})
    }

    async fn put_bucket_notification_configuration(
        &self,
        req: S3Request<PutBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<PutBucketNotificationConfigurationOutput>> {
        let input = req.input;
        let rules = convert::notification_rules(input.notification_configuration)?;
        self.objects
            .set_notifications(&input.bucket, rules, self.targets.as_ref())
            .await
            .map_err(error)?;
        Ok(S3Response::new(PutBucketNotificationConfigurationOutput {}))
    }

    async fn get_bucket_notification_configuration(
        &self,
        req: S3Request<GetBucketNotificationConfigurationInput>,
    ) -> S3Result<S3Response<GetBucketNotificationConfigurationOutput>> {
        let record = self.bucket(&req.input.bucket)?;
        Ok(S3Response::new(convert::notification_configuration(
            &record.notifications,
        )))
    }

    // ---- objects ----

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        let actor = actor(&req, nimbus_objects::Change::Put)?;
        let output = self
            .store(req.input, &req.headers, req.trailing_headers, actor)
            .await?;
        Ok(S3Response::new(output))
    }

    async fn post_object(
        &self,
        req: S3Request<PostObjectInput>,
    ) -> S3Result<S3Response<PostObjectOutput>> {
        // The access check saw the bucket only: the key comes from the form.
        let caller = caller(&req)?;
        authorize(
            &self.objects,
            &caller,
            "s3:PutObject",
            Some(&req.input.bucket),
            Some(&req.input.key),
            true,
        )?;
        let actor = actor(&req, nimbus_objects::Change::Post)?;
        let i = req.input;
        let input = PutObjectInput {
            body: i.body,
            bucket: i.bucket,
            cache_control: i.cache_control,
            checksum_algorithm: i.checksum_algorithm,
            checksum_crc32: i.checksum_crc32,
            checksum_crc32c: i.checksum_crc32c,
            checksum_crc64nvme: i.checksum_crc64nvme,
            checksum_sha1: i.checksum_sha1,
            checksum_sha256: i.checksum_sha256,
            content_disposition: i.content_disposition,
            content_encoding: i.content_encoding,
            content_language: i.content_language,
            content_md5: i.content_md5,
            content_type: i.content_type,
            expires: i.expires,
            if_match: i.if_match,
            if_none_match: i.if_none_match,
            key: i.key,
            metadata: i.metadata,
            tagging: i.tagging,
            ..Default::default()
        };
        // The form's length is the file's, not the request's.
        let out = self
            .store(input, &axum::http::HeaderMap::new(), None, actor)
            .await?;
        Ok(S3Response::new(PostObjectOutput {
            checksum_crc32: out.checksum_crc32,
            checksum_crc32c: out.checksum_crc32c,
            checksum_crc64nvme: out.checksum_crc64nvme,
            checksum_sha1: out.checksum_sha1,
            checksum_sha256: out.checksum_sha256,
            checksum_type: out.checksum_type,
            e_tag: out.e_tag,
            size: out.size,
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let input = req.input;
        let read = self.read(read_request!(input))?;
        let tag_count =
            (!read.opened.record.tags.is_empty()).then_some(read.opened.record.tags.len() as i32);
        let mut output = object_output!(GetObjectOutput, read);
        output.tag_count = tag_count;
        output.body = Some(match read.opened.body.into_bytes() {
            Ok(bytes) => StreamingBlob::from(s3s::Body::from(bytes)),
            Err(reader) => StreamingBlob::wrap(reader.into_stream()),
        });
        Ok(S3Response::new(output))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let input = req.input;
        let read = self.read(read_request!(input))?;
        Ok(S3Response::new(object_output!(HeadObjectOutput, read)))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let actor = actor(&req, nimbus_objects::Change::Delete)?;
        let input = req.input;
        let version = version_ref(input.version_id.as_deref())?;
        if let Some(ETagCondition::ETag(tag)) = input.if_match {
            match self
                .objects
                .head(&input.bucket, &input.key, version.as_ref())
            {
                Ok(record) if record.etag != tag.value() => {
                    return Err(s3_error!(PreconditionFailed));
                }
                Ok(_) => {}
                Err(e) => return Err(error(e)),
            }
        }
        let removal = self
            .objects
            .delete(
                &input.bucket,
                &input.key,
                input.version_id.as_deref(),
                &actor,
            )
            .await
            .map_err(error)?;
        no_content(DeleteObjectOutput {
            delete_marker: removal.delete_marker.then_some(true),
            version_id: removal.version_id,
            ..Default::default()
        })
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let caller = caller(&req)?;
        let input = req.input;
        if input.delete.objects.len() > 1000 {
            return Err(s3_error!(
                MalformedXML,
                "The XML you provided was not well-formed or did not validate against our published schema: at most 1000 keys"
            ));
        }
        let quiet = input.delete.quiet.unwrap_or(false);
        let mut allowed = Vec::new();
        let mut errors = Vec::new();
        for object in input.delete.objects {
            let action = if object.version_id.is_some() {
                "s3:DeleteObjectVersion"
            } else {
                action_of("DeleteObject")
            };
            let denied = authorize(
                &self.objects,
                &caller,
                action,
                Some(&input.bucket),
                Some(&object.key),
                true,
            );
            match denied {
                Ok(()) => allowed.push(nimbus_objects::Doomed {
                    key: object.key,
                    version: object.version_id,
                }),
                Err(e) => errors.push(Error {
                    code: Some("AccessDenied".into()),
                    key: Some(object.key),
                    message: e.message().map(str::to_owned),
                    version_id: object.version_id,
                }),
            }
        }
        let results = self
            .objects
            .delete_many(
                &input.bucket,
                allowed,
                &nimbus_objects::Actor {
                    principal: caller.arn(),
                    change: nimbus_objects::Change::Delete,
                },
            )
            .await
            .map_err(error)?;
        let mut deleted = Vec::new();
        for d in results {
            match d.result {
                Ok(removal) => {
                    if !quiet {
                        // A marker made: its id; a version removed: the id asked for, and the
                        // same again when that version was a marker.
                        let marker_id = removal
                            .delete_marker
                            .then(|| removal.version_id.clone())
                            .flatten();
                        deleted.push(DeletedObject {
                            key: Some(d.key),
                            version_id: d.version,
                            delete_marker: removal.delete_marker.then_some(true),
                            delete_marker_version_id: marker_id,
                        });
                    }
                }
                Err(e) => {
                    let s3 = error(e);
                    errors.push(Error {
                        code: Some(s3.code().as_str().to_owned()),
                        key: Some(d.key),
                        message: s3.message().map(str::to_owned),
                        version_id: d.version,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: Some(deleted),
            errors: Some(errors),
            request_charged: None,
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let caller = caller(&req)?;
        let input = req.input;
        let source = source_of(&input.copy_source)?;
        authorize(
            &self.objects,
            &caller,
            source.action(),
            Some(&source.bucket),
            Some(&source.key),
            true,
        )?;
        let replace = input
            .metadata_directive
            .as_ref()
            .map(s3s::dto::MetadataDirective::as_str)
            .map(|d| match d {
                "COPY" => Ok(false),
                "REPLACE" => Ok(true),
                _ => Err(s3_error!(InvalidArgument, "Unknown metadata directive.")),
            })
            .transpose()?
            .unwrap_or(false);
        let replace_tags = match input
            .tagging_directive
            .as_ref()
            .map(TaggingDirective::as_str)
        {
            None | Some("COPY") => false,
            Some("REPLACE") => true,
            Some(_) => return Err(s3_error!(InvalidArgument, "Unknown tagging directive.")),
        };
        let source_conditions = read_conditions(
            input.copy_source_if_match,
            input.copy_source_if_none_match,
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        );
        let directive = if replace || replace_tags {
            let from = self
                .objects
                .head(&source.bucket, &source.key, source.version.as_ref())
                .map_err(error)?;
            let tags = if replace_tags {
                convert::tagging_header(input.tagging.as_deref())?
            } else {
                from.tags.clone()
            };
            if replace {
                MetadataDirective::Replace(NewObject {
                    headers: convert::headers(convert::Headers {
                        content_type: input.content_type.map(|c| c.to_string()),
                        content_encoding: input.content_encoding,
                        content_disposition: input.content_disposition,
                        content_language: input.content_language,
                        cache_control: input.cache_control,
                        expires: input.expires,
                    }),
                    metadata: convert::metadata(input.metadata)?,
                    tags,
                })
            } else {
                MetadataDirective::Replace(NewObject {
                    headers: from.headers,
                    metadata: from.metadata,
                    tags,
                })
            }
        } else {
            MetadataDirective::Copy
        };
        let record = self
            .objects
            .copy(
                &source.bucket,
                &source.key,
                source.version.as_ref(),
                &source_conditions,
                &input.bucket,
                &input.key,
                directive,
                WriteConditions::default(),
                &nimbus_objects::Actor {
                    principal: caller.arn(),
                    change: nimbus_objects::Change::Copy,
                },
            )
            .await
            .map_err(error)?;
        let (crc32, crc32c, crc64, sha1, sha256) =
            convert::checksum_fields(record.checksum.as_ref());
        Ok(S3Response::new(CopyObjectOutput {
            copy_object_result: Some(CopyObjectResult {
                checksum_crc32: crc32,
                checksum_crc32c: crc32c,
                checksum_crc64nvme: crc64,
                checksum_sha1: sha1,
                checksum_sha256: sha256,
                checksum_type: convert::checksum_type(record.checksum.as_ref()),
                e_tag: Some(convert::etag(&record.etag)),
                last_modified: Some(convert::timestamp(record.last_modified_ms)),
            }),
            copy_source_version_id: source.version_id,
            version_id: self.shown_version(&input.bucket, &record),
            ..Default::default()
        }))
    }

    async fn get_object_tagging(
        &self,
        req: S3Request<GetObjectTaggingInput>,
    ) -> S3Result<S3Response<GetObjectTaggingOutput>> {
        let version = version_ref(req.input.version_id.as_deref())?;
        let record = self
            .objects
            .head(&req.input.bucket, &req.input.key, version.as_ref())
            .map_err(error)?;
        Ok(S3Response::new(GetObjectTaggingOutput {
            tag_set: convert::tag_set(&record.tags),
            version_id: self.shown_version(&req.input.bucket, &record),
        }))
    }

    async fn put_object_tagging(
        &self,
        req: S3Request<PutObjectTaggingInput>,
    ) -> S3Result<S3Response<PutObjectTaggingOutput>> {
        let tags = convert::tags_in(req.input.tagging.tag_set, convert::MAX_OBJECT_TAGS)?;
        let version = version_ref(req.input.version_id.as_deref())?;
        let record = self
            .objects
            .set_object_tags(&req.input.bucket, &req.input.key, version.as_ref(), tags)
            .await
            .map_err(error)?;
        Ok(S3Response::new(PutObjectTaggingOutput {
            version_id: self.shown_version(&req.input.bucket, &record),
        }))
    }

    async fn delete_object_tagging(
        &self,
        req: S3Request<DeleteObjectTaggingInput>,
    ) -> S3Result<S3Response<DeleteObjectTaggingOutput>> {
        let version = version_ref(req.input.version_id.as_deref())?;
        let record = self
            .objects
            .set_object_tags(
                &req.input.bucket,
                &req.input.key,
                version.as_ref(),
                Vec::new(),
            )
            .await
            .map_err(error)?;
        no_content(DeleteObjectTaggingOutput {
            version_id: self.shown_version(&req.input.bucket, &record),
        })
    }

    // ---- listing ----

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let input = req.input;
        let encode = encode_url(&input.encoding_type)?;
        let max = max_keys(input.max_keys)?;
        let delimiter = check_delimiter(&input.delimiter);
        let page = self
            .objects
            .list(
                &input.bucket,
                &ListQuery {
                    prefix: input.prefix.clone().unwrap_or_default(),
                    delimiter: delimiter.clone(),
                    after: input.marker.clone().filter(|m| !m.is_empty()),
                    max,
                },
            )
            .map_err(error)?;
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        // NextMarker is given only with a delimiter; without one the client continues from
        // the last key.
        let next_marker = (page.truncated && delimiter.is_some())
            .then(|| page.last.clone().map(enc))
            .flatten();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            marker: Some(enc(input.marker.unwrap_or_default())),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            contents: Some(
                page.objects
                    .into_iter()
                    .map(|o| convert::listed(o.key, &o.record, encode, None))
                    .collect(),
            ),
            common_prefixes: common_prefixes(page.common_prefixes, encode),
            delimiter: delimiter.map(enc),
            next_marker,
            encoding_type: input.encoding_type,
            request_charged: None,
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let owner = caller(&req)?.account;
        let input = req.input;
        let encode = encode_url(&input.encoding_type)?;
        let max = max_keys(input.max_keys)?;
        let delimiter = check_delimiter(&input.delimiter);
        let after = match &input.continuation_token {
            Some(token) => Some(decode_token(token)?),
            None => input.start_after.clone().filter(|s| !s.is_empty()),
        };
        let page = self
            .objects
            .list(
                &input.bucket,
                &ListQuery {
                    prefix: input.prefix.clone().unwrap_or_default(),
                    delimiter: delimiter.clone(),
                    after,
                    max,
                },
            )
            .map_err(error)?;
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        let fetch_owner = input.fetch_owner.unwrap_or(false);
        let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            max_keys: Some(max as i32),
            key_count: Some(key_count),
            continuation_token: input.continuation_token,
            is_truncated: Some(page.truncated),
            next_continuation_token: page
                .truncated
                .then(|| page.last.as_deref().map(encode_token))
                .flatten(),
            contents: Some(
                page.objects
                    .into_iter()
                    .map(|o| {
                        convert::listed(
                            o.key,
                            &o.record,
                            encode,
                            fetch_owner.then_some(owner.as_str()),
                        )
                    })
                    .collect(),
            ),
            common_prefixes: common_prefixes(page.common_prefixes, encode),
            delimiter: delimiter.map(enc),
            encoding_type: input.encoding_type,
            start_after: input.start_after.map(enc),
            request_charged: None,
        }))
    }

    async fn list_object_versions(
        &self,
        req: S3Request<ListObjectVersionsInput>,
    ) -> S3Result<S3Response<ListObjectVersionsOutput>> {
        let input = req.input;
        let encode = encode_url(&input.encoding_type)?;
        let max = max_keys(input.max_keys)?;
        let delimiter = check_delimiter(&input.delimiter);
        let key_marker = input.key_marker.clone().filter(|m| !m.is_empty());
        let version_marker = input.version_id_marker.clone().filter(|m| !m.is_empty());
        if version_marker.is_some() && key_marker.is_none() {
            return Err(s3_error!(
                InvalidArgument,
                "A version-id marker cannot be specified without a key marker."
            ));
        }
        if let Some(v) = &version_marker {
            version_ref(Some(v))?;
        }
        let owner = self.bucket(&input.bucket)?.owner.clone();
        let page = self
            .objects
            .list_versions(
                &input.bucket,
                &VersionQuery {
                    prefix: input.prefix.clone().unwrap_or_default(),
                    delimiter: delimiter.clone(),
                    key_marker,
                    version_marker,
                    max,
                },
            )
            .map_err(error)?;
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        let mut versions = Vec::new();
        let mut markers = Vec::new();
        for v in page.versions {
            match convert::listed_version(v, encode, &owner) {
                convert::ListedVersion::Object(o) => versions.push(o),
                convert::ListedVersion::Marker(m) => markers.push(m),
            }
        }
        Ok(S3Response::new(ListObjectVersionsOutput {
            name: Some(input.bucket),
            prefix: Some(enc(input.prefix.unwrap_or_default())),
            key_marker: Some(enc(input.key_marker.unwrap_or_default())),
            version_id_marker: Some(input.version_id_marker.unwrap_or_default()),
            max_keys: Some(max as i32),
            is_truncated: Some(page.truncated),
            next_key_marker: page.next_key_marker.map(enc),
            next_version_id_marker: page.next_version_marker,
            versions: Some(versions),
            delete_markers: Some(markers),
            common_prefixes: common_prefixes(page.common_prefixes, encode),
            delimiter: delimiter.map(enc),
            encoding_type: input.encoding_type,
            request_charged: None,
        }))
    }

    // ---- multipart ----

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let caller = caller(&req)?;
        let input = req.input;
        let algorithm = convert::algorithm(input.checksum_algorithm.as_ref())?;
        let kind = convert::checksum_kind(input.checksum_type.as_ref());
        if input.checksum_type.is_some() && kind.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "Value for x-amz-checksum-type header is invalid."
            ));
        }
        if kind.is_some() && algorithm.is_none() {
            return Err(s3_error!(
                InvalidRequest,
                "The x-amz-checksum-type header can only be used with the x-amz-checksum-algorithm header."
            ));
        }
        // Without a type, CRC64NVME is of the whole object and the others are composite.
        let kind = kind.unwrap_or(match algorithm {
            Some(ChecksumAlgorithm::Crc64Nvme) => ChecksumKind::FullObject,
            _ => ChecksumKind::Composite,
        });
        let record = UploadRecord {
            bucket: input.bucket.clone(),
            key: input.key.clone(),
            initiated_ms: nimbus_types::time::now_ms(),
            initiator: caller.arn(),
            headers: convert::headers(convert::Headers {
                content_type: input.content_type.map(|c| c.to_string()),
                content_encoding: input.content_encoding,
                content_disposition: input.content_disposition,
                content_language: input.content_language,
                cache_control: input.cache_control,
                expires: input.expires,
            }),
            metadata: convert::metadata(input.metadata)?,
            tags: convert::tagging_header(input.tagging.as_deref())?,
            checksum_algorithm: algorithm,
            checksum_kind: kind,
        };
        let id = self.objects.create_upload(record).await.map_err(error)?;
        Ok(S3Response::new(CreateMultipartUploadOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(id),
            checksum_algorithm: algorithm
                .map(|a| s3s::dto::ChecksumAlgorithm::from(a.name().to_owned())),
            checksum_type: algorithm.map(|_| ChecksumType::from(kind.name().to_owned())),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let input = req.input;
        let number = part_number(input.part_number)?;
        let upload = self
            .objects
            .upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(error)?;
        let sent = convert::sent_checksum((
            input.checksum_crc32,
            input.checksum_crc32c,
            input.checksum_crc64nvme,
            input.checksum_sha1,
            input.checksum_sha256,
        ))?;
        let named = body_algorithm(&req.headers, &sent, input.checksum_algorithm.as_ref())?;
        let explicit = sent.is_some()
            || input.checksum_algorithm.is_some()
            || convert::trailer_algorithm(&req.headers).is_some();
        if let Some(want) = upload.checksum_algorithm
            && explicit
            && want != named
        {
            return Err(s3_error!(
                InvalidRequest,
                "Checksum Type mismatch occurred, expected checksum Type: {}, actual checksum Type: {}",
                want.name().to_ascii_lowercase(),
                named.name().to_ascii_lowercase()
            ));
        }
        let algorithm = upload.checksum_algorithm.unwrap_or(named);
        let staged = stage_body(
            &self.objects,
            Incoming {
                headers: &req.headers,
                trailers: req.trailing_headers,
                body: input.body,
                algorithm,
                sent,
                content_md5: input.content_md5,
                content_length: input.content_length,
            },
            MAX_PART_BYTES,
        )
        .await?;
        let part = self
            .objects
            .put_part(&input.bucket, &input.key, &input.upload_id, number, staged)
            .await
            .map_err(error)?;
        let shown = part
            .checksum
            .as_ref()
            .filter(|_| upload.checksum_algorithm.is_some() || explicit);
        let (crc32, crc32c, crc64, sha1, sha256) = convert::checksum_fields(shown);
        Ok(S3Response::new(UploadPartOutput {
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            e_tag: Some(convert::etag(&part.etag)),
            ..Default::default()
        }))
    }

    async fn upload_part_copy(
        &self,
        req: S3Request<UploadPartCopyInput>,
    ) -> S3Result<S3Response<UploadPartCopyOutput>> {
        let caller = caller(&req)?;
        let input = req.input;
        let number = part_number(input.part_number)?;
        let upload = self
            .objects
            .upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(error)?;
        let source = source_of(&input.copy_source)?;
        authorize(
            &self.objects,
            &caller,
            source.action(),
            Some(&source.bucket),
            Some(&source.key),
            true,
        )?;
        let range = input
            .copy_source_range
            .as_deref()
            .map(parse_copy_range)
            .transpose()?;
        let conditions = read_conditions(
            input.copy_source_if_match,
            input.copy_source_if_none_match,
            input.copy_source_if_modified_since.as_ref(),
            input.copy_source_if_unmodified_since.as_ref(),
        );
        let opened = self
            .objects
            .open_object(
                &source.bucket,
                &source.key,
                source.version.as_ref(),
                &conditions,
                range,
                None,
            )
            .map_err(|e| match e {
                nimbus_objects::Error::NotModified(_) => s3_error!(PreconditionFailed),
                other => error(other),
            })?;
        let algorithm = upload
            .checksum_algorithm
            .unwrap_or(ChecksumAlgorithm::Crc64Nvme);
        let len = opened.body.len();
        let stream = Box::pin(opened.body.into_stream());
        let staged = self
            .objects
            .stage(
                stream,
                Wanted {
                    checksum: Some(algorithm),
                },
                Some(len),
                MAX_PART_BYTES,
            )
            .await
            .map_err(error)?;
        let part = self
            .objects
            .put_part(&input.bucket, &input.key, &input.upload_id, number, staged)
            .await
            .map_err(error)?;
        let (crc32, crc32c, crc64, sha1, sha256) = convert::checksum_fields(
            part.checksum
                .as_ref()
                .filter(|_| upload.checksum_algorithm.is_some()),
        );
        Ok(S3Response::new(UploadPartCopyOutput {
            copy_part_result: Some(CopyPartResult {
                checksum_crc32: crc32,
                checksum_crc32c: crc32c,
                checksum_crc64nvme: crc64,
                checksum_sha1: sha1,
                checksum_sha256: sha256,
                e_tag: Some(convert::etag(&part.etag)),
                last_modified: Some(convert::timestamp(part.last_modified_ms)),
            }),
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let actor = actor(&req, nimbus_objects::Change::CompleteMultipartUpload)?;
        let input = req.input;
        let upload = self
            .objects
            .upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(error)?;
        let listed = input
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default();
        let mut parts = Vec::with_capacity(listed.len());
        for p in listed {
            let number = part_number(p.part_number.ok_or_else(|| {
                s3_error!(
                    MalformedXML,
                    "The XML you provided was not well-formed: a part has no PartNumber"
                )
            })?)?;
            let etag = p.e_tag.map(ETag::into_value).ok_or_else(|| {
                s3_error!(
                    MalformedXML,
                    "The XML you provided was not well-formed: a part has no ETag"
                )
            })?;
            let checksum = convert::sent_checksum((
                p.checksum_crc32,
                p.checksum_crc32c,
                p.checksum_crc64nvme,
                p.checksum_sha1,
                p.checksum_sha256,
            ))?
            .map(|(_, v)| v);
            parts.push(CompletedPart {
                number,
                etag,
                checksum,
            });
        }
        let conditions = write_conditions(input.if_match, input.if_none_match)?;
        let record = self
            .objects
            .complete_upload(
                &input.bucket,
                &input.key,
                &input.upload_id,
                parts,
                conditions,
                &actor,
            )
            .await
            .map_err(error)?;
        let sent = convert::sent_checksum((
            input.checksum_crc32,
            input.checksum_crc32c,
            input.checksum_crc64nvme,
            input.checksum_sha1,
            input.checksum_sha256,
        ))?;
        if let (Some((_, value)), Some(have)) = (&sent, &record.checksum)
            && value != &have.value
        {
            tracing::info!(bucket = %input.bucket, key = %input.key, "a completed upload's checksum differs from the one the client sent");
        }
        if let Some(size) = input.mpu_object_size
            && u64::try_from(size).ok() != Some(record.size)
        {
            tracing::info!(bucket = %input.bucket, "a completed upload's size differs from the one the client sent");
        }
        let shown = record
            .checksum
            .as_ref()
            .filter(|_| upload.checksum_algorithm.is_some());
        let (crc32, crc32c, crc64, sha1, sha256) = convert::checksum_fields(shown);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(input.bucket.clone()),
            key: Some(input.key.clone()),
            location: Some(format!("/{}/{}", input.bucket, input.key)),
            e_tag: Some(convert::etag(&record.etag)),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_type: shown.and_then(|c| convert::checksum_type(Some(c))),
            version_id: self.shown_version(&input.bucket, &record),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        self.objects
            .abort_upload(&req.input.bucket, &req.input.key, &req.input.upload_id)
            .await
            .map_err(error)?;
        no_content(AbortMultipartUploadOutput::default())
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let input = req.input;
        let upload = self
            .objects
            .upload(&input.bucket, &input.key, &input.upload_id)
            .map_err(error)?;
        let max = match input.max_parts {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(InvalidArgument, "max-parts cannot be negative"));
            }
            Some(n) => (n as usize).min(1000),
        };
        let after = u32::try_from(input.part_number_marker.unwrap_or(0)).unwrap_or(0);
        let (parts, truncated) = self
            .objects
            .parts(&input.bucket, &input.key, &input.upload_id, after, max)
            .map_err(error)?;
        let next = parts.last().map(|(n, _)| *n as i32);
        let owner = Owner {
            display_name: None,
            id: Some(upload.initiator.clone()),
        };
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(input.bucket),
            key: Some(input.key),
            upload_id: Some(input.upload_id),
            checksum_algorithm: upload
                .checksum_algorithm
                .map(|a| s3s::dto::ChecksumAlgorithm::from(a.name().to_owned())),
            checksum_type: upload
                .checksum_algorithm
                .map(|_| ChecksumType::from(upload.checksum_kind.name().to_owned())),
            initiator: Some(Initiator {
                display_name: None,
                id: Some(upload.initiator.clone()),
            }),
            owner: Some(owner),
            is_truncated: Some(truncated),
            max_parts: Some(max as i32),
            part_number_marker: input.part_number_marker,
            next_part_number_marker: truncated.then_some(next).flatten(),
            storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
            parts: Some(
                parts
                    .into_iter()
                    .map(|(n, p)| {
                        let (crc32, crc32c, crc64, sha1, sha256) = convert::checksum_fields(
                            p.checksum
                                .as_ref()
                                .filter(|_| upload.checksum_algorithm.is_some()),
                        );
                        Part {
                            checksum_crc32: crc32,
                            checksum_crc32c: crc32c,
                            checksum_crc64nvme: crc64,
                            checksum_sha1: sha1,
                            checksum_sha256: sha256,
                            e_tag: Some(convert::etag(&p.etag)),
                            last_modified: Some(convert::timestamp(p.last_modified_ms)),
                            part_number: Some(n as i32),
                            size: Some(i64::try_from(p.size).unwrap_or(i64::MAX)),
                        }
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let input = req.input;
        let encode = encode_url(&input.encoding_type)?;
        let max = match input.max_uploads {
            None => 1000,
            Some(n) if n < 0 => {
                return Err(s3_error!(InvalidArgument, "max-uploads cannot be negative"));
            }
            Some(n) => (n as usize).min(1000),
        };
        let prefix = input.prefix.clone().unwrap_or_default();
        let key_marker = input.key_marker.clone().unwrap_or_default();
        let id_marker = input.upload_id_marker.clone().unwrap_or_default();
        let (uploads, truncated) = self
            .objects
            .uploads(&input.bucket, &prefix, &key_marker, &id_marker, max)
            .map_err(error)?;
        let enc = |s: String| if encode { convert::url_encode(&s) } else { s };
        let next = uploads.last().map(|(k, u)| (k.clone(), u.id.clone()));
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(input.bucket),
            prefix: Some(enc(prefix)),
            key_marker: Some(enc(key_marker)),
            upload_id_marker: Some(id_marker),
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next.as_ref().map(|(k, _)| enc(k.clone())),
            next_upload_id_marker: next.map(|(_, id)| id),
            encoding_type: input.encoding_type,
            uploads: Some(
                uploads
                    .into_iter()
                    .map(|(key, u)| MultipartUpload {
                        checksum_algorithm: u
                            .record
                            .checksum_algorithm
                            .map(|a| s3s::dto::ChecksumAlgorithm::from(a.name().to_owned())),
                        checksum_type: u
                            .record
                            .checksum_algorithm
                            .map(|_| ChecksumType::from(u.record.checksum_kind.name().to_owned())),
                        initiated: Some(convert::timestamp(u.record.initiated_ms)),
                        initiator: Some(Initiator {
                            display_name: None,
                            id: Some(u.record.initiator.clone()),
                        }),
                        key: Some(enc(key)),
                        owner: None,
                        storage_class: Some(StorageClass::from_static(StorageClass::STANDARD)),
                        upload_id: Some(u.id),
                    })
                    .collect(),
            ),
            ..Default::default()
        }))
    }
}

/// `x-amz-copy-source-range: bytes=first-last`.
fn parse_copy_range(s: &str) -> S3Result<nimbus_objects::ByteRange> {
    let bad = || {
        s3_error!(
            InvalidArgument,
            "The x-amz-copy-source-range value must be of the form bytes=first-last where first and last are the zero-based offsets of the first and last bytes to copy"
        )
    };
    let (first, last) = s
        .strip_prefix("bytes=")
        .and_then(|r| r.split_once('-'))
        .ok_or_else(bad)?;
    let first: u64 = first.parse().map_err(|_| bad())?;
    let last: u64 = last.parse().map_err(|_| bad())?;
    if last < first {
        return Err(bad());
    }
    Ok(nimbus_objects::ByteRange::From {
        first,
        last: Some(last),
    })
}

/// A continuation token: the key (or common prefix) the page ended at, base64.
fn encode_token(last: &str) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(last.as_bytes())
}

fn decode_token(token: &str) -> S3Result<String> {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn continuation_tokens_round_trip() {
        for key in ["", "a", "ab", "abc", "photos/2026/é.jpg", "x y+z/"] {
            assert_eq!(decode_token(&encode_token(key)).unwrap(), key);
        }
        assert!(decode_token("!!").is_err());
    }

    #[test]
    fn copy_ranges_parse() {
        assert_eq!(
            parse_copy_range("bytes=0-99").unwrap(),
            nimbus_objects::ByteRange::From {
                first: 0,
                last: Some(99)
            }
        );
        assert!(parse_copy_range("bytes=5-1").is_err());
        assert!(parse_copy_range("0-1").is_err());
    }
}
