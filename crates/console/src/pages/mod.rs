//! The console's pages, by section.

mod account;
mod functions;
mod observe;
mod services;
mod signin;

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri};
use axum::response::Response;
use axum::routing::{get, post};
use maud::html;

use crate::html::{Nav, Notice, page};
use crate::{Console, Ctx, Form, html_response, same_origin};

pub(crate) type Shared = State<Arc<Console>>;

pub fn routes() -> Router<Arc<Console>> {
    Router::new()
        .route(
            "/console",
            get(|| async { crate::see_other("/console/functions") }),
        )
        .route(
            "/console/",
            get(|| async { crate::see_other("/console/functions") }),
        )
        .route("/console/assets/console.css", get(signin::style))
        .route("/console/assets/console.js", get(signin::script))
        .route("/console/signin", get(signin::form).post(signin::submit))
        .route("/console/signout", post(signin::sign_out))
        .route("/console/theme", post(signin::theme))
        .route("/console/functions", get(functions::list))
        .route("/console/functions/{name}", get(functions::detail))
        .route(
            "/console/functions/{name}/invoke",
            get(back_to_function).post(functions::invoke),
        )
        .route(
            "/console/functions/{name}/monitoring",
            get(observe::monitoring),
        )
        .route(
            "/console/functions/{name}/logs",
            get(observe::function_logs),
        )
        .route("/console/functions/{name}/logs/tail", get(observe::tail))
        .route("/console/functions/{name}/events", get(observe::events))
        .route(
            "/console/functions/{name}/events/{id}/replay",
            get(back_to_events).post(observe::replay),
        )
        .route("/console/logs", get(observe::logs))
        .route("/console/queues", get(account::queues))
        .route("/console/queues/{name}", get(account::queue))
        .route("/console/usage", get(account::usage))
        .route("/console/fleet", get(account::fleet))
        .route("/console/buckets", get(services::buckets))
        .route("/console/buckets/{bucket}", get(services::bucket))
        .route(
            "/console/buckets/{bucket}/download",
            get(services::download),
        )
        .route(
            "/console/buckets/{bucket}/upload",
            get(back_to_bucket)
                .post(services::upload)
                .layer(axum::extract::DefaultBodyLimit::max(
                    services::MAX_UPLOAD_FORM_BYTES,
                )),
        )
        .route("/console/tables", get(services::tables))
        .route("/console/tables/{name}", get(services::table))
        .route("/console/userpools", get(services::user_pools))
        .route("/console/userpools/{id}", get(services::user_pool))
        .route("/console/stacks", get(services::stacks))
        .route("/console/stacks/{name}", get(services::stack))
        .route("/console/{*rest}", get(not_found).post(not_found))
}

/// The signed-in caller of a request; without one, the request is answered with the way to
/// sign in.
impl axum::extract::FromRequestParts<Arc<Console>> for Ctx {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut axum::http::request::Parts,
        console: &Arc<Console>,
    ) -> Result<Self, Response> {
        let uri = &parts.uri;
        let path = uri.path_and_query().map_or(uri.path(), |p| p.as_str());
        console.signed_in(&parts.headers, path)
    }
}

/// A page that could not be read: the API's refusal, with its status.
pub(crate) fn failed(ctx: &Ctx, title: &str, nav: Nav, f: &crate::Failure) -> Response {
    let notice = Notice::Error(f.describe());
    html_response(
        Some(ctx),
        status_of(f),
        page(ctx, title, nav, Some(&notice), crate::html::empty()),
    )
}

/// Reads a form that changes something: it must come from the console's own pages and carry
/// the session's token. The refusal is a page saying why.
pub(crate) async fn checked_form(
    ctx: &Ctx,
    headers: &HeaderMap,
    body: axum::body::Body,
    limit: usize,
) -> Result<Form, Response> {
    if !same_origin(headers) {
        return Err(refusal(
            ctx,
            StatusCode::FORBIDDEN,
            "This form was sent from another site; nothing was changed.",
        ));
    }
    let form = match Form::read(body, limit).await {
        Ok(f) => f,
        Err(message) => return Err(refusal(ctx, StatusCode::PAYLOAD_TOO_LARGE, &message)),
    };
    match form.get("csrf") {
        Some(token) if crate::session::same(token, &ctx.csrf) => Ok(form),
        _ => Err(refusal(
            ctx,
            StatusCode::FORBIDDEN,
            "This form's session token is missing or stale (the page may be from an earlier \
             session); nothing was changed. Reload the page and try again.",
        )),
    }
}

/// A page that only says what went wrong.
pub(crate) fn refusal(ctx: &Ctx, status: StatusCode, message: &str) -> Response {
    let body = html! {
        p { a href="/console/functions" { "Back to the functions" } }
    };
    let notice = Notice::Error(message.to_owned());
    html_response(
        Some(ctx),
        status,
        page(ctx, "Not done", Nav::None, Some(&notice), body),
    )
}

/// A form's address opened as a page (after signing in again, say): the page the form is on.
async fn back_to_function(axum::extract::Path(name): axum::extract::Path<String>) -> Response {
    crate::see_other(&format!(
        "/console/functions/{}",
        crate::call::segment(&name)
    ))
}

async fn back_to_events(
    axum::extract::Path((name, _)): axum::extract::Path<(String, String)>,
) -> Response {
    crate::see_other(&format!(
        "/console/functions/{}/events",
        crate::call::segment(&name)
    ))
}

async fn back_to_bucket(axum::extract::Path(bucket): axum::extract::Path<String>) -> Response {
    crate::see_other(&format!(
        "/console/buckets/{}",
        crate::call::segment(&bucket)
    ))
}

async fn not_found(ctx: Ctx, uri: Uri) -> Response {
    let body = html! { p { "There is no console page at " code { (uri.path()) } "." } };
    html_response(
        Some(&ctx),
        StatusCode::NOT_FOUND,
        page(&ctx, "Not found", Nav::None, None, body),
    )
}

/// The HTTP status a failed API call is shown with.
pub(crate) fn status_of(f: &crate::Failure) -> StatusCode {
    StatusCode::from_u16(f.status)
        .ok()
        .filter(|s| s.is_client_error() || s.is_server_error())
        .unwrap_or(StatusCode::BAD_GATEWAY)
}
