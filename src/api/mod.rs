//! HTTP routes, one file per resource named after its route. Handlers are thin: parse, one call
//! into the service, render. HTTP statuses live here and nowhere below.

pub mod accounts;
pub mod adjustments;
pub mod auth;
pub mod billing;
pub mod debits;
pub mod export;
pub mod extract;
pub mod grants;
pub mod health;
pub mod idempotency;
pub mod me;
pub mod members;
pub mod pages;
pub mod plans;
pub mod portal;
pub mod refunds;
pub mod reservations;
mod strict;
pub mod verify;
pub mod webhooks;

use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderName, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, put};
use axum::Router;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::request_id::{MakeRequestUuid, PropagateRequestIdLayer, SetRequestIdLayer};
use tower_http::timeout::TimeoutLayer;
use tower_http::trace::TraceLayer;

use crate::app::AppState;
use crate::error::ApiError;

const REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");

pub fn router(state: AppState) -> Router {
    let timeout = state.request_timeout;
    Router::new()
        .route("/healthz", get(health::healthz))
        .route("/readyz", get(health::readyz))
        .route("/v1/plans", get(plans::list))
        .route("/v1/plans/{plan_id}", put(plans::put).get(plans::get))
        .route("/v1/accounts", get(accounts::list))
        .route(
            "/v1/accounts/{key_id}",
            put(accounts::put).get(accounts::get),
        )
        .route("/v1/accounts/{key_id}/balance", get(accounts::balance))
        .route(
            "/v1/accounts/{key_id}/debits",
            post(debits::create).get(debits::list),
        )
        .route("/v1/debits/{id}", get(debits::get))
        .route("/v1/accounts/{key_id}/entries", get(accounts::entries))
        .route(
            "/v1/accounts/{key_id}/grants",
            post(grants::create).get(grants::list),
        )
        .route(
            "/v1/accounts/{key_id}/adjustments",
            post(adjustments::adjust),
        )
        .route("/v1/accounts/{key_id}/plan", post(accounts::change_plan))
        .route("/v1/accounts/{key_id}/members", get(members::list))
        .route(
            "/v1/accounts/{key_id}/members/{member_key_id}",
            put(members::put).get(members::get).delete(members::delete),
        )
        .route("/v1/grants/{id}/void", post(grants::void))
        .route(
            "/v1/accounts/{key_id}/reservations",
            post(reservations::create),
        )
        .route("/v1/reservations/{id}", get(reservations::get))
        .route("/v1/reservations/{id}/commit", post(reservations::commit))
        .route("/v1/reservations/{id}/release", post(reservations::release))
        .route("/v1/debits/{id}/refunds", post(refunds::refund))
        .route("/v1/accounts/{key_id}/usage", get(accounts::usage))
        .route("/v1/verify", post(verify::verify))
        .route("/v1/me/balance", get(me::my_balance))
        .route("/v1/me/entries", get(me::my_entries))
        .route("/v1/me/usage", get(me::my_usage))
        .route(
            "/v1/webhook-endpoints",
            post(webhooks::create).get(webhooks::list),
        )
        .route(
            "/v1/webhook-endpoints/{id}",
            get(webhooks::get).delete(webhooks::delete),
        )
        .route(
            "/v1/webhook-endpoints/{id}/deliveries",
            get(webhooks::deliveries),
        )
        .route(
            "/v1/accounts/{key_id}/checkout-sessions",
            post(billing::checkout),
        )
        .route("/v1/stripe/webhook", post(billing::stripe_webhook))
        .route(
            "/v1/accounts/{key_id}/portal-sessions",
            post(portal::create),
        )
        .route("/v1/portal", get(portal::view))
        .route("/v1/portal/checkout-sessions", post(portal::checkout))
        .route("/console", get(pages::console))
        .route("/portal", get(pages::portal))
        .route("/assets/{name}", get(pages::asset))
        .route("/metrics", get(crate::telemetry::render))
        .route_layer(axum::middleware::from_fn(crate::telemetry::track))
        .fallback(|| async { ApiError::for_status(StatusCode::NOT_FOUND) })
        .layer(DefaultBodyLimit::max(extract::BODY_LIMIT))
        .layer(axum::middleware::from_fn(request_started))
        .layer(TimeoutLayer::with_status_code(
            StatusCode::SERVICE_UNAVAILABLE,
            timeout,
        ))
        .layer(CatchPanicLayer::custom(|_| {
            tracing::error!("a handler panicked");
            ApiError::internal().into_response()
        }))
        .layer(axum::middleware::map_response(error_shape))
        .layer(PropagateRequestIdLayer::new(REQUEST_ID))
        .layer(
            TraceLayer::new_for_http()
                // Latency as a number of milliseconds (JSON logs can sum it); 5xx at WARN.
                .on_response(
                    |response: &Response, latency: std::time::Duration, _: &tracing::Span| {
                        let status = response.status().as_u16();
                        let latency_ms = latency.as_secs_f64() * 1000.0;
                        if response.status().is_server_error() {
                            tracing::warn!(status, latency_ms, "response");
                        } else {
                            tracing::info!(status, latency_ms, "response");
                        }
                    },
                )
                .on_failure(())
                .make_span_with(|request: &axum::http::Request<axum::body::Body>| {
                    let route = request
                        .extensions()
                        .get::<axum::extract::MatchedPath>()
                        .map(|p| p.as_str().to_owned())
                        .unwrap_or_default();
                    let request_id = request
                        .headers()
                        .get(&REQUEST_ID)
                        .and_then(|v| v.to_str().ok())
                        .unwrap_or_default()
                        .to_owned();
                    // The URI is not logged: only the method, the matched route and the request id.
                    tracing::info_span!("request", method = %request.method(), route, request_id)
                }),
        )
        .layer(SetRequestIdLayer::new(REQUEST_ID, MakeRequestUuid))
        .with_state(state)
}

/// Runs the request with its start time at hand, for the deadline of the writes it submits.
async fn request_started(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> axum::response::Response {
    crate::service::REQUEST_STARTED
        .scope(tokio::time::Instant::now(), next.run(request))
        .await
}

/// Responses made by the router or a layer (405, a timeout, a panic) carry no JSON body; give
/// every error our shape.
async fn error_shape(response: Response) -> Response {
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let is_json = response
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if is_json {
        return response;
    }
    let (parts, _) = response.into_parts();
    let mut shaped = ApiError::for_status(status).into_response();
    for (name, value) in parts.headers.iter() {
        if name != header::CONTENT_TYPE && name != header::CONTENT_LENGTH {
            shaped.headers_mut().insert(name.clone(), value.clone());
        }
    }
    shaped
}
