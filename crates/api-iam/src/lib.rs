//! IAM's API (and STS's `GetCallerIdentity`) over the Query protocol, wire-compatible with
//! `aws iam`, `aws sts` and the SDKs: a form-encoded `POST /` with `Action` and `Version`,
//! answered in XML. Policy documents come back URL-encoded, as IAM returns them. Every
//! operation is authorized against the caller's policies as `iam:ACTION` on the ARN of the
//! user or role it touches.

#![forbid(unsafe_code)]

use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_aws_wire::ErrorEnvelope;
use nimbus_aws_wire::xml::Writer;
use nimbus_identity::{Caller, IamError, Identity, Principal};
use nimbus_types::iam::{Role, User};
use nimbus_types::identity::AccessKey;
use nimbus_types::time::iso8601;
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

/// The largest request accepted: policy documents of up to 131,072 characters, URL-encoded.
pub const MAX_REQUEST_BYTES: u64 = 512 << 10;

const IAM_XMLNS: &str = "https://iam.amazonaws.com/doc/2010-05-08/";
const STS_XMLNS: &str = "https://sts.amazonaws.com/doc/2011-06-15/";

/// An IAM error in the Query protocol's XML.
#[derive(Debug)]
pub struct QueryError {
    status: StatusCode,
    code: &'static str,
    message: String,
    xmlns: &'static str,
}

impl QueryError {
    fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            xmlns: IAM_XMLNS,
        }
    }

    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "ValidationError", message)
    }
}

impl IntoResponse for QueryError {
    fn into_response(self) -> Response {
        nimbus_aws_wire::envelope::query_xml(
            self.status,
            self.xmlns,
            self.code,
            &self.message,
            &uuid::Uuid::new_v4().to_string(),
        )
    }
}

impl From<IamError> for QueryError {
    fn from(e: IamError) -> Self {
        if let IamError::Internal(inner) = &e {
            tracing::error!(
                error = %nimbus_types::error_chain(inner),
                "an IAM operation failed"
            );
        }
        let (code, status) = e.code();
        Self::new(
            StatusCode::from_u16(status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR),
            code,
            e.to_string(),
        )
    }
}

impl ErrorEnvelope for QueryError {
    fn too_large(limit: u64, _operation: &str) -> Self {
        Self::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "RequestEntityTooLarge",
            format!("The request must be smaller than {limit} bytes."),
        )
    }

    fn malformed(message: String) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "MalformedQueryString", message)
    }

    fn unknown_operation(operation: &str) -> Self {
        Self::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {operation} for version 2010-05-08"),
        )
    }

    fn unauthenticated(error: &nimbus_aws_wire::sigv4::AuthError) -> Self {
        let (status, code) = nimbus_aws_wire::query_auth_code(error);
        Self::new(status, code, error.to_string())
    }

    fn access_denied(message: String) -> Self {
        Self::new(StatusCode::FORBIDDEN, "AccessDenied", message)
    }
}

type Result<T, E = QueryError> = std::result::Result<T, E>;

/// A request's form parameters.
struct Params(nimbus_aws_wire::query::Form);

impl Params {
    fn parse(body: &[u8]) -> Result<Self> {
        nimbus_aws_wire::query::Form::parse(body)
            .map(Self)
            .map_err(QueryError::malformed)
    }

    fn get(&self, name: &str) -> Option<&str> {
        self.0.get(name)
    }

    fn required(&self, name: &str) -> Result<&str> {
        self.get(name)
            .ok_or_else(|| QueryError::invalid(nimbus_aws_wire::query::missing(name)))
    }

    /// `MaxItems`: 1 to 1,000, 100 if absent.
    fn max_items(&self) -> Result<usize> {
        match self.get("MaxItems") {
            None => Ok(100),
            Some(v) => match v.parse::<usize>() {
                Ok(n) if (1..=1000).contains(&n) => Ok(n),
                _ => Err(QueryError::invalid(format!(
                    "1 validation error detected: Value '{v}' at 'maxItems' failed to satisfy \
                     constraint: Member must have value between 1 and 1000"
                ))),
            },
        }
    }
}

/// What IAM leaves unescaped in a URL-encoded policy document.
const POLICY_ESCAPES: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'_')
    .remove(b'.')
    .remove(b'~');

fn encoded(document: &str) -> String {
    utf8_percent_encode(document, POLICY_ESCAPES).to_string()
}

/// One page of a name-ordered list, after `Marker`.
fn page<'a, T>(
    items: &'a [T],
    name: impl Fn(&T) -> &str,
    params: &Params,
) -> Result<(&'a [T], Option<String>)> {
    let max = params.max_items()?;
    let start = match params.get("Marker") {
        Some(m) => items.partition_point(|i| name(i) <= m),
        None => 0,
    };
    let rest = &items[start..];
    if rest.len() > max {
        let page = &rest[..max];
        Ok((page, page.last().map(|i| name(i).to_owned())))
    } else {
        Ok((rest, None))
    }
}

/// The IAM operations served (STS's `GetCallerIdentity` apart).
const ACTIONS: &[&str] = &[
    "CreateUser",
    "GetUser",
    "ListUsers",
    "DeleteUser",
    "PutUserPolicy",
    "GetUserPolicy",
    "DeleteUserPolicy",
    "ListUserPolicies",
    "CreateAccessKey",
    "ListAccessKeys",
    "DeleteAccessKey",
    "CreateRole",
    "GetRole",
    "ListRoles",
    "DeleteRole",
    "UpdateAssumeRolePolicy",
    "PutRolePolicy",
    "GetRolePolicy",
    "DeleteRolePolicy",
    "ListRolePolicies",
    "AttachRolePolicy",
    "DetachRolePolicy",
    "ListAttachedRolePolicies",
];

/// A response document: `<ActionResponse><ActionResult>…</ActionResult><ResponseMetadata/>`.
struct Reply {
    w: Writer,
    action: &'static str,
    has_result: bool,
}

impl Reply {
    fn new(action: &'static str, xmlns: &str) -> Self {
        let mut w = Writer::new();
        w.open_ns(&format!("{action}Response"), xmlns);
        Self {
            w,
            action,
            has_result: false,
        }
    }

    fn result(mut self, body: impl FnOnce(&mut Writer)) -> Self {
        let tag = format!("{}Result", self.action);
        self.w.open(&tag);
        body(&mut self.w);
        self.w.close(&tag);
        self.has_result = true;
        self
    }

    fn finish(mut self) -> Response {
        self.w.open("ResponseMetadata");
        self.w
            .element("RequestId", &uuid::Uuid::new_v4().to_string());
        self.w.close("ResponseMetadata");
        self.w.close(&format!("{}Response", self.action));
        (
            StatusCode::OK,
            [("content-type", "text/xml")],
            self.w.finish(),
        )
            .into_response()
    }
}

fn truncation(w: &mut Writer, marker: Option<String>) {
    w.element(
        "IsTruncated",
        if marker.is_some() { "true" } else { "false" },
    );
    if let Some(m) = marker {
        w.element("Marker", &m);
    }
}

fn write_user(w: &mut Writer, user: &User) {
    w.element("Path", &user.path);
    w.element("UserName", &user.name);
    w.element("UserId", &user.user_id);
    w.element("Arn", &user.arn());
    w.element("CreateDate", &iso8601(user.created_ms));
}

fn write_role(w: &mut Writer, role: &Role) {
    w.element("Path", &role.path);
    w.element("RoleName", &role.name);
    w.element("RoleId", &role.role_id);
    w.element("Arn", &role.arn());
    w.element("CreateDate", &iso8601(role.created_ms));
    w.element(
        "AssumeRolePolicyDocument",
        &encoded(&role.assume_role_policy),
    );
    if !role.description.is_empty() {
        w.element("Description", &role.description);
    }
    w.element(
        "MaxSessionDuration",
        &role.max_session_duration_s.to_string(),
    );
}

fn write_key_metadata(w: &mut Writer, key: &AccessKey, user: &str) {
    w.element("UserName", user);
    w.element("AccessKeyId", &key.access_key_id);
    w.element("Status", "Active");
    w.element("CreateDate", &iso8601(key.created_ms));
}

fn user_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:user/{name}")
}

fn role_arn(account: &str, name: &str) -> String {
    format!("arn:aws:iam::{account}:role/{name}")
}

/// The user an operation with an optional `UserName` is about: the one named, else the
/// caller itself (`None`: the account's root).
fn subject_user<'a>(caller: &'a Caller, params: &'a Params) -> Option<&'a str> {
    params.get("UserName").or(match &caller.principal {
        Principal::User { name, .. } => Some(name.as_str()),
        _ => None,
    })
}

/// Serves one IAM or STS request: `body` is the form, already read by the gateway.
pub async fn handle(
    identity: &Identity,
    caller: &Caller,
    headers: &HeaderMap,
    body: axum::body::Body,
) -> Response {
    let body =
        match nimbus_aws_wire::body::read::<QueryError>(headers, body, MAX_REQUEST_BYTES, "IAM")
            .await
        {
            Ok(b) => b,
            Err(e) => return e.into_response(),
        };
    match Params::parse(&body).and_then(|params| dispatch(identity, caller, &params)) {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

fn dispatch(identity: &Identity, caller: &Caller, p: &Params) -> Result<Response> {
    let requested = p.required("Action")?;
    let account = caller.account.as_str();
    if requested == "GetCallerIdentity" {
        return Ok(get_caller_identity(caller));
    }
    let Some(action) = ACTIONS.iter().copied().find(|a| *a == requested) else {
        return Err(QueryError::unknown_operation(requested));
    };
    if let Some(version) = p.get("Version")
        && version != "2010-05-08"
    {
        return Err(QueryError::new(
            StatusCode::BAD_REQUEST,
            "InvalidAction",
            format!("Could not find operation {requested} for version {version}"),
        ));
    }
    // The resource each action is authorized on.
    let resource = match action {
        "CreateUser" | "GetUser" | "DeleteUser" | "PutUserPolicy" | "GetUserPolicy"
        | "DeleteUserPolicy" | "ListUserPolicies" | "CreateAccessKey" | "ListAccessKeys"
        | "DeleteAccessKey" => match subject_user(caller, p) {
            Some(name) => user_arn(account, name),
            None => format!("arn:aws:iam::{account}:root"),
        },
        "ListUsers" => format!("arn:aws:iam::{account}:user/"),
        "ListRoles" => format!("arn:aws:iam::{account}:role/"),
        _ => role_arn(account, p.required("RoleName")?),
    };
    caller
        .authorize(&format!("iam:{action}"), &resource)
        .map_err(|d| QueryError::access_denied(d.message))?;
    let reply = Reply::new(action, IAM_XMLNS);
    let done = match action {
        "CreateUser" => {
            let user = identity.create_user(account, p.required("UserName")?, p.get("Path"))?;
            reply.result(|w| {
                w.open("User");
                write_user(w, &user);
                w.close("User");
            })
        }
        "GetUser" => match subject_user(caller, p) {
            Some(name) => {
                let user = identity.get_user(account, name)?;
                reply.result(|w| {
                    w.open("User");
                    write_user(w, &user);
                    w.close("User");
                })
            }
            None => reply.result(|w| {
                w.open("User");
                w.element("UserId", account);
                w.element("Arn", &format!("arn:aws:iam::{account}:root"));
                w.element("CreateDate", &iso8601(0));
                w.close("User");
            }),
        },
        "ListUsers" => {
            let users = identity.list_users(account, p.get("PathPrefix").unwrap_or("/"))?;
            let (users, marker) = page(&users, |u| u.name.as_str(), p)?;
            reply.result(|w| {
                w.open("Users");
                for u in users {
                    w.open("member");
                    write_user(w, u);
                    w.close("member");
                }
                w.close("Users");
                truncation(w, marker);
            })
        }
        "DeleteUser" => {
            identity.delete_user(account, p.required("UserName")?)?;
            reply
        }
        "PutUserPolicy" => {
            identity.put_user_policy(
                account,
                p.required("UserName")?,
                p.required("PolicyName")?,
                p.required("PolicyDocument")?,
            )?;
            reply
        }
        "GetUserPolicy" => {
            let (user, name) = (p.required("UserName")?, p.required("PolicyName")?);
            let document = identity.get_user_policy(account, user, name)?;
            reply.result(|w| {
                w.element("UserName", user);
                w.element("PolicyName", name);
                w.element("PolicyDocument", &encoded(&document));
            })
        }
        "DeleteUserPolicy" => {
            identity.delete_user_policy(
                account,
                p.required("UserName")?,
                p.required("PolicyName")?,
            )?;
            reply
        }
        "ListUserPolicies" => {
            let names = identity.list_user_policies(account, p.required("UserName")?)?;
            policy_names(reply, &names, p)?
        }
        "CreateAccessKey" => {
            let Some(user) = subject_user(caller, p) else {
                return Err(QueryError::invalid(
                    "Access keys for the account itself are made with `nimbus account`; name \
                     a UserName.",
                ));
            };
            let key = identity.create_user_key(account, user)?;
            reply.result(|w| {
                w.open("AccessKey");
                write_key_metadata(w, &key, user);
                w.element("SecretAccessKey", &key.secret_access_key);
                w.close("AccessKey");
            })
        }
        "ListAccessKeys" => {
            let user = subject_user(caller, p);
            let keys = identity.list_keys(account, user)?;
            let shown = user.unwrap_or("root");
            reply.result(|w| {
                w.open("AccessKeyMetadata");
                for k in &keys {
                    w.open("member");
                    write_key_metadata(w, k, shown);
                    w.close("member");
                }
                w.close("AccessKeyMetadata");
                truncation(w, None);
            })
        }
        "DeleteAccessKey" => {
            identity.delete_user_key(
                account,
                subject_user(caller, p),
                p.required("AccessKeyId")?,
            )?;
            reply
        }
        "CreateRole" => {
            let max_session = p
                .get("MaxSessionDuration")
                .map(|v| {
                    v.parse::<u32>().map_err(|_| {
                        QueryError::invalid(format!(
                            "1 validation error detected: Value '{v}' at 'maxSessionDuration' \
                             failed to satisfy constraint: Member must have value between 3600 \
                             and 43200"
                        ))
                    })
                })
                .transpose()?;
            let role = identity.create_role(
                account,
                p.required("RoleName")?,
                p.get("Path"),
                p.required("AssumeRolePolicyDocument")?,
                p.get("Description"),
                max_session,
            )?;
            reply.result(|w| {
                w.open("Role");
                write_role(w, &role);
                w.close("Role");
            })
        }
        "GetRole" => {
            let role = identity.get_role(account, p.required("RoleName")?)?;
            reply.result(|w| {
                w.open("Role");
                write_role(w, &role);
                w.close("Role");
            })
        }
        "ListRoles" => {
            let roles = identity.list_roles(account, p.get("PathPrefix").unwrap_or("/"))?;
            let (roles, marker) = page(&roles, |r| r.name.as_str(), p)?;
            reply.result(|w| {
                w.open("Roles");
                for r in roles {
                    w.open("member");
                    write_role(w, r);
                    w.close("member");
                }
                w.close("Roles");
                truncation(w, marker);
            })
        }
        "DeleteRole" => {
            identity.delete_role(account, p.required("RoleName")?)?;
            reply
        }
        "UpdateAssumeRolePolicy" => {
            identity.update_trust_policy(
                account,
                p.required("RoleName")?,
                p.required("PolicyDocument")?,
            )?;
            reply
        }
        "PutRolePolicy" => {
            identity.put_role_policy(
                account,
                p.required("RoleName")?,
                p.required("PolicyName")?,
                p.required("PolicyDocument")?,
            )?;
            reply
        }
        "GetRolePolicy" => {
            let (role, name) = (p.required("RoleName")?, p.required("PolicyName")?);
            let document = identity.get_role_policy(account, role, name)?;
            reply.result(|w| {
                w.element("RoleName", role);
                w.element("PolicyName", name);
                w.element("PolicyDocument", &encoded(&document));
            })
        }
        "DeleteRolePolicy" => {
            identity.delete_role_policy(
                account,
                p.required("RoleName")?,
                p.required("PolicyName")?,
            )?;
            reply
        }
        "ListRolePolicies" => {
            let names = identity.list_role_policies(account, p.required("RoleName")?)?;
            policy_names(reply, &names, p)?
        }
        "AttachRolePolicy" => {
            identity.attach_role_policy(
                account,
                p.required("RoleName")?,
                p.required("PolicyArn")?,
            )?;
            reply
        }
        "DetachRolePolicy" => {
            identity.detach_role_policy(
                account,
                p.required("RoleName")?,
                p.required("PolicyArn")?,
            )?;
            reply
        }
        "ListAttachedRolePolicies" => {
            let role = identity.get_role(account, p.required("RoleName")?)?;
            reply.result(|w| {
                w.open("AttachedPolicies");
                for arn in &role.attached {
                    w.open("member");
                    w.element("PolicyName", nimbus_identity::managed::name(arn));
                    w.element("PolicyArn", arn);
                    w.close("member");
                }
                w.close("AttachedPolicies");
                truncation(w, None);
            })
        }
        other => return Err(QueryError::unknown_operation(other)),
    };
    Ok(done.finish())
}

fn policy_names(reply: Reply, names: &[String], p: &Params) -> Result<Reply> {
    let (names, marker) = page(names, |n| n.as_str(), p)?;
    Ok(reply.result(|w| {
        w.open("PolicyNames");
        for n in names {
            w.element("member", n);
        }
        w.close("PolicyNames");
        truncation(w, marker);
    }))
}

fn get_caller_identity(caller: &Caller) -> Response {
    let user_id = match &caller.principal {
        Principal::Root => caller.account.clone(),
        Principal::User { .. } | Principal::Role { .. } => caller.access_key_id.clone(),
    };
    Reply::new("GetCallerIdentity", STS_XMLNS)
        .result(|w| {
            w.element("Arn", &caller.arn());
            w.element("UserId", &user_id);
            w.element("Account", &caller.account);
        })
        .finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policy_documents_are_encoded_as_iam_returns_them() {
        assert_eq!(
            encoded(r#"{"Version": "2012-10-17"}"#),
            "%7B%22Version%22%3A%20%222012-10-17%22%7D"
        );
    }

    #[test]
    fn pages_follow_the_marker() {
        let names: Vec<String> = (0..5).map(|i| format!("n{i}")).collect();
        let params = Params::parse(b"MaxItems=2&Marker=n1").unwrap();
        let (items, marker) = page(&names, |n| n.as_str(), &params).unwrap();
        assert_eq!(items, &names[2..4]);
        assert_eq!(marker.as_deref(), Some("n3"));
        let params = Params::parse(b"MaxItems=0").unwrap();
        assert!(page(&names, |n| n.as_str(), &params).is_err());
        assert!(Params::parse(b"Action=A&Action=B").is_err());
    }
}
