//! `/v1/webhook-endpoints`: where events go.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::json;
use uuid::Uuid;

use super::accounts::page_limit;
use super::auth::Admin;
use super::extract::{AppJson, AppPath, AppQuery, IdempotencyKey};
use super::idempotency::{idempotency, render};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::alerts as events;
use crate::ledger::types::InvalidField;
use crate::webhooks::{CreatedEndpoint, Creation, Delivery, Endpoint};

fn field(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::invalid_field("invalid_request", &InvalidField::new(field, reason))
}

fn endpoint_id(raw: &str) -> Result<Uuid, ApiError> {
    raw.parse()
        .map_err(|_| field("id", "must be a webhook endpoint id (a UUID)"))
}

fn not_found(id: Uuid) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        "webhook_endpoint_not_found",
        format!("webhook endpoint {id} does not exist"),
    )
    .with_details(json!({"id": id}))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EndpointBody {
    url: String,
    #[serde(default)]
    events: Vec<String>,
    description: Option<String>,
}

/// POST /v1/webhook-endpoints: 201 with the endpoint and its secret, shown this once.
pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body, _): AppJson<EndpointBody>,
) -> Result<Response, ApiError> {
    let url = reqwest::Url::parse(&body.url)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .filter(|_| body.url.len() <= 2048)
        .ok_or_else(|| {
            field(
                "url",
                "must be an absolute http(s) URL of at most 2048 characters",
            )
        })?;
    if let Some(reason) = crate::webhooks::guard::refuse(&url, state.webhooks.allow_private()) {
        return Err(field("url", reason));
    }
    let mut types = Vec::with_capacity(body.events.len());
    for (i, event) in body.events.iter().enumerate() {
        if !events::ALL.contains(&event.as_str()) {
            return Err(field(
                &format!("events[{i}]"),
                format!(
                    "{event} is not an event type; known: {}",
                    events::ALL.join(", ")
                ),
            ));
        }
        if !types.contains(event) {
            types.push(event.clone());
        }
    }
    let description = body
        .description
        .map(|d| d.trim().to_owned())
        .filter(|d| !d.is_empty());
    if description
        .as_ref()
        .is_some_and(|d| d.chars().count() > 500)
    {
        return Err(field("description", "must be at most 500 characters long"));
    }
    if !state.webhooks.can_seal() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "encryption_unavailable",
            "webhook endpoints cannot be created: LEDGER_SECRETS_KEY, the key that encrypts their signing secrets, is not set on this ledger",
        )
        .with_details(json!({"setting": "LEDGER_SECRETS_KEY"})));
    }
    let normalized = json!({"url": url.as_str(), "events": types, "description": description});
    let idem = idempotency(key, "POST /v1/webhook-endpoints", &normalized);
    match state
        .webhooks
        .create_endpoint(url.to_string(), types, description, idem.as_ref())
        .await?
    {
        Creation::Done(outcome) => render::<CreatedEndpoint>(outcome, StatusCode::CREATED),
        Creation::Deleted(id) => Err(not_found(id)),
    }
}

/// GET /v1/webhook-endpoints
pub async fn list(
    _: Admin,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let data = state.webhooks.list_endpoints().await?;
    Ok(Json(json!({"data": data})))
}

/// GET /v1/webhook-endpoints/{id}
pub async fn get(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw): AppPath<String>,
) -> Result<Json<Endpoint>, ApiError> {
    let id = endpoint_id(&raw)?;
    state
        .webhooks
        .get_endpoint(id)
        .await?
        .map(Json)
        .ok_or_else(|| not_found(id))
}

/// DELETE /v1/webhook-endpoints/{id}: 204; its pending deliveries are dropped.
pub async fn delete(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw): AppPath<String>,
) -> Result<Response, ApiError> {
    let id = endpoint_id(&raw)?;
    if state.webhooks.delete_endpoint(id).await? {
        Ok(StatusCode::NO_CONTENT.into_response())
    } else {
        Err(not_found(id))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DeliveriesQuery {
    limit: Option<i64>,
}

/// GET /v1/webhook-endpoints/{id}/deliveries: the delivery log, newest first.
pub async fn deliveries(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw): AppPath<String>,
    AppQuery(query): AppQuery<DeliveriesQuery>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let id = endpoint_id(&raw)?;
    let limit = page_limit(query.limit)?;
    if state.webhooks.get_endpoint(id).await?.is_none() {
        return Err(not_found(id));
    }
    let data: Vec<Delivery> = state.webhooks.deliveries(id, limit).await?;
    Ok(Json(json!({"data": data})))
}
