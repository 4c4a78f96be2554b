//! `POST /v1/verify`: verify a customer's key with Unkey, rate-limit, debit.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::auth::Service;
use super::debits::{DebitBody, CREDITS_REMAINING, IDEMPOTENT_REPLAYED};
use super::extract::{request_hash, AppJson, IdempotencyKey};
use crate::app::AppState;
use crate::error::ApiError;
use crate::gate::{debit_of, Gate, GateError, RateState};
use crate::ledger::command::Idempotency;
use crate::ledger::types::InvalidField;

/// The longest customer key Unkey accepts.
pub(crate) const KEY_MAX: usize = 512;

pub(crate) fn gate(state: &AppState) -> Result<&Gate, ApiError> {
    state.gate.as_deref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "auth_unavailable",
            "customer keys cannot be verified: UNKEY_ROOT_KEY is not set on this ledger",
        )
        .with_details(json!({"setting": "UNKEY_ROOT_KEY"}))
    })
}

fn rate_headers(mut error: ApiError, state: &RateState) -> ApiError {
    error = error
        .with_header("x-ratelimit-limit", HeaderValue::from(state.limit))
        .with_header("x-ratelimit-remaining", HeaderValue::from(state.remaining))
        .with_header(
            "x-ratelimit-reset",
            HeaderValue::from(state.reset_ms / 1000),
        );
    error
}

fn retry_after_seconds(reset_ms: i64) -> i64 {
    let wait_ms = reset_ms.saturating_sub(Utc::now().timestamp_millis());
    (wait_ms.saturating_add(999) / 1000).max(1)
}

impl From<GateError> for ApiError {
    fn from(err: GateError) -> Self {
        match err {
            GateError::NotConfigured => ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "auth_unavailable",
                "customer keys cannot be verified: UNKEY_ROOT_KEY is not set on this ledger",
            ),
            GateError::InvalidKey { code } => ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_key",
                format!("the API key is not valid (Unkey says {code})"),
            )
            .with_details(json!({"unkey_code": code})),
            GateError::RateLimited(state) => {
                let retry = state.map_or(1, |s| retry_after_seconds(s.reset_ms));
                let mut error = ApiError::new(
                    StatusCode::TOO_MANY_REQUESTS,
                    "rate_limited",
                    format!("too many requests for this key; retry in {retry} seconds"),
                )
                .with_details(json!({
                    "retry_after": retry,
                    "limit": state.map(|s| s.limit),
                    "reset_at": state.and_then(|s| DateTime::<Utc>::from_timestamp_millis(s.reset_ms)),
                }))
                .with_header("retry-after", HeaderValue::from(retry));
                if let Some(state) = state {
                    error = rate_headers(error, &state);
                }
                error
            }
            GateError::UsageExceeded { key_id } => ApiError::new(
                StatusCode::PAYMENT_REQUIRED,
                "credits_exhausted",
                "Unkey reports this key's usage limit exceeded",
            )
            .with_details(json!({"key_id": key_id, "unkey_code": "USAGE_EXCEEDED"})),
            GateError::NoPlan { key_id, named } => {
                let message = match &named {
                    Some(plan) => format!(
                        "Key {key_id} has no account yet and its plan {plan} does not exist in the ledger"
                    ),
                    None => format!(
                        "Key {key_id} has no plan: set meta.plan on the key in Unkey, or LEDGER_DEFAULT_PLAN on the ledger"
                    ),
                };
                ApiError::new(StatusCode::PAYMENT_REQUIRED, "no_plan", message)
                    .with_details(json!({"key_id": key_id, "plan": named}))
            }
            GateError::Unavailable(reason) => {
                tracing::warn!(%reason, "answering auth_unavailable");
                ApiError::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "auth_unavailable",
                    "the key could not be verified because Unkey is unavailable; retry shortly",
                )
            }
            GateError::Ledger(err) => err.into(),
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VerifyBody {
    key: String,
    operation: Option<String>,
    quantity: Option<i64>,
    cost: Option<i64>,
    pool: Option<String>,
    metadata: Option<Value>,
}

/// POST /v1/verify: 200 `{valid, key_id, account_key_id, debit, ratelimit}`.
pub async fn verify(
    _: Service,
    State(state): State<AppState>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    AppJson(body, _): AppJson<VerifyBody>,
) -> Result<Response, ApiError> {
    if body.key.is_empty() || body.key.len() > KEY_MAX {
        return Err(ApiError::invalid_field(
            "invalid_request",
            &InvalidField::new("key", format!("must be 1 to {KEY_MAX} characters long")),
        ));
    }
    // A ledger token sent as the customer key by mistake is not passed on to Unkey.
    if state.tokens.role_of(&body.key).is_some() {
        return Err(ApiError::invalid_field(
            "invalid_request",
            &InvalidField::new(
                "key",
                "is a ledger admin or service token, not a customer's API key; it was not sent to Unkey",
            ),
        ));
    }
    let request = DebitBody::new(
        body.operation,
        body.quantity,
        body.cost,
        body.pool,
        body.metadata,
    )
    .validate()?;
    let gate = gate(&state)?;
    let idempotency = idempotency_key.map(|key| Idempotency {
        key,
        // The customer key is part of the request (as a hash): keys of one shared account must
        // not replay each other's debits.
        request_hash: request_hash(
            "POST /v1/verify",
            &json!({"key": hex::encode(Sha256::digest(body.key.as_bytes())),
                    "operation": request.spec.operation, "quantity": request.spec.quantity,
                    "cost": request.spec.cost, "pool": request.spec.pool,
                    "metadata": request.metadata}),
        ),
    });
    let verified = gate
        .verify_and_debit(&state.ledger, &body.key, request, idempotency.as_ref())
        .await?;
    let (debit, replayed) = debit_of(&verified.debit).map_err(|e| {
        tracing::error!(error = %e, "stored debit does not decode");
        ApiError::internal()
    })?;
    let body = json!({
        "valid": true,
        "key_id": verified.key_id,
        "account_key_id": verified.account,
        "debit": debit,
        "ratelimit": verified.ratelimit.map(|r| json!({
            "limit": r.limit,
            "remaining": r.remaining,
            "reset_at": DateTime::<Utc>::from_timestamp_millis(r.reset_ms),
        })),
    });
    let mut response = (StatusCode::OK, Json(body)).into_response();
    let headers = response.headers_mut();
    if let Some(remaining) = debit.remaining {
        headers.insert(CREDITS_REMAINING, HeaderValue::from(remaining));
    }
    if let Some(r) = verified.ratelimit {
        headers.insert("x-ratelimit-limit", HeaderValue::from(r.limit));
        headers.insert("x-ratelimit-remaining", HeaderValue::from(r.remaining));
        headers.insert("x-ratelimit-reset", HeaderValue::from(r.reset_ms / 1000));
    }
    if replayed {
        headers.insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    Ok(response)
}
