//! Authorization: each operation is an IAM action (`s3:GetObject`, `s3:ListBucket`, …) on
//! the bucket's or object's ARN, allowed or denied by the caller's policies; a bucket of
//! another account is refused to everyone (nimbus has no bucket policies yet).

use std::sync::Arc;

use nimbus_identity::Caller;
use nimbus_objects::Objects;
use s3s::S3Result;
use s3s::access::{S3Access, S3AccessContext};
use s3s::path::S3Path;

pub(crate) struct Access {
    pub objects: Arc<Objects>,
    pub identity: Arc<nimbus_identity::Identity>,
}

/// The IAM action an S3 operation needs (the documented one for each operation).
pub fn action_of(operation: &str) -> &'static str {
    match operation {
        "ListBuckets" => "s3:ListAllMyBuckets",
        "ListObjects" | "ListObjectsV2" | "HeadBucket" => "s3:ListBucket",
        "ListObjectVersions" => "s3:ListBucketVersions",
        "HeadObject" | "GetObject" | "GetObjectAttributes" => "s3:GetObject",
        "PutObject"
        | "PostObject"
        | "CopyObject"
        | "CreateMultipartUpload"
        | "UploadPart"
        | "UploadPartCopy"
        | "CompleteMultipartUpload" => "s3:PutObject",
        "DeleteObject" | "DeleteObjects" => "s3:DeleteObject",
        "AbortMultipartUpload" => "s3:AbortMultipartUpload",
        "ListParts" => "s3:ListMultipartUploadParts",
        "ListMultipartUploads" => "s3:ListBucketMultipartUploads",
        "CreateBucket" => "s3:CreateBucket",
        "DeleteBucket" => "s3:DeleteBucket",
        "GetBucketLocation" => "s3:GetBucketLocation",
        "GetBucketVersioning" => "s3:GetBucketVersioning",
        "PutBucketVersioning" => "s3:PutBucketVersioning",
        "GetObjectTagging" => "s3:GetObjectTagging",
        "PutObjectTagging" => "s3:PutObjectTagging",
        "DeleteObjectTagging" => "s3:DeleteObjectTagging",
        "GetBucketTagging" => "s3:GetBucketTagging",
        "PutBucketTagging" | "DeleteBucketTagging" => "s3:PutBucketTagging",
        "GetBucketCors" => "s3:GetBucketCORS",
        "PutBucketCors" | "DeleteBucketCors" => "s3:PutBucketCORS",
        "GetBucketNotificationConfiguration" => "s3:GetBucketNotification",
        "PutBucketNotificationConfiguration" => "s3:PutBucketNotification",
        "GetBucketPolicy" => "s3:GetBucketPolicy",
        "PutBucketPolicy" => "s3:PutBucketPolicy",
        "DeleteBucketPolicy" => "s3:DeleteBucketPolicy",
        "GetBucketAcl" => "s3:GetBucketAcl",
        "GetObjectAcl" => "s3:GetObjectAcl",
        _ => "s3:Unsupported",
    }
}

/// The action an operation needs when it names one version of an object (`versionId`).
pub fn version_action(operation: &str) -> Option<&'static str> {
    Some(match operation {
        "GetObject" | "HeadObject" => "s3:GetObjectVersion",
        "DeleteObject" => "s3:DeleteObjectVersion",
        "GetObjectTagging" => "s3:GetObjectVersionTagging",
        "PutObjectTagging" => "s3:PutObjectVersionTagging",
        "DeleteObjectTagging" => "s3:DeleteObjectVersionTagging",
        _ => return None,
    })
}

/// A bucket's or object's ARN.
pub(crate) fn arn(bucket: &str, key: Option<&str>) -> String {
    match key {
        Some(k) => format!("arn:aws:s3:::{bucket}/{k}"),
        None => format!("arn:aws:s3:::{bucket}"),
    }
}

/// Refuses `action` on `bucket`/`key` unless the caller's policies allow it and the bucket
/// (when it exists) is the caller's account's.
pub(crate) fn authorize(
    objects: &Objects,
    caller: &Caller,
    action: &str,
    bucket: Option<&str>,
    key: Option<&str>,
    check_owner: bool,
) -> S3Result<()> {
    let resource = bucket.map_or_else(|| "*".to_owned(), |b| arn(b, key));
    caller
        .authorize(action, &resource)
        .map_err(|d| s3s::s3_error!(AccessDenied, "{}", d.message))?;
    if check_owner
        && let Some(bucket) = bucket
        && let Ok(Some(record)) = objects.bucket(bucket)
        && record.owner != caller.account
    {
        return Err(s3s::s3_error!(
            AccessDenied,
            "User: {} is not authorized to perform: {action} on resource: {resource} because no \
             resource-based policy allows the {action} action",
            caller.arn()
        ));
    }
    Ok(())
}

/// Refuses a bucket of another account.
fn authorize_owner(objects: &Objects, caller: &Caller, bucket: Option<&str>) -> S3Result<()> {
    if let Some(bucket) = bucket
        && let Ok(Some(record)) = objects.bucket(bucket)
        && record.owner != caller.account
    {
        return Err(s3s::s3_error!(
            AccessDenied,
            "User: {} is not authorized to access the bucket {bucket} of another account",
            caller.arn()
        ));
    }
    Ok(())
}

#[async_trait::async_trait]
impl S3Access for Access {
    async fn check(&self, cx: &mut S3AccessContext<'_>) -> S3Result<()> {
        let caller = match (
            cx.extensions_mut().get::<Caller>().cloned(),
            cx.credentials(),
        ) {
            (Some(caller), None) => caller,
            (Some(caller), Some(c)) if c.access_key == caller.access_key_id => caller,
            (None, Some(c)) => {
                // Signed inside a POST form: a long-lived key.
                let now = nimbus_types::time::now_ms().div_euclid(1000);
                let (_, caller) = self
                    .identity
                    .resolve(&c.access_key, None, now)
                    .map_err(|_| s3s::s3_error!(InvalidAccessKeyId))?;
                cx.extensions_mut().insert(caller.clone());
                caller
            }
            (Some(_), Some(_)) => {
                return Err(s3s::s3_error!(
                    AccessDenied,
                    "the request names two different access keys"
                ));
            }
            (None, None) => {
                return Err(s3s::s3_error!(
                    AccessDenied,
                    "Anonymous access is not allowed: sign the request"
                ));
            }
        };
        let operation = cx.s3_op().name();
        let names_version = cx
            .uri()
            .query()
            .is_some_and(|q| q.split('&').any(|p| p.starts_with("versionId=")));
        let action = names_version
            .then(|| version_action(operation))
            .flatten()
            .unwrap_or_else(|| action_of(operation));
        let (bucket, key) = match cx.s3_path() {
            S3Path::Root => (None, None),
            S3Path::Bucket { bucket } => (Some(&**bucket), None),
            S3Path::Object { bucket, key } => (Some(&**bucket), Some(&**key)),
        };
        if operation == "DeleteObjects" || operation == "PostObject" {
            // Each key is authorized on its own (a refused key is one entry of DeleteObjects'
            // result; a form's key is known once the form is read); the bucket must still be
            // the caller's.
            return authorize_owner(&self.objects, &caller, bucket);
        }
        authorize(
            &self.objects,
            &caller,
            action,
            bucket,
            key,
            operation != "CreateBucket",
        )
    }
}
