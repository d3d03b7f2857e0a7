//! Serving an HTTP API's requests: the stage (a named stage is the path's first segment,
//! `$default` takes the rest), the route, the function integration, and the answers API
//! Gateway gives when something is wrong, always `{"message": …}`.

use std::time::Duration;

use axum::extract::Request;
use axum::http::{HeaderValue, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use nimbus_api_lambda::http_event::{self, Context, View};
use nimbus_api_lambda::url::{add_cors, preflight};
use nimbus_types::InvokeRequest;

use crate::ApiGateway;
use crate::control::function_arn_of;

/// The most an API request's body may hold.
pub const MAX_BODY_BYTES: usize = 10 * 1024 * 1024;

fn message(status: StatusCode, text: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "message": text }))).into_response()
}

fn not_found() -> Response {
    message(StatusCode::NOT_FOUND, "Not Found")
}

/// Serves a request for the API `api_id`, whose path (after any path-based prefix) is `path`.
pub async fn serve(g: &ApiGateway, api_id: &str, path: &str, request: Request) -> Response {
    let Some(deployed) = g.apis.get(api_id) else {
        return not_found();
    };
    let api = &deployed.api;
    if api.disable_execute_api_endpoint {
        return message(StatusCode::FORBIDDEN, "Forbidden");
    }
    // A named stage is the first segment; `$default` serves paths without one.
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    let (stage, route_path) = match api.stages.get(first).filter(|_| first != "$default") {
        Some(stage) => {
            let rest = &path[1 + first.len()..];
            (stage, if rest.is_empty() { "/" } else { rest })
        }
        None => match api.stages.get("$default") {
            Some(stage) => (stage, path),
            None => return not_found(),
        },
    };
    let origin = request
        .headers()
        .get(axum::http::header::ORIGIN)
        .and_then(|o| o.to_str().ok())
        .map(str::to_owned);
    if let (Some(cors), Some(origin)) = (&api.cors, &origin)
        && request.method() == Method::OPTIONS
        && request
            .headers()
            .contains_key(axum::http::header::ACCESS_CONTROL_REQUEST_METHOD)
    {
        return preflight(cors, origin);
    }
    let Some(found) = deployed.routes.find(request.method().as_str(), route_path) else {
        return not_found();
    };
    let Some(route) = api.routes.get(found.value) else {
        return not_found();
    };
    let Some(integration) = route
        .integration_id()
        .and_then(|id| api.integrations.get(id))
    else {
        return not_found();
    };
    // The route's authorizer, before anything of the request is read.
    let mut authorizer = None;
    if route.authorization_type == "JWT" {
        let Some(config) = route
            .authorizer_id
            .as_ref()
            .and_then(|id| api.authorizers.get(id))
        else {
            return message(StatusCode::UNAUTHORIZED, "Unauthorized");
        };
        let Some(token) = crate::jwt::token_from(request.headers(), &config.identity_source) else {
            return message(StatusCode::UNAUTHORIZED, "Unauthorized");
        };
        let now_s = nimbus_types::time::now_ms() / 1000;
        match g
            .jwt
            .verify(
                token,
                &config.issuer,
                &config.audience,
                &route.authorization_scopes,
                now_s,
            )
            .await
        {
            Ok(verified) => authorizer = Some(verified.context),
            Err(crate::jwt::Refusal::Forbidden) => {
                return message(StatusCode::FORBIDDEN, "Forbidden");
            }
            Err(crate::jwt::Refusal::Unauthorized(why)) => {
                tracing::debug!(api = %api.api_id, why, "JWT refused");
                return message(StatusCode::UNAUTHORIZED, "Unauthorized");
            }
        }
    }
    let Some(function) = resolve_function(g, &api.account, &integration.integration_uri) else {
        tracing::info!(api = %api.api_id, uri = %integration.integration_uri, "an integration's function does not exist");
        return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error");
    };
    let source_ip = nimbus_api_lambda::http_event::source_ip(request.extensions());
    let (parts, body) = request.into_parts();
    if nimbus_aws_wire::body::declared_length(&parts.headers)
        .is_some_and(|len| len > MAX_BODY_BYTES as u64)
    {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    }
    let Ok(body) = axum::body::to_bytes(body, MAX_BODY_BYTES).await else {
        return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
    };
    let request_id = uuid::Uuid::new_v4().to_string();
    let view = View {
        parts: &parts,
        path,
        source_ip: &source_ip,
        body: &body,
        request_id: &request_id,
    };
    let context = Context {
        account: &api.account,
        api_id: &api.api_id,
        route_key: &route.route_key,
        stage: &stage.stage_name,
        authorizer,
        path_parameters: &found.params,
        stage_variables: Some(&stage.stage_variables),
    };
    let v1 = integration.payload_format_version == "1.0";
    let (payload, http) = if function.runtime.serves_http() {
        (bytes::Bytes::new(), Some(http_event::call(&view)))
    } else {
        let event = if v1 {
            let resource = route
                .route_key
                .split_once(' ')
                .map_or(route.route_key.as_str(), |(_, p)| p);
            http_event::v1(&view, &context, resource)
        } else {
            http_event::v2(&view, &context)
        };
        match serde_json::to_vec(&event) {
            Ok(p) if p.len() > nimbus_types::limits::MAX_SYNC_PAYLOAD_BYTES => {
                return message(StatusCode::PAYLOAD_TOO_LARGE, "Request Entity Too Large");
            }
            Ok(p) => (bytes::Bytes::from(p), None),
            Err(_) => return message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error"),
        }
    };
    let invocation = g.manager.invoke(
        &function,
        InvokeRequest {
            request_id: request_id.clone(),
            payload,
            client_context: None,
            async_attempt: None,
            http,
            stream: None,
            qualifier: invoked_qualifier(&integration.integration_uri),
        },
    );
    let timeout = Duration::from_millis(u64::from(integration.timeout_ms));
    let mut response = match tokio::time::timeout(timeout, invocation).await {
        Err(_) => message(StatusCode::GATEWAY_TIMEOUT, "Endpoint request timed out"),
        Ok(Err(nimbus_manager::Error::Throttled(_))) => {
            message(StatusCode::SERVICE_UNAVAILABLE, "Service Unavailable")
        }
        Ok(Err(e)) => {
            tracing::warn!(api = %api.api_id, error = %e, "HTTP API integration failed");
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Ok(Ok(outcome)) if outcome.error.is_some() => {
            message(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
        }
        Ok(Ok(outcome)) => {
            let answer = match outcome.http {
                Some(reply) => http_event::answer(reply),
                None if v1 => http_event::interpret_v1(&outcome.payload),
                None => http_event::interpret_v2(&outcome.payload),
            };
            answer.unwrap_or_else(|| {
                tracing::info!(api = %api.api_id, route = %route.route_key, "the function's result is not a valid response");
                message(StatusCode::BAD_GATEWAY, "Internal Server Error")
            })
        }
    };
    if let Ok(v) = HeaderValue::from_str(&request_id) {
        response.headers_mut().insert("apigw-requestid", v);
    }
    if let (Some(cors), Some(origin)) = (&api.cors, &origin) {
        add_cors(cors, origin, &mut response);
    }
    response
}

/// The qualifier an integration URI's function ARN names, if any.
fn invoked_qualifier(uri: &str) -> Option<String> {
    nimbus_types::FunctionRef::parse(function_arn_of(uri))
        .ok()?
        .qualifier
        .map(|q| q.as_str().to_owned())
}

/// The function (or version) an integration URI names, in the API's account.
fn resolve_function(
    g: &ApiGateway,
    account: &str,
    uri: &str,
) -> Option<std::sync::Arc<nimbus_types::FunctionConfig>> {
    let reference = nimbus_types::FunctionRef::parse(function_arn_of(uri)).ok()?;
    if reference.account.as_deref().is_some_and(|a| a != account) {
        return None;
    }
    let key = nimbus_types::name::scoped(account, &reference.name);
    g.control
        .resolve_invocation(&key, reference.qualifier.as_ref())
        .ok()
}
