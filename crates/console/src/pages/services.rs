//! The services behind applications: buckets (browse, upload, download), tables (items and
//! queries), user pools (users) and stacks (resources, outputs, events).

use axum::extract::{Multipart, Path, Query};
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;
use serde_json::{Value, json};

use super::{Shared, failed, refusal, status_of};
use crate::call::{query, segment};
use crate::html::{Nav, Notice, bytes, csrf, page, text};
use crate::xml::{blocks, text as xml_text, within};
use crate::{Ctx, html_response, same_origin, secure};

/// The largest file the console uploads in one request.
const MAX_UPLOAD_BYTES: usize = 64 << 20;
/// The most an upload form may hold: the file and a little for its other fields.
pub const MAX_UPLOAD_FORM_BYTES: usize = MAX_UPLOAD_BYTES + (64 << 10);
/// The most a text field of the upload form may hold.
const MAX_FIELD_BYTES: usize = 4096;

/// A text field of a multipart form, read under [`MAX_FIELD_BYTES`].
async fn small_text(mut field: axum::extract::multipart::Field<'_>) -> Option<String> {
    let mut data = Vec::new();
    while let Ok(Some(chunk)) = field.chunk().await {
        if data.len() + chunk.len() > MAX_FIELD_BYTES {
            return None;
        }
        data.extend_from_slice(&chunk);
    }
    String::from_utf8(data).ok()
}

fn ok_page(
    ctx: &Ctx,
    title: &str,
    nav: Nav,
    notice: Option<&Notice>,
    body: maud::Markup,
) -> Response {
    html_response(
        Some(ctx),
        StatusCode::OK,
        page(ctx, title, nav, notice, body),
    )
}

pub async fn buckets(axum::extract::State(c): Shared, ctx: Ctx) -> Response {
    let reply = match c.s3(&ctx.caller, Method::GET, "/", &[], Vec::new()).await {
        Ok(r) => r,
        Err(f) => return failed(&ctx, "Buckets", Nav::Buckets, &f),
    };
    let xml = String::from_utf8_lossy(&reply.body).into_owned();
    let list = blocks(&xml, "Bucket");
    let body = html! {
        @if list.is_empty() { p { "No buckets." } }
        @else {
            table #buckets {
                thead { tr { th scope="col" { "Bucket" } th scope="col" { "Created" } } }
                tbody { @for b in &list {
                    @let name = xml_text(b, "Name").unwrap_or_default();
                    tr {
                        td { a href=(format!("/console/buckets/{}", segment(&name))) { (name) } }
                        td { (xml_text(b, "CreationDate").unwrap_or_default()) }
                    }
                } }
            }
        }
    };
    ok_page(&ctx, "Buckets", Nav::Buckets, None, body)
}

#[derive(Deserialize)]
pub struct PrefixQuery {
    prefix: Option<String>,
}

pub async fn bucket(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(bucket): Path<String>,
    Query(q): Query<PrefixQuery>,
) -> Response {
    bucket_page(
        &c,
        &ctx,
        &bucket,
        q.prefix.unwrap_or_default(),
        None,
        StatusCode::OK,
    )
    .await
}

async fn bucket_page(
    c: &crate::Console,
    ctx: &Ctx,
    bucket: &str,
    prefix: String,
    notice: Option<Notice>,
    status: StatusCode,
) -> Response {
    let title = format!("Bucket {bucket}");
    let path = format!(
        "/{}?{}",
        segment(bucket),
        query(&[
            ("list-type", "2"),
            ("delimiter", "/"),
            ("prefix", &prefix),
            ("max-keys", "1000")
        ])
    );
    let reply = match c.s3(&ctx.caller, Method::GET, &path, &[], Vec::new()).await {
        Ok(r) => r,
        Err(f) => return failed(ctx, &title, Nav::Buckets, &f),
    };
    let xml = String::from_utf8_lossy(&reply.body).into_owned();
    let folders: Vec<String> = blocks(&xml, "CommonPrefixes")
        .iter()
        .filter_map(|p| xml_text(p, "Prefix"))
        .collect();
    let objects = blocks(&xml, "Contents");
    let b = segment(bucket);
    let parent = prefix
        .trim_end_matches('/')
        .rfind('/')
        .map(|i| prefix[..=i].to_owned())
        .unwrap_or_default();
    let body = html! {
        p { "Prefix: " code { "/" (prefix) }
            @if !prefix.is_empty() { " · " a href=(format!("/console/buckets/{b}?{}", query(&[("prefix", &parent)]))) { "Up" } } }
        @if xml_text(&xml, "IsTruncated").as_deref() == Some("true") { p.hint { "Only the first 1,000 keys are shown." } }
        table #objects {
            thead { tr { th scope="col" { "Key" } th scope="col" { "Size" } th scope="col" { "Last modified" } } }
            tbody {
                @for f in &folders {
                    tr { td { a href=(format!("/console/buckets/{b}?{}", query(&[("prefix", f)]))) { (f) } } td { "folder" } td { "—" } }
                }
                @for o in &objects {
                    @let key = xml_text(o, "Key").unwrap_or_default();
                    tr {
                        td { a href=(format!("/console/buckets/{b}/download?{}", query(&[("key", &key)]))) download { (key) } }
                        td.num { (bytes(xml_text(o, "Size").and_then(|s| s.parse().ok()).unwrap_or(0))) }
                        td { (xml_text(o, "LastModified").unwrap_or_default()) }
                    }
                }
            }
        }
        h2 { "Upload" }
        form.upload method="post" action=(format!("/console/buckets/{b}/upload")) enctype="multipart/form-data" {
            (csrf(ctx))
            input type="hidden" name="prefix" value=(prefix);
            label for="file" { "File (at most 64 MiB), stored under the prefix above" }
            input #file type="file" name="file" required;
            button type="submit" { "Upload" }
        }
    };
    html_response(
        Some(ctx),
        status,
        page(ctx, &title, Nav::Buckets, notice.as_ref(), body),
    )
}

#[derive(Deserialize)]
pub struct KeyQuery {
    key: Option<String>,
}

/// An object as a download: always an attachment of an opaque type, so that nothing stored
/// in a bucket can run as a page of the console's origin.
pub async fn download(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(bucket): Path<String>,
    Query(q): Query<KeyQuery>,
) -> Response {
    let Some(key) = q.key.filter(|k| !k.is_empty()) else {
        return refusal(
            &ctx,
            StatusCode::BAD_REQUEST,
            "Name the object to download (key).",
        );
    };
    let key_path: Vec<String> = key.split('/').map(segment).collect();
    let path = format!("/{}/{}", segment(&bucket), key_path.join("/"));
    let reply = match c.s3(&ctx.caller, Method::GET, &path, &[], Vec::new()).await {
        Ok(r) => r,
        Err(f) => return failed(&ctx, &format!("Bucket {bucket}"), Nav::Buckets, &f),
    };
    let file = key.rsplit('/').next().unwrap_or("download");
    let safe: String = file
        .chars()
        .map(|ch| {
            if ch.is_ascii_alphanumeric() || "-_.".contains(ch) {
                ch
            } else {
                '_'
            }
        })
        .collect();
    let mut r = reply.body.into_response();
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/octet-stream"),
    );
    if let Ok(v) = HeaderValue::from_str(&format!("attachment; filename=\"{safe}\"")) {
        h.insert(header::CONTENT_DISPOSITION, v);
    }
    secure(r)
}

pub async fn upload(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    headers: HeaderMap,
    Path(bucket): Path<String>,
    mut multipart: Multipart,
) -> Response {
    if !same_origin(&headers) {
        return refusal(
            &ctx,
            StatusCode::FORBIDDEN,
            "This form was sent from another site; nothing was changed.",
        );
    }
    let mut token = None;
    let mut prefix = String::new();
    let mut file: Option<(String, Vec<u8>)> = None;
    loop {
        let field = match multipart.next_field().await {
            Ok(Some(f)) => f,
            Ok(None) => break,
            Err(e) => {
                return refusal(
                    &ctx,
                    StatusCode::BAD_REQUEST,
                    &format!("The upload form could not be read: {e}"),
                );
            }
        };
        match field.name().unwrap_or_default() {
            "csrf" => token = small_text(field).await,
            "prefix" => prefix = small_text(field).await.unwrap_or_default(),
            "file" => {
                // The token comes first in the form: nothing is read for a forged one.
                if !token
                    .as_deref()
                    .is_some_and(|t| crate::session::same(t, &ctx.csrf))
                {
                    break;
                }
                let name = field.file_name().unwrap_or_default().to_owned();
                let mut field = field;
                let mut data = Vec::new();
                loop {
                    match field.chunk().await {
                        Ok(Some(chunk)) => {
                            if data.len() + chunk.len() > MAX_UPLOAD_BYTES {
                                let notice = Notice::Error(format!(
                                    "The file is larger than the console uploads ({} MiB); nothing was stored.",
                                    MAX_UPLOAD_BYTES >> 20
                                ));
                                return bucket_page(
                                    &c,
                                    &ctx,
                                    &bucket,
                                    prefix,
                                    Some(notice),
                                    StatusCode::PAYLOAD_TOO_LARGE,
                                )
                                .await;
                            }
                            data.extend_from_slice(&chunk);
                        }
                        Ok(None) => break,
                        Err(e) => {
                            return refusal(
                                &ctx,
                                StatusCode::BAD_REQUEST,
                                &format!("The upload could not be read: {e}"),
                            );
                        }
                    }
                }
                file = Some((name, data));
            }
            _ => {}
        }
    }
    if !token
        .as_deref()
        .is_some_and(|t| crate::session::same(t, &ctx.csrf))
    {
        return refusal(
            &ctx,
            StatusCode::FORBIDDEN,
            "This form's session token is missing or stale; nothing was changed. Reload the page and try again.",
        );
    }
    let Some((name, data)) = file.filter(|(n, _)| !n.is_empty()) else {
        let notice = Notice::Error("Choose a file to upload.".into());
        return bucket_page(
            &c,
            &ctx,
            &bucket,
            prefix,
            Some(notice),
            StatusCode::BAD_REQUEST,
        )
        .await;
    };
    // A browser sends only the file's own name; a path in it is not trusted.
    let name = name
        .rsplit(['/', '\\'])
        .next()
        .unwrap_or_default()
        .to_owned();
    let key = format!("{prefix}{name}");
    let key_path: Vec<String> = key.split('/').map(segment).collect();
    let path = format!("/{}/{}", segment(&bucket), key_path.join("/"));
    let size = data.len();
    let (notice, status) = match c.s3(&ctx.caller, Method::PUT, &path, &[], data).await {
        Ok(_) => (
            Notice::Ok(format!("Stored {key} ({}).", bytes(size as u64))),
            StatusCode::OK,
        ),
        Err(f) => (
            Notice::Error(format!("Not stored: {}", f.describe())),
            status_of(&f),
        ),
    };
    bucket_page(&c, &ctx, &bucket, prefix, Some(notice), status).await
}

pub async fn tables(axum::extract::State(c): Shared, ctx: Ctx) -> Response {
    let v = match c
        .target(&ctx.caller, "DynamoDB_20120810.ListTables", &json!({}))
        .await
    {
        Ok(v) => v,
        Err(f) => return failed(&ctx, "Tables", Nav::Tables, &f),
    };
    let names: Vec<String> = v["TableNames"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|n| n.as_str().map(str::to_owned))
        .collect();
    let body = html! {
        @if names.is_empty() { p { "No tables." } }
        ul #tables { @for n in &names { li { a href=(format!("/console/tables/{}", segment(n))) { (n) } } } }
    };
    ok_page(&ctx, "Tables", Nav::Tables, None, body)
}

#[derive(Deserialize)]
pub struct ItemQuery {
    /// A partition key value: the page queries that partition instead of scanning.
    pk: Option<String>,
}

pub async fn table(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
    Query(q): Query<ItemQuery>,
) -> Response {
    let title = format!("Table {name}");
    let described = match c
        .target(
            &ctx.caller,
            "DynamoDB_20120810.DescribeTable",
            &json!({ "TableName": name }),
        )
        .await
    {
        Ok(v) => v,
        Err(f) => return failed(&ctx, &title, Nav::Tables, &f),
    };
    let t = &described["Table"];
    let keys: Vec<(String, String)> = t["KeySchema"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|k| (text(&k["AttributeName"]), text(&k["KeyType"])))
        .collect();
    let pk = keys
        .iter()
        .find(|(_, kind)| kind == "HASH")
        .map(|(n, _)| n.clone())
        .unwrap_or_default();
    let pk_type = t["AttributeDefinitions"]
        .as_array()
        .into_iter()
        .flatten()
        .find(|d| d["AttributeName"] == pk.as_str())
        .map(|d| text(&d["AttributeType"]))
        .unwrap_or_else(|| "S".into());
    let wanted = q.pk.filter(|v| !v.is_empty());
    let items = match &wanted {
        Some(value) => {
            c.target(
                &ctx.caller,
                "DynamoDB_20120810.Query",
                &json!({
                    "TableName": name,
                    "KeyConditionExpression": "#k = :v",
                    "ExpressionAttributeNames": { "#k": pk },
                    "ExpressionAttributeValues": { ":v": { pk_type.clone(): value } },
                    "Limit": 100,
                }),
            )
            .await
        }
        None => {
            c.target(
                &ctx.caller,
                "DynamoDB_20120810.Scan",
                &json!({ "TableName": name, "Limit": 100 }),
            )
            .await
        }
    };
    let (items, notice) = match items {
        Ok(v) => (v["Items"].as_array().cloned().unwrap_or_default(), None),
        Err(f) => (Vec::new(), Some(Notice::Error(f.describe()))),
    };
    let body = html! {
        p { "Key: " @for (n, kind) in &keys { code { (n) } " (" (kind) ") " } " · status " (text(&t["TableStatus"])) }
        form.filter method="get" {
            label for="pk" { "Query by " (pk) " (" (pk_type) ")" }
            input #pk type="text" name="pk" value=(wanted.clone().unwrap_or_default());
            button type="submit" { "Query" }
            @if wanted.is_some() { " " a href=(format!("/console/tables/{}", segment(&name))) { "Scan instead" } }
        }
        p.count { (items.len()) " items" @if items.len() >= 100 { " (the first 100)" } }
        table #items {
            thead { tr { @for (n, _) in &keys { th scope="col" { (n) } } th scope="col" { "Item" } } }
            tbody { @for item in &items { tr {
                @for (n, _) in &keys { td { (plain(&item[n.as_str()])) } }
                td { code { (plain_item(item)) } }
            } } }
        }
    };
    ok_page(&ctx, &title, Nav::Tables, notice.as_ref(), body)
}

/// A DynamoDB attribute value as plain JSON text.
fn plain(v: &Value) -> String {
    match v.as_object().and_then(|m| m.iter().next()) {
        Some((kind, inner)) => match (kind.as_str(), inner) {
            ("S" | "N" | "B", Value::String(s)) => s.clone(),
            ("BOOL", b) => b.to_string(),
            ("NULL", _) => "null".into(),
            ("M", Value::Object(_)) => plain_item(inner),
            ("L", Value::Array(items)) => format!(
                "[{}]",
                items.iter().map(plain).collect::<Vec<_>>().join(", ")
            ),
            (_, other) => other.to_string(),
        },
        None => "—".into(),
    }
}

fn plain_item(item: &Value) -> String {
    let fields: Vec<String> = item
        .as_object()
        .into_iter()
        .flatten()
        .map(|(k, v)| format!("{k}: {}", plain(v)))
        .collect();
    format!("{{{}}}", fields.join(", "))
}

pub async fn user_pools(axum::extract::State(c): Shared, ctx: Ctx) -> Response {
    let v = match c
        .target(
            &ctx.caller,
            "AWSCognitoIdentityProviderService.ListUserPools",
            &json!({ "MaxResults": 60 }),
        )
        .await
    {
        Ok(v) => v,
        Err(f) => return failed(&ctx, "User pools", Nav::UserPools, &f),
    };
    let pools = v["UserPools"].as_array().cloned().unwrap_or_default();
    let body = html! {
        @if pools.is_empty() { p { "No user pools." } }
        @else {
            table #userpools {
                thead { tr { th scope="col" { "Pool" } th scope="col" { "Id" } } }
                tbody { @for p in &pools {
                    @let id = p["Id"].as_str().unwrap_or_default();
                    tr { td { a href=(format!("/console/userpools/{}", segment(id))) { (text(&p["Name"])) } } td { (id) } }
                } }
            }
        }
    };
    ok_page(&ctx, "User pools", Nav::UserPools, None, body)
}

pub async fn user_pool(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(id): Path<String>,
) -> Response {
    let title = format!("User pool {id}");
    let v = match c
        .target(
            &ctx.caller,
            "AWSCognitoIdentityProviderService.ListUsers",
            &json!({ "UserPoolId": id, "Limit": 60 }),
        )
        .await
    {
        Ok(v) => v,
        Err(f) => return failed(&ctx, &title, Nav::UserPools, &f),
    };
    let users = v["Users"].as_array().cloned().unwrap_or_default();
    let attribute = |u: &Value, name: &str| {
        u["Attributes"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|a| a["Name"] == name)
            .map(|a| text(&a["Value"]))
            .unwrap_or_else(|| "—".into())
    };
    let body = html! {
        @if users.is_empty() { p { "No users." } }
        @else {
            table #users {
                thead { tr { th scope="col" { "Username" } th scope="col" { "Email" } th scope="col" { "Status" } th scope="col" { "Enabled" } th scope="col" { "Created" } } }
                tbody { @for u in &users { tr {
                    td { (text(&u["Username"])) } td { (attribute(u, "email")) } td { (text(&u["UserStatus"])) }
                    td { (text(&u["Enabled"])) } td { (text(&u["UserCreateDate"])) }
                } } }
            }
        }
    };
    ok_page(&ctx, &title, Nav::UserPools, None, body)
}

const CFN_VERSION: &str = "2010-05-15";

pub async fn stacks(axum::extract::State(c): Shared, ctx: Ctx) -> Response {
    let xml = match c
        .query_api(&ctx.caller, CFN_VERSION, "ListStacks", &[])
        .await
    {
        Ok(x) => x,
        Err(f) => return failed(&ctx, "Stacks", Nav::Stacks, &f),
    };
    let summaries = within(&xml, "StackSummaries")
        .map(|s| blocks(s, "member"))
        .unwrap_or_default();
    let body = html! {
        @if summaries.is_empty() { p { "No stacks." } }
        @else {
            table #stacks {
                thead { tr { th scope="col" { "Stack" } th scope="col" { "Status" } th scope="col" { "Created" } } }
                tbody { @for s in &summaries {
                    @let name = xml_text(s, "StackName").unwrap_or_default();
                    @let status = xml_text(s, "StackStatus").unwrap_or_default();
                    tr {
                        td { @if status == "DELETE_COMPLETE" { (name) } @else { a href=(format!("/console/stacks/{}", segment(&name))) { (name) } } }
                        td { (status) } td { (xml_text(s, "CreationTime").unwrap_or_default()) }
                    }
                } }
            }
        }
    };
    ok_page(&ctx, "Stacks", Nav::Stacks, None, body)
}

pub async fn stack(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    Path(name): Path<String>,
) -> Response {
    let title = format!("Stack {name}");
    let p = [("StackName", name.as_str())];
    let (described, resources, events) = tokio::join!(
        c.query_api(&ctx.caller, CFN_VERSION, "DescribeStacks", &p),
        c.query_api(&ctx.caller, CFN_VERSION, "DescribeStackResources", &p),
        c.query_api(&ctx.caller, CFN_VERSION, "DescribeStackEvents", &p),
    );
    let described = match described {
        Ok(x) => x,
        Err(f) => return failed(&ctx, &title, Nav::Stacks, &f),
    };
    let outputs = within(&described, "Outputs")
        .map(|o| blocks(o, "member"))
        .unwrap_or_default();
    let resources = resources.unwrap_or_default();
    let resources = within(&resources, "StackResources")
        .map(|r| blocks(r, "member"))
        .unwrap_or_default();
    let events = events.unwrap_or_default();
    let events = within(&events, "StackEvents")
        .map(|e| blocks(e, "member"))
        .unwrap_or_default();
    let field = |x: &str, tag: &str| xml_text(x, tag).unwrap_or_default();
    let body = html! {
        p { "Status: " strong #stack-status { (field(&described, "StackStatus")) }
            @if let Some(r) = xml_text(&described, "StackStatusReason") { " · " (r) } }
        h2 { "Outputs" }
        @if outputs.is_empty() { p { "None." } }
        @else { table #outputs {
            thead { tr { th scope="col" { "Key" } th scope="col" { "Value" } th scope="col" { "Description" } } }
            tbody { @for o in &outputs { tr { td { (field(o, "OutputKey")) } td { (field(o, "OutputValue")) } td { (field(o, "Description")) } } } }
        } }
        h2 { "Resources" }
        table #resources {
            thead { tr { th scope="col" { "Logical id" } th scope="col" { "Physical id" } th scope="col" { "Type" } th scope="col" { "Status" } } }
            tbody { @for r in &resources { tr {
                td { (field(r, "LogicalResourceId")) } td { (field(r, "PhysicalResourceId")) } td { (field(r, "ResourceType")) } td { (field(r, "ResourceStatus")) }
            } } }
        }
        h2 { "Events" }
        table #events {
            thead { tr { th scope="col" { "Time" } th scope="col" { "Logical id" } th scope="col" { "Status" } th scope="col" { "Reason" } } }
            tbody { @for e in events.iter().take(200) { tr {
                td { (field(e, "Timestamp")) } td { (field(e, "LogicalResourceId")) } td { (field(e, "ResourceStatus")) } td { (field(e, "ResourceStatusReason")) }
            } } }
        }
    };
    ok_page(&ctx, &title, Nav::Stacks, None, body)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn items_read_as_plain_values() {
        let item = json!({"id": {"S": "a"}, "n": {"N": "1.5"}, "m": {"M": {"x": {"BOOL": true}}}, "l": {"L": [{"NULL": true}]}});
        let s = plain_item(&item);
        assert!(s.contains("id: a"));
        assert!(s.contains("n: 1.5"));
        assert!(s.contains("m: {x: true}"));
        assert!(s.contains("l: [null]"));
    }
}
