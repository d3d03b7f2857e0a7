//! Function URLs at the front door: a request whose `Host` is a URL's
//! (`{url-id}.lambda-url.{region}.{base}`), or whose path is the path-based form
//! (`/lambda-url/{url-id}/…`), goes to the function behind the URL instead of to an API. An
//! `AWS_IAM` URL's requests are verified with SigV4 here, by the same verifier as the APIs';
//! a `NONE` URL's are anonymous.

use std::sync::Arc;

use axum::extract::Request;
use axum::response::Response;
use nimbus_api_lambda::url::{self, UrlCaller, UrlRequest};
use nimbus_api_lambda::{Lambda, UrlDomain};
use nimbus_control::ControlPlane;
use nimbus_identity::Caller;
use nimbus_types::url::UrlAuthType;

use crate::auth::{Authenticator, Refusal, verify_signed};

/// What serving function URLs needs.
pub(crate) struct FunctionUrls {
    pub domain: UrlDomain,
    pub lambda: Arc<Lambda>,
    pub control: Arc<ControlPlane>,
    pub authenticator: Arc<Authenticator>,
    /// HTTP APIs, served at the front door the same way.
    pub api_gateway: Arc<nimbus_api_apigateway::ApiGateway>,
}

impl FunctionUrls {
    /// The URL id and the function's path of a request for a function URL, if it is one.
    pub fn target_of(&self, request: &Request) -> Option<(String, String)> {
        by_host_or_path(
            request,
            |h| self.domain.url_id_of_host(h),
            UrlDomain::url_id_of_path,
        )
    }

    /// The API id and the API's path of a request for an HTTP API, if it is one.
    pub fn api_of(&self, request: &Request) -> Option<(String, String)> {
        by_host_or_path(
            request,
            |h| self.domain.api_id_of_host(h),
            UrlDomain::api_id_of_path,
        )
    }

    /// Serves a request for the function URL `url_id`.
    pub async fn serve(&self, url_id: &str, path: &str, request: Request) -> Response {
        // An id that names no URL is refused as a URL that refuses the caller is: nothing
        // tells a prober which ids exist.
        let Some(target) = self.control.url_target(url_id) else {
            return url::forbidden();
        };
        let source_ip = nimbus_api_lambda::http_event::source_ip(request.extensions());
        let (parts, body) = request.into_parts();
        if let Some(answer) = url::preflight_answer(&target, &parts) {
            return answer;
        }
        let (caller, body) = match target.url.auth_type {
            UrlAuthType::None => {
                // Refused before the body is read: nobody makes the node hold a body for a
                // URL that would refuse them anyway.
                if !url::url_allowed(&self.lambda, &target, &UrlCaller::Anonymous) {
                    return url::forbidden();
                }
                match url::read_url_body(&parts.headers, body).await {
                    Ok(bytes) => (None, bytes),
                    Err(response) => return response,
                }
            }
            UrlAuthType::AwsIam => match self.authenticator.keys_for(&parts) {
                None => match url::read_url_body(&parts.headers, body).await {
                    // Authentication is off: every caller is the default account's root.
                    Ok(bytes) => (
                        Some(Caller::root(nimbus_types::name::DEFAULT_ACCOUNT)),
                        bytes,
                    ),
                    Err(response) => return response,
                },
                Some(keys) => {
                    let limit = nimbus_types::limits::MAX_SYNC_PAYLOAD_BYTES as u64;
                    let scoped = |s: &str| if s == "lambda" { Ok(()) } else { Err("lambda") };
                    match verify_signed(&self.authenticator, keys, &parts, body, limit, scoped)
                        .await
                    {
                        Ok((caller, bytes)) => (Some(caller), bytes),
                        Err(Refusal::TooLarge) => return url::too_large(),
                        Err(Refusal::Auth(e)) => {
                            tracing::debug!(error = %e, "function URL request not authenticated");
                            return url::forbidden();
                        }
                        Err(Refusal::WrongService(_)) => return url::forbidden(),
                    }
                }
            },
        };
        let caller = match &caller {
            Some(c) => UrlCaller::Signed(c),
            None => UrlCaller::Anonymous,
        };
        // A NONE URL's caller was authorized before its body was read.
        if matches!(caller, UrlCaller::Signed(_))
            && !url::url_allowed(&self.lambda, &target, &caller)
        {
            return url::forbidden();
        }
        url::serve(
            &self.lambda,
            &target,
            caller,
            UrlRequest {
                parts: &parts,
                path,
                source_ip,
                body,
            },
        )
        .await
    }
}

/// An id named by a request's `Host` (the path is the request's), or by its path's prefix (the
/// path is what follows).
fn by_host_or_path<'a>(
    request: &'a Request,
    of_host: impl FnOnce(&'a str) -> Option<&'a str>,
    of_path: impl FnOnce(&'a str) -> Option<(&'a str, &'a str)>,
) -> Option<(String, String)> {
    let path = request.uri().path();
    if let Some(id) = nimbus_aws_wire::host(request.headers()).and_then(of_host) {
        return Some((id.to_owned(), path.to_owned()));
    }
    of_path(path).map(|(id, rest)| (id.to_owned(), rest.to_owned()))
}
