//! Signing in and out, the theme, and the console's static files.

use axum::body::Body;
use axum::extract::{ConnectInfo, Query};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use maud::html;
use serde::Deserialize;

use super::{Shared, checked_form};
use crate::html::{self, Theme, bare_page};
use crate::session::{self, COOKIE, SIGNIN_COOKIE, THEME_COOKIE};
use crate::{Ctx, Form, html_response, safe_next, same_origin, secure, see_other};

pub async fn style() -> Response {
    asset(html::STYLE, "text/css; charset=utf-8")
}

pub async fn script() -> Response {
    asset(html::SCRIPT, "text/javascript; charset=utf-8")
}

fn asset(body: &'static str, content_type: &'static str) -> Response {
    let mut r = body.into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // The path names the version, so a browser may keep it.
    h.insert(
        header::CACHE_CONTROL,
        HeaderValue::from_static("public, max-age=86400"),
    );
    secure(r)
}

#[derive(Deserialize)]
pub struct Next {
    next: Option<String>,
}

/// The sign-in form. It sets a cookie of its own whose value the form carries back, so that a
/// form posted from another site cannot sign a browser in.
pub async fn form(
    axum::extract::State(c): Shared,
    headers: HeaderMap,
    Query(q): Query<Next>,
) -> Response {
    let next = safe_next(q.next.as_deref().unwrap_or_default()).to_owned();
    if c.development {
        return see_other(&next);
    }
    let theme = Theme::of(session::cookie(&headers, THEME_COOKIE).as_deref());
    sign_in_page(theme, &next, None, StatusCode::OK)
}

fn sign_in_page(theme: Theme, next: &str, error: Option<&str>, status: StatusCode) -> Response {
    let token = session::token();
    let body = html! {
        @if let Some(e) = error {
            (html::notice_box(&html::Notice::Error(e.to_owned())))
        }
        p { "Sign in with an access key of this node: an account's administrator key, or an IAM user's. The console can do what the key's policies allow, and nothing more." }
        form.signin method="post" action="/console/signin" {
            input type="hidden" name="signin" value=(token);
            input type="hidden" name="next" value=(next);
            label for="key" { "Access key id" }
            input #key type="text" name="access_key_id" autocomplete="username" required autofocus spellcheck="false";
            label for="secret" { "Secret access key" }
            input #secret type="password" name="secret_access_key" autocomplete="current-password" required;
            button #signin type="submit" { "Sign in" }
        }
    };
    let mut r = html_response(None, status, bare_page(theme, "Sign in", body));
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(SIGNIN_COOKIE, &token, Some(600))) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

pub async fn submit(axum::extract::State(c): Shared, request: axum::extract::Request) -> Response {
    let (parts, body) = request.into_parts();
    let headers = parts.headers;
    let connect = parts
        .extensions
        .get::<ConnectInfo<std::net::SocketAddr>>()
        .cloned();
    let theme = Theme::of(session::cookie(&headers, THEME_COOKIE).as_deref());
    let refuse = |status: StatusCode, message: &str, next: &str| {
        sign_in_page(theme, next, Some(message), status)
    };
    if c.development {
        return see_other("/console/functions");
    }
    if !same_origin(&headers) {
        return refuse(
            StatusCode::FORBIDDEN,
            "This sign-in was sent from another site; it was refused.",
            "/console/functions",
        );
    }
    let form = match Form::read(body, crate::MAX_SMALL_FORM_BYTES).await {
        Ok(f) => f,
        Err(m) => return refuse(StatusCode::PAYLOAD_TOO_LARGE, &m, "/console/functions"),
    };
    let next = safe_next(form.get("next").unwrap_or_default()).to_owned();
    let expected = session::cookie(&headers, SIGNIN_COOKIE);
    if !matches!((form.get("signin"), expected.as_deref()), (Some(a), Some(b)) if session::same(a, b))
    {
        return refuse(
            StatusCode::FORBIDDEN,
            "The sign-in form had expired or was not this console's. Please sign in again.",
            &next,
        );
    }
    let key_id = form.get("access_key_id").unwrap_or_default().trim();
    let secret = form.get("secret_access_key").unwrap_or_default();
    if key_id.is_empty() || secret.is_empty() || key_id.len() > 128 || secret.len() > 128 {
        return refuse(
            StatusCode::BAD_REQUEST,
            "Enter an access key id and its secret access key.",
            &next,
        );
    }
    let address = connect.map(|c| c.0.ip().to_string()).unwrap_or_default();
    let subjects = [key_id, address.as_str()];
    if c.sessions.locked_out(&[
        (key_id, session::MAX_KEY_FAILURES),
        (address.as_str(), session::MAX_ADDRESS_FAILURES),
    ]) {
        return refuse(
            StatusCode::TOO_MANY_REQUESTS,
            "Too many failed sign-ins; wait five minutes and try again.",
            &next,
        );
    }
    let now_s = nimbus_types::time::now_ms() / 1000;
    let accepted = c
        .identity
        .resolve(key_id, None, now_s)
        .is_ok_and(|(expected, _)| session::same(&expected, secret));
    if !accepted {
        c.sessions.failed(&subjects);
        // Only the start of what was typed: a secret pasted into the wrong field stays out of the log.
        let key: String = key_id.chars().take(8).collect();
        tracing::info!(key = %key, %address, "console sign-in refused");
        return refuse(
            StatusCode::UNAUTHORIZED,
            "That access key id and secret access key do not match a key of this node.",
            &next,
        );
    }
    c.sessions.succeeded(key_id);
    let (id, _) = c.sessions.open(Some(key_id.to_owned()));
    let mut r = see_other(&next);
    for cookie in [
        session::set_cookie(COOKIE, &id, None),
        session::set_cookie(SIGNIN_COOKIE, "", Some(0)),
    ] {
        if let Ok(v) = HeaderValue::from_str(&cookie) {
            r.headers_mut().append(header::SET_COOKIE, v);
        }
    }
    r
}

pub async fn sign_out(
    axum::extract::State(c): Shared,
    ctx: Ctx,
    headers: HeaderMap,
    body: Body,
) -> Response {
    if let Err(r) = checked_form(&ctx, &headers, body, crate::MAX_SMALL_FORM_BYTES).await {
        return r;
    }
    if let Some(id) = session::cookie(&headers, COOKIE) {
        c.sessions.close(&id);
    }
    let mut r = see_other(if c.development {
        "/console/functions"
    } else {
        "/console/signin"
    });
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(COOKIE, "", Some(0))) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}

/// Moves to the next theme (the browser's, dark, light) and back to the page.
pub async fn theme(ctx: Ctx, headers: HeaderMap, body: Body) -> Response {
    let form = match checked_form(&ctx, &headers, body, crate::MAX_SMALL_FORM_BYTES).await {
        Ok(f) => f,
        Err(r) => return r,
    };
    let next = ctx.theme.next();
    let mut r = see_other(safe_next(form.get("back").unwrap_or_default()));
    if let Ok(v) = HeaderValue::from_str(&session::set_cookie(
        THEME_COOKIE,
        next.as_str(),
        Some(365 * 86_400),
    )) {
        r.headers_mut().append(header::SET_COOKIE, v);
    }
    r
}
