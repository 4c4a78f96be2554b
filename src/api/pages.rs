//! The admin console (`/console`) and the customer portal page (`/portal`): static pages and
//! scripts embedded in the binary, which call the public HTTP API from the browser. The server
//! renders nothing per request, so the pages carry no data and no token.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};

use super::extract::AppPath;
use crate::error::ApiError;

/// The embedded files under `/assets/`: name, content type and contents.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "ledger.css",
        "text/css; charset=utf-8",
        include_str!("../ui/ledger.css"),
    ),
    (
        "common.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/common.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/console.js"),
    ),
    (
        "portal.js",
        "text/javascript; charset=utf-8",
        include_str!("../ui/portal.js"),
    ),
];

/// Scripts and styles only from this origin, requests only to it, no plugins, no inline code.
const CSP_BASE: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     connect-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'";

fn page(html: &'static str, frame_ancestors: &str) -> Response {
    let csp = format!("{CSP_BASE}; frame-ancestors {frame_ancestors}");
    let mut response = (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
            (header::REFERRER_POLICY, "no-referrer"),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        html,
    )
        .into_response();
    if let Ok(value) = HeaderValue::from_str(&csp) {
        response
            .headers_mut()
            .insert(header::CONTENT_SECURITY_POLICY, value);
    }
    response
}

/// GET /console: the admin console. It may not be framed.
pub async fn console() -> Response {
    let mut response = page(include_str!("../ui/console.html"), "'none'");
    response
        .headers_mut()
        .insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    response
}

/// GET /portal: the customer portal. A product may frame it in its own dashboard.
pub async fn portal() -> Response {
    page(include_str!("../ui/portal.html"), "*")
}

/// GET /assets/{name}
pub async fn asset(AppPath(name): AppPath<String>) -> Response {
    match ASSETS.iter().find(|(n, _, _)| *n == name) {
        Some((_, content_type, body)) => (
            [
                (header::CONTENT_TYPE, *content_type),
                (header::CACHE_CONTROL, "no-cache"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            *body,
        )
            .into_response(),
        None => ApiError::new(
            StatusCode::NOT_FOUND,
            "not_found",
            format!("there is no asset named {name}"),
        )
        .into_response(),
    }
}
