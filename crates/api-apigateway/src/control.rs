//! `apigatewayv2`'s control plane for HTTP APIs: `/v2/apis`, and each API's routes,
//! integrations and stages.

use std::collections::BTreeMap;
use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Extension, Path, Query, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use nimbus_httpapi::routes::RouteKey;
use nimbus_identity::Caller;
use nimbus_types::http_api::{Authorizer, HttpApi, Integration, Route, Stage, new_id};
use nimbus_types::url::{CorsInput, UrlCors};
use serde::Deserialize;
use serde_json::{Value, json};

use crate::{ApiError, ApiGateway};

type Shared = Arc<ApiGateway>;
type Answer = Result<Response, ApiError>;

/// The most a control-plane request body holds.
const MAX_REQUEST_BYTES: usize = 1 << 20;

/// The control plane's routes.
pub fn router(gateway: Arc<ApiGateway>) -> Router {
    Router::new()
        .route("/v2/apis", get(list_apis).post(create_api))
        .route(
            "/v2/apis/{api}",
            get(get_api).patch(update_api).delete(delete_api),
        )
        .route("/v2/apis/{api}/routes", get(list_routes).post(create_route))
        .route(
            "/v2/apis/{api}/routes/{id}",
            get(get_route).patch(update_route).delete(delete_route),
        )
        .route(
            "/v2/apis/{api}/integrations",
            get(list_integrations).post(create_integration),
        )
        .route(
            "/v2/apis/{api}/integrations/{id}",
            get(get_integration)
                .patch(update_integration)
                .delete(delete_integration),
        )
        .route(
            "/v2/apis/{api}/authorizers",
            get(list_authorizers).post(create_authorizer),
        )
        .route(
            "/v2/apis/{api}/authorizers/{id}",
            get(get_authorizer)
                .patch(update_authorizer)
                .delete(delete_authorizer),
        )
        .route("/v2/apis/{api}/stages", get(list_stages).post(create_stage))
        .route(
            "/v2/tags/{arn}",
            get(get_tags).post(tag_resource).delete(untag_resource),
        )
        .route(
            "/v2/apis/{api}/stages/{id}",
            get(get_stage).patch(update_stage).delete(delete_stage),
        )
        .route_layer(axum::middleware::from_fn_with_state(
            gateway.clone(),
            authorize,
        ))
        .with_state(gateway)
}

/// Authorizes a request as API Gateway does: the action is `apigateway:METHOD`, the resource
/// the path's ARN (`arn:aws:apigateway:REGION::/apis/ID/…`).
async fn authorize(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    request: Request,
    next: Next,
) -> Response {
    let path = request.uri().path().trim_start_matches("/v2");
    let action = format!("apigateway:{}", request.method());
    // Tagging names its resource by ARN, percent-encoded in the path.
    let resource = match path.strip_prefix("/tags/") {
        Some(arn) => percent_encoding::percent_decode_str(arn)
            .decode_utf8_lossy()
            .into_owned(),
        None => format!("arn:aws:apigateway:{}::{path}", g.domain.region),
    };
    if let Err(denied) = caller.authorize(&action, &resource) {
        return ApiError::new(
            StatusCode::FORBIDDEN,
            "AccessDeniedException",
            denied.message,
        )
        .into_response();
    }
    next.run(request).await
}

fn parse<T: serde::de::DeserializeOwned + Default>(body: &Bytes) -> Result<T, ApiError> {
    if body.len() > MAX_REQUEST_BYTES {
        return Err(ApiError::new(
            StatusCode::PAYLOAD_TOO_LARGE,
            "PayloadTooLargeException",
            "The request body is too large",
        ));
    }
    if body.iter().all(u8::is_ascii_whitespace) {
        return Ok(T::default());
    }
    serde_json::from_slice(body)
        .map_err(|e| ApiError::bad_request(format!("Invalid request body: {e}")))
}

fn created(value: Value) -> Answer {
    Ok((StatusCode::CREATED, axum::Json(value)).into_response())
}

fn ok(value: Value) -> Answer {
    Ok(axum::Json(value).into_response())
}

/// `maxResults` and `nextToken` of a list request.
#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct Page {
    #[serde(rename = "maxResults")]
    max_results: Option<String>,
    #[serde(rename = "nextToken")]
    next_token: Option<String>,
}

/// The most items one page holds when the request asks for more, or for no limit.
const MAX_PAGE: usize = 500;

/// One page of a list, in the list's order: `nextToken` (where the next page starts) is set
/// when items remain.
fn items(values: impl Iterator<Item = Value>, page: &Page) -> Answer {
    let start = match page.next_token.as_deref() {
        None | Some("") => 0,
        Some(token) => token
            .parse::<usize>()
            .map_err(|_| ApiError::bad_request("The nextToken is not valid"))?,
    };
    let limit = match page.max_results.as_deref() {
        None | Some("") => MAX_PAGE,
        Some(max) => match max.parse::<usize>() {
            Ok(n) if (1..=MAX_PAGE).contains(&n) => n,
            _ => {
                return Err(ApiError::bad_request(format!(
                    "maxResults must be a number from 1 to {MAX_PAGE}"
                )));
            }
        },
    };
    let mut values = values.skip(start);
    let items: Vec<Value> = values.by_ref().take(limit).collect();
    let mut out = json!({ "items": items });
    if values.next().is_some() {
        out["nextToken"] = Value::String((start + limit).to_string());
    }
    ok(out)
}

// --- APIs ----------------------------------------------------------------------------------

fn cors(input: CorsInput) -> Result<UrlCors, ApiError> {
    input
        .into_cors()
        .map_err(|e| ApiError::bad_request(e.to_string()))
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct ApiInput {
    name: Option<String>,
    protocol_type: Option<String>,
    description: Option<String>,
    version: Option<String>,
    cors_configuration: Option<CorsInput>,
    disable_execute_api_endpoint: Option<bool>,
    tags: Option<BTreeMap<String, String>>,
    /// Quick create: a function ARN to send every request to.
    target: Option<String>,
    /// Quick create: the route key of that route (`$default` by default).
    route_key: Option<String>,
    credentials_arn: Option<String>,
    route_selection_expression: Option<String>,
}

fn api_json(g: &ApiGateway, api: &HttpApi) -> Value {
    let mut out = json!({
        "apiId": api.api_id,
        "apiEndpoint": g.domain.api_endpoint(&api.api_id),
        "apiKeySelectionExpression": "$request.header.x-api-key",
        "createdDate": nimbus_types::time::iso8601(api.created_ms),
        "disableExecuteApiEndpoint": api.disable_execute_api_endpoint,
        "name": api.name,
        "protocolType": "HTTP",
        "routeSelectionExpression": "${request.method} ${request.path}",
        "tags": api.tags,
    });
    if !api.description.is_empty() {
        out["description"] = api.description.clone().into();
    }
    if !api.version.is_empty() {
        out["version"] = api.version.clone().into();
    }
    if let Some(c) = &api.cors {
        out["corsConfiguration"] = c.to_json(false);
    }
    out
}

fn check_name(name: &str) -> Result<(), ApiError> {
    if name.is_empty() || name.chars().count() > 128 {
        return Err(ApiError::bad_request(
            "Invalid API name specified: it must be 1 to 128 characters",
        ));
    }
    Ok(())
}

async fn list_apis(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Query(page): Query<Page>,
) -> Answer {
    let apis = g.apis.list(&caller.account);
    items(apis.iter().map(|d| api_json(&g, &d.api)), &page)
}

async fn create_api(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    body: Bytes,
) -> Answer {
    let input: ApiInput = parse(&body)?;
    let name = input.name.unwrap_or_default();
    check_name(&name)?;
    match input.protocol_type.as_deref() {
        Some("HTTP") => {}
        Some("WEBSOCKET") => {
            return Err(ApiError::bad_request(
                "WebSocket APIs are not supported by this node",
            ));
        }
        other => {
            return Err(ApiError::bad_request(format!(
                "Invalid protocol type specified: {}",
                other.unwrap_or("(none)")
            )));
        }
    }
    if input.credentials_arn.is_some() {
        return Err(ApiError::bad_request(
            "CredentialsArn is not supported by this node",
        ));
    }
    if input
        .route_selection_expression
        .as_deref()
        .is_some_and(|e| e != "${request.method} ${request.path}")
    {
        return Err(ApiError::bad_request(
            "An HTTP API's route selection expression is ${request.method} ${request.path}",
        ));
    }
    let tags = input.tags.unwrap_or_default();
    check_tags(&tags).map_err(ApiError::bad_request)?;
    let now = nimbus_types::time::now_ms();
    let mut api = HttpApi {
        api_id: new_id(10),
        account: caller.account.clone(),
        name,
        description: input.description.unwrap_or_default(),
        version: input.version.unwrap_or_default(),
        created_ms: now,
        cors: input.cors_configuration.map(cors).transpose()?,
        disable_execute_api_endpoint: input.disable_execute_api_endpoint.unwrap_or(false),
        tags,
        routes: BTreeMap::new(),
        integrations: BTreeMap::new(),
        stages: BTreeMap::new(),
        authorizers: BTreeMap::new(),
    };
    match (input.target, input.route_key) {
        (Some(target), route_key) => {
            // Quick create: a proxy integration to the function, one route to it and the
            // auto-deployed `$default` stage.
            let integration = new_integration(
                &g,
                &caller,
                IntegrationInput {
                    integration_type: Some("AWS_PROXY".into()),
                    integration_uri: Some(target),
                    payload_format_version: Some("2.0".into()),
                    ..Default::default()
                },
            )?;
            let route_key = route_key.unwrap_or_else(|| "$default".to_owned());
            check_route_key(&route_key)?;
            let route = Route {
                route_id: new_id(7),
                route_key,
                target: Some(format!("integrations/{}", integration.integration_id)),
                authorization_type: "NONE".into(),
                authorizer_id: None,
                authorization_scopes: Vec::new(),
            };
            api.routes.insert(route.route_id.clone(), route);
            api.integrations
                .insert(integration.integration_id.clone(), integration);
            api.stages.insert(
                "$default".into(),
                Stage {
                    stage_name: "$default".into(),
                    auto_deploy: true,
                    stage_variables: BTreeMap::new(),
                    description: String::new(),
                    created_ms: now,
                    last_updated_ms: now,
                },
            );
        }
        (None, Some(_)) => {
            return Err(ApiError::bad_request(
                "RouteKey is only valid with Target (quick create)",
            ));
        }
        (None, None) => {}
    }
    let deployed = g.apis.create(api)?;
    created(api_json(&g, &deployed.api))
}

async fn get_api(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
) -> Answer {
    ok(api_json(&g, &g.apis.of(&caller.account, &api)?.api))
}

async fn update_api(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api_id): Path<String>,
    body: Bytes,
) -> Answer {
    let input: ApiInput = parse(&body)?;
    if input.target.is_some() || input.route_key.is_some() {
        return Err(ApiError::bad_request(
            "Target and RouteKey are only valid when an API is created",
        ));
    }
    let cors = input.cors_configuration.map(cors).transpose()?;
    let (deployed, ()) = g.apis.modify(&caller.account, &api_id, |api| {
        if let Some(name) = input.name {
            check_name(&name)
                .map_err(|e| nimbus_httpapi::registry::Error::BadRequest(e.message))?;
            api.name = name;
        }
        if let Some(d) = input.description {
            api.description = d;
        }
        if let Some(v) = input.version {
            api.version = v;
        }
        if let Some(c) = cors {
            api.cors = Some(c);
        }
        if let Some(d) = input.disable_execute_api_endpoint {
            api.disable_execute_api_endpoint = d;
        }
        Ok(())
    })?;
    ok(api_json(&g, &deployed.api))
}

async fn delete_api(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
) -> Answer {
    g.apis.delete(&caller.account, &api)?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- Integrations --------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct IntegrationInput {
    integration_type: Option<String>,
    integration_uri: Option<String>,
    payload_format_version: Option<String>,
    timeout_in_millis: Option<i64>,
    description: Option<String>,
    integration_method: Option<String>,
    connection_type: Option<String>,
    credentials_arn: Option<String>,
}

fn integration_json(i: &Integration) -> Value {
    json!({
        "integrationId": i.integration_id,
        "integrationType": i.integration_type,
        "integrationUri": i.integration_uri,
        "integrationMethod": "POST",
        "connectionType": "INTERNET",
        "payloadFormatVersion": i.payload_format_version,
        "timeoutInMillis": i.timeout_ms,
        "description": i.description,
    })
}

/// The function a Lambda integration's URI names: a function ARN (maybe qualified) or API
/// Gateway's `arn:aws:apigateway:REGION:lambda:path/2015-03-31/functions/ARN/invocations`.
pub(crate) fn function_arn_of(uri: &str) -> &str {
    uri.split_once(":lambda:path/2015-03-31/functions/")
        .and_then(|(_, rest)| rest.strip_suffix("/invocations"))
        .unwrap_or(uri)
}

/// Checks that an integration URI names a function of the caller's account that exists.
fn check_function(g: &ApiGateway, caller: &Caller, uri: &str) -> Result<(), ApiError> {
    let invalid =
        |why: &str| ApiError::bad_request(format!("Invalid integration URI specified: {why}"));
    let arn = function_arn_of(uri);
    if !arn.starts_with("arn:aws:lambda:") {
        return Err(invalid(
            "an AWS_PROXY integration's URI is a Lambda function's ARN",
        ));
    }
    let reference = nimbus_types::FunctionRef::parse(arn).map_err(|e| invalid(&e.to_string()))?;
    if reference.account.as_deref() != Some(caller.account.as_str()) {
        return Err(invalid("the function belongs to another account"));
    }
    let key = nimbus_types::name::scoped(&caller.account, &reference.name);
    g.control
        .resolve(&key, reference.qualifier.as_ref())
        .map_err(|_| invalid("the function does not exist"))?;
    Ok(())
}

fn new_integration(
    g: &ApiGateway,
    caller: &Caller,
    input: IntegrationInput,
) -> Result<Integration, ApiError> {
    let mut integration = Integration {
        integration_id: new_id(7),
        integration_type: String::new(),
        integration_uri: String::new(),
        payload_format_version: "2.0".into(),
        timeout_ms: 30_000,
        description: String::new(),
    };
    apply_integration(g, caller, &mut integration, input, true)?;
    Ok(integration)
}

fn apply_integration(
    g: &ApiGateway,
    caller: &Caller,
    i: &mut Integration,
    input: IntegrationInput,
    creating: bool,
) -> Result<(), ApiError> {
    match input.integration_type.as_deref() {
        Some("AWS_PROXY") => i.integration_type = "AWS_PROXY".into(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Integration type {other} is not supported by this node: AWS_PROXY integrations \
                 with Lambda functions are"
            )));
        }
        None if creating => {
            return Err(ApiError::bad_request("IntegrationType is required"));
        }
        None => {}
    }
    if input
        .connection_type
        .as_deref()
        .is_some_and(|c| c != "INTERNET")
        || input.credentials_arn.is_some()
        || input
            .integration_method
            .as_deref()
            .is_some_and(|m| m != "POST")
    {
        return Err(ApiError::bad_request(
            "A Lambda proxy integration is INTERNET, POST and without credentials",
        ));
    }
    if let Some(uri) = input.integration_uri {
        check_function(g, caller, &uri)?;
        i.integration_uri = uri;
    } else if creating {
        return Err(ApiError::bad_request("IntegrationUri is required"));
    }
    match input.payload_format_version.as_deref() {
        Some(v @ ("1.0" | "2.0")) => i.payload_format_version = v.to_owned(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid payload format version specified: {other}"
            )));
        }
        None if creating => {
            return Err(ApiError::bad_request(
                "PayloadFormatVersion is required for AWS_PROXY integrations",
            ));
        }
        None => {}
    }
    if let Some(t) = input.timeout_in_millis {
        if !(50..=30_000).contains(&t) {
            return Err(ApiError::bad_request(
                "Invalid timeout specified: it must be between 50 and 30000 milliseconds",
            ));
        }
        i.timeout_ms = t as u32;
    }
    if let Some(d) = input.description {
        i.description = d;
    }
    Ok(())
}

fn registry_error(e: ApiError) -> nimbus_httpapi::registry::Error {
    match e.status {
        StatusCode::NOT_FOUND => nimbus_httpapi::registry::Error::NotFound(e.message),
        StatusCode::CONFLICT => nimbus_httpapi::registry::Error::Conflict(e.message),
        _ => nimbus_httpapi::registry::Error::BadRequest(e.message),
    }
}

async fn list_integrations(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    Query(page): Query<Page>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    items(
        deployed.api.integrations.values().map(integration_json),
        &page,
    )
}

async fn create_integration(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    body: Bytes,
) -> Answer {
    let integration = new_integration(&g, &caller, parse(&body)?)?;
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        let out = integration_json(&integration);
        api.integrations
            .insert(integration.integration_id.clone(), integration);
        Ok(out)
    })?;
    created(out)
}

fn integration_not_found(id: &str) -> nimbus_httpapi::registry::Error {
    nimbus_httpapi::registry::Error::NotFound(format!(
        "Invalid Integration identifier specified {id}"
    ))
}

async fn get_integration(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    let integration = deployed
        .api
        .integrations
        .get(&id)
        .ok_or_else(|| integration_not_found(&id))?;
    ok(integration_json(integration))
}

async fn update_integration(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let input: IntegrationInput = parse(&body)?;
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        let integration = api
            .integrations
            .get_mut(&id)
            .ok_or_else(|| integration_not_found(&id))?;
        apply_integration(&g, &caller, integration, input, false).map_err(registry_error)?;
        Ok(integration_json(integration))
    })?;
    ok(out)
}

async fn delete_integration(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
) -> Answer {
    g.apis.modify(&caller.account, &api, |api| {
        let target = format!("integrations/{id}");
        if api
            .routes
            .values()
            .any(|r| r.target.as_deref() == Some(&target))
        {
            return Err(nimbus_httpapi::registry::Error::Conflict(format!(
                "Cannot delete integration {id}: a route targets it"
            )));
        }
        api.integrations
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| integration_not_found(&id))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- Routes --------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct RouteInput {
    route_key: Option<String>,
    target: Option<String>,
    authorization_type: Option<String>,
    authorizer_id: Option<String>,
    authorization_scopes: Option<Vec<String>>,
    api_key_required: Option<bool>,
}

fn route_json(r: &Route) -> Value {
    let mut out = json!({
        "routeId": r.route_id,
        "routeKey": r.route_key,
        "apiKeyRequired": false,
        "authorizationType": r.authorization_type,
    });
    if let Some(t) = &r.target {
        out["target"] = t.clone().into();
    }
    if let Some(a) = &r.authorizer_id {
        out["authorizerId"] = a.clone().into();
    }
    if !r.authorization_scopes.is_empty() {
        out["authorizationScopes"] = r.authorization_scopes.clone().into();
    }
    out
}

fn check_route_key(key: &str) -> Result<(), ApiError> {
    RouteKey::parse(key)
        .map(|_| ())
        .map_err(|e| ApiError::bad_request(e.0))
}

/// Applies a route input to `route` within `api`, checking the key, the target and the
/// authorization.
fn apply_route(api: &HttpApi, route: &mut Route, input: RouteInput) -> Result<(), ApiError> {
    if let Some(key) = input.route_key {
        check_route_key(&key)?;
        if api
            .routes
            .values()
            .any(|r| r.route_key == key && r.route_id != route.route_id)
        {
            return Err(ApiError::conflict(format!(
                "Route with key {key} already exists for this API"
            )));
        }
        route.route_key = key;
    }
    if let Some(target) = input.target {
        let id = target.strip_prefix("integrations/").ok_or_else(|| {
            ApiError::bad_request(format!(
                "Invalid target specified {target}: a target is integrations/ID"
            ))
        })?;
        if !api.integrations.contains_key(id) {
            return Err(ApiError::bad_request(format!(
                "Invalid target specified {target}: no such integration"
            )));
        }
        route.target = Some(target);
    }
    match input.authorization_type.as_deref() {
        None => {}
        Some("NONE") => {
            route.authorization_type = "NONE".into();
            route.authorizer_id = None;
        }
        Some("JWT") => route.authorization_type = "JWT".into(),
        Some(other @ ("AWS_IAM" | "CUSTOM")) => {
            return Err(ApiError::bad_request(format!(
                "Authorization type {other} is not supported by this node yet"
            )));
        }
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Invalid authorization type specified: {other}"
            )));
        }
    }
    if let Some(id) = input.authorizer_id {
        if !api.authorizers.contains_key(&id) {
            return Err(ApiError::bad_request(format!(
                "Invalid authorizer identifier specified {id}"
            )));
        }
        route.authorizer_id = Some(id);
    }
    if route.authorization_type == "JWT" && route.authorizer_id.is_none() {
        return Err(ApiError::bad_request(
            "A route with authorization type JWT needs an authorizer",
        ));
    }
    if input.api_key_required == Some(true) {
        return Err(ApiError::bad_request(
            "API keys are not supported by HTTP APIs",
        ));
    }
    if let Some(scopes) = input.authorization_scopes {
        route.authorization_scopes = scopes;
    }
    Ok(())
}

async fn list_routes(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    Query(page): Query<Page>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    items(deployed.api.routes.values().map(route_json), &page)
}

async fn create_route(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    body: Bytes,
) -> Answer {
    let input: RouteInput = parse(&body)?;
    if input.route_key.is_none() {
        return Err(ApiError::bad_request("RouteKey is required"));
    }
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        let mut route = Route {
            route_id: new_id(7),
            route_key: String::new(),
            target: None,
            authorization_type: "NONE".into(),
            authorizer_id: None,
            authorization_scopes: Vec::new(),
        };
        apply_route(api, &mut route, input).map_err(registry_error)?;
        let out = route_json(&route);
        api.routes.insert(route.route_id.clone(), route);
        Ok(out)
    })?;
    created(out)
}

fn route_not_found(id: &str) -> nimbus_httpapi::registry::Error {
    nimbus_httpapi::registry::Error::NotFound(format!("Invalid Route identifier specified {id}"))
}

async fn get_route(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    let route = deployed
        .api
        .routes
        .get(&id)
        .ok_or_else(|| route_not_found(&id))?;
    ok(route_json(route))
}

async fn update_route(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let input: RouteInput = parse(&body)?;
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        let mut route = api
            .routes
            .get(&id)
            .cloned()
            .ok_or_else(|| route_not_found(&id))?;
        apply_route(api, &mut route, input).map_err(registry_error)?;
        let out = route_json(&route);
        api.routes.insert(id.clone(), route);
        Ok(out)
    })?;
    ok(out)
}

async fn delete_route(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
) -> Answer {
    g.apis.modify(&caller.account, &api, |api| {
        api.routes
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| route_not_found(&id))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- Stages --------------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct StageInput {
    stage_name: Option<String>,
    auto_deploy: Option<bool>,
    stage_variables: Option<BTreeMap<String, String>>,
    description: Option<String>,
    deployment_id: Option<String>,
}

fn stage_json(s: &Stage) -> Value {
    json!({
        "stageName": s.stage_name,
        "autoDeploy": s.auto_deploy,
        "stageVariables": s.stage_variables,
        "description": s.description,
        "createdDate": nimbus_types::time::iso8601(s.created_ms),
        "lastUpdatedDate": nimbus_types::time::iso8601(s.last_updated_ms),
        "defaultRouteSettings": {"detailedMetricsEnabled": false},
        "routeSettings": {},
        "tags": {},
    })
}

fn check_stage_name(name: &str) -> Result<(), ApiError> {
    let valid = name == "$default"
        || (!name.is_empty()
            && name.len() <= 128
            && name
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'));
    if valid {
        Ok(())
    } else {
        Err(ApiError::bad_request(format!(
            "Invalid stage name specified: {name}"
        )))
    }
}

fn apply_stage(stage: &mut Stage, input: StageInput) -> Result<(), ApiError> {
    if input.deployment_id.is_some() {
        return Err(ApiError::bad_request(
            "Deployments are not supported by this node: every stage serves the current routes",
        ));
    }
    if let Some(a) = input.auto_deploy {
        stage.auto_deploy = a;
    }
    if let Some(vars) = input.stage_variables {
        for (k, v) in &vars {
            let key_ok = !k.is_empty()
                && k.len() <= 64
                && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
            if !key_ok || v.len() > 2048 {
                return Err(ApiError::bad_request(format!(
                    "Invalid stage variable {k}: names are 1 to 64 letters, digits and _; values \
                     at most 2048 characters"
                )));
            }
        }
        stage.stage_variables = vars;
    }
    if let Some(d) = input.description {
        stage.description = d;
    }
    stage.last_updated_ms = nimbus_types::time::now_ms();
    Ok(())
}

async fn list_stages(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    Query(page): Query<Page>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    items(deployed.api.stages.values().map(stage_json), &page)
}

async fn create_stage(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    body: Bytes,
) -> Answer {
    let mut input: StageInput = parse(&body)?;
    let name = input.stage_name.take().unwrap_or_default();
    check_stage_name(&name)?;
    let now = nimbus_types::time::now_ms();
    let mut stage = Stage {
        stage_name: name.clone(),
        auto_deploy: false,
        stage_variables: BTreeMap::new(),
        description: String::new(),
        created_ms: now,
        last_updated_ms: now,
    };
    apply_stage(&mut stage, input)?;
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        if api.stages.contains_key(&name) {
            return Err(nimbus_httpapi::registry::Error::Conflict(format!(
                "Stage {name} already exists"
            )));
        }
        let out = stage_json(&stage);
        api.stages.insert(name, stage);
        Ok(out)
    })?;
    created(out)
}

fn stage_not_found(name: &str) -> nimbus_httpapi::registry::Error {
    nimbus_httpapi::registry::Error::NotFound(format!("Invalid stage identifier specified {name}"))
}

async fn get_stage(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, name)): Path<(String, String)>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    let stage = deployed
        .api
        .stages
        .get(&name)
        .ok_or_else(|| stage_not_found(&name))?;
    ok(stage_json(stage))
}

async fn update_stage(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, name)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let input: StageInput = parse(&body)?;
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        let stage = api
            .stages
            .get_mut(&name)
            .ok_or_else(|| stage_not_found(&name))?;
        apply_stage(stage, input).map_err(registry_error)?;
        Ok(stage_json(stage))
    })?;
    ok(out)
}

async fn delete_stage(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, name)): Path<(String, String)>,
) -> Answer {
    g.apis.modify(&caller.account, &api, |api| {
        api.stages
            .remove(&name)
            .map(|_| ())
            .ok_or_else(|| stage_not_found(&name))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- Authorizers ---------------------------------------------------------------------------

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct JwtInput {
    audience: Option<Vec<String>>,
    issuer: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase", default)]
struct AuthorizerInput {
    name: Option<String>,
    authorizer_type: Option<String>,
    identity_source: Option<Vec<String>>,
    jwt_configuration: Option<JwtInput>,
}

fn authorizer_json(a: &Authorizer) -> Value {
    json!({
        "authorizerId": a.authorizer_id,
        "authorizerType": a.authorizer_type,
        "identitySource": a.identity_source,
        "jwtConfiguration": {"audience": a.audience, "issuer": a.issuer},
        "name": a.name,
    })
}

fn apply_authorizer(
    a: &mut Authorizer,
    input: AuthorizerInput,
    creating: bool,
) -> Result<(), ApiError> {
    match input.authorizer_type.as_deref() {
        Some("JWT") => a.authorizer_type = "JWT".into(),
        Some(other) => {
            return Err(ApiError::bad_request(format!(
                "Authorizer type {other} is not supported by this node: JWT authorizers are"
            )));
        }
        None if creating => return Err(ApiError::bad_request("AuthorizerType is required")),
        None => {}
    }
    if let Some(name) = input.name {
        check_name(&name)?;
        a.name = name;
    }
    if let Some(sources) = input.identity_source {
        let valid = sources.len() == 1
            && sources[0]
                .strip_prefix("$request.header.")
                .is_some_and(|h| axum::http::HeaderName::from_bytes(h.as_bytes()).is_ok());
        if !valid {
            return Err(ApiError::bad_request(
                "A JWT authorizer's identity source is one header: $request.header.NAME",
            ));
        }
        a.identity_source = sources;
    }
    if let Some(jwt) = input.jwt_configuration {
        if let Some(issuer) = jwt.issuer {
            if !(issuer.starts_with("https://") || issuer.starts_with("http://")) {
                return Err(ApiError::bad_request(
                    "A JWT authorizer's issuer is an http(s) URL",
                ));
            }
            a.issuer = issuer;
        }
        if let Some(audience) = jwt.audience {
            a.audience = audience;
        }
    }
    if a.issuer.is_empty() || a.audience.is_empty() {
        return Err(ApiError::bad_request(
            "A JWT authorizer needs JwtConfiguration with an Issuer and an Audience",
        ));
    }
    Ok(())
}

async fn list_authorizers(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    Query(page): Query<Page>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    items(
        deployed.api.authorizers.values().map(authorizer_json),
        &page,
    )
}

async fn create_authorizer(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(api): Path<String>,
    body: Bytes,
) -> Answer {
    let mut authorizer = Authorizer {
        authorizer_id: new_id(6),
        name: String::new(),
        authorizer_type: String::new(),
        identity_source: vec!["$request.header.Authorization".into()],
        issuer: String::new(),
        audience: Vec::new(),
    };
    apply_authorizer(&mut authorizer, parse(&body)?, true)?;
    if authorizer.name.is_empty() {
        return Err(ApiError::bad_request("Name is required"));
    }
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        let out = authorizer_json(&authorizer);
        api.authorizers
            .insert(authorizer.authorizer_id.clone(), authorizer);
        Ok(out)
    })?;
    created(out)
}

fn authorizer_not_found(id: &str) -> nimbus_httpapi::registry::Error {
    nimbus_httpapi::registry::Error::NotFound(format!(
        "Invalid authorizer identifier specified {id}"
    ))
}

async fn get_authorizer(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
) -> Answer {
    let deployed = g.apis.of(&caller.account, &api)?;
    let authorizer = deployed
        .api
        .authorizers
        .get(&id)
        .ok_or_else(|| authorizer_not_found(&id))?;
    ok(authorizer_json(authorizer))
}

async fn update_authorizer(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
    body: Bytes,
) -> Answer {
    let input: AuthorizerInput = parse(&body)?;
    let (_, out) = g.apis.modify(&caller.account, &api, |api| {
        let authorizer = api
            .authorizers
            .get_mut(&id)
            .ok_or_else(|| authorizer_not_found(&id))?;
        apply_authorizer(authorizer, input, false).map_err(registry_error)?;
        Ok(authorizer_json(authorizer))
    })?;
    ok(out)
}

async fn delete_authorizer(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path((api, id)): Path<(String, String)>,
) -> Answer {
    g.apis.modify(&caller.account, &api, |api| {
        if api
            .routes
            .values()
            .any(|r| r.authorizer_id.as_deref() == Some(&id))
        {
            return Err(nimbus_httpapi::registry::Error::Conflict(format!(
                "Cannot delete authorizer {id}: a route uses it"
            )));
        }
        api.authorizers
            .remove(&id)
            .map(|_| ())
            .ok_or_else(|| authorizer_not_found(&id))
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

// --- Tags ----------------------------------------------------------------------------------

/// The API a tagging request's ARN names (`arn:aws:apigateway:REGION::/apis/ID`); APIs are
/// what this node tags.
fn tagged_api(g: &ApiGateway, arn: &str) -> Result<String, ApiError> {
    let prefix = format!("arn:aws:apigateway:{}::/apis/", g.domain.region);
    arn.strip_prefix(&prefix)
        .filter(|id| !id.is_empty() && !id.contains('/'))
        .map(str::to_owned)
        .ok_or_else(|| {
            ApiError::new(
                StatusCode::NOT_FOUND,
                "NotFoundException",
                format!("Invalid resource ARN {arn}: only APIs are tagged here"),
            )
        })
}

#[derive(Debug, Default, Deserialize)]
#[serde(default)]
struct TagsInput {
    tags: BTreeMap<String, String>,
}

/// API Gateway's limits on tags: 50 per resource, keys of 1 to 128 characters that do not
/// start with `aws:`, values of at most 256.
fn check_tags(tags: &BTreeMap<String, String>) -> Result<(), String> {
    if tags.len() > 50 {
        return Err("A resource has at most 50 tags".into());
    }
    for (key, value) in tags {
        if key.is_empty()
            || key.chars().count() > 128
            || key.to_ascii_lowercase().starts_with("aws:")
        {
            return Err(format!("Invalid tag key {key:?}"));
        }
        if value.chars().count() > 256 {
            return Err(format!(
                "The value of tag {key:?} is longer than 256 characters"
            ));
        }
    }
    Ok(())
}

async fn get_tags(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(arn): Path<String>,
) -> Answer {
    let api = tagged_api(&g, &arn)?;
    let deployed = g.apis.of(&caller.account, &api)?;
    ok(json!({ "tags": deployed.api.tags }))
}

async fn tag_resource(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(arn): Path<String>,
    body: Bytes,
) -> Answer {
    let api = tagged_api(&g, &arn)?;
    let input: TagsInput = parse(&body)?;
    g.apis.modify(&caller.account, &api, |api| {
        let mut tags = api.tags.clone();
        tags.extend(input.tags);
        check_tags(&tags).map_err(nimbus_httpapi::registry::Error::BadRequest)?;
        api.tags = tags;
        Ok(())
    })?;
    created(json!({}))
}

async fn untag_resource(
    State(g): State<Shared>,
    Extension(caller): Extension<Caller>,
    Path(arn): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Answer {
    let api = tagged_api(&g, &arn)?;
    let keys: Vec<String> = query
        .into_iter()
        .filter(|(name, _)| name == "tagKeys")
        .map(|(_, key)| key)
        .collect();
    if keys.is_empty() {
        return Err(ApiError::bad_request("tagKeys is required"));
    }
    g.apis.modify(&caller.account, &api, |api| {
        for key in &keys {
            api.tags.remove(key);
        }
        Ok(())
    })?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
