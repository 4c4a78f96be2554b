//! `POST /v1/debits/{id}/refunds`

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::auth::Admin;
use super::extract::{AppPath, IdempotencyKey, OptionalJson};
use super::idempotency::{idempotency, render};
use super::reservations::uuid_path;
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::model::Refund;
use crate::ledger::types::{check_positive, InvalidField};

fn field(f: InvalidField) -> ApiError {
    ApiError::invalid_field("invalid_request", &f)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RefundBody {
    amount: Option<i64>,
    reason: Option<String>,
}

/// POST /v1/debits/{id}/refunds: 201 with the refund.
pub async fn refund(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJson(body): OptionalJson<RefundBody>,
) -> Result<Response, ApiError> {
    let id = uuid_path(&raw_id, "debit")?;
    let amount = body
        .amount
        .map(|a| check_positive("amount", a).map_err(field))
        .transpose()?;
    let reason = body
        .reason
        .map(|r| r.trim().to_owned())
        .filter(|r| !r.is_empty());
    if reason.as_ref().is_some_and(|r| r.chars().count() > 500) {
        return Err(field(InvalidField::new(
            "reason",
            "must be at most 500 characters long",
        )));
    }
    let normalized = json!({"debit_id": id, "amount": amount, "reason": reason});
    let idem = idempotency(key, "POST /v1/debits/{id}/refunds", &normalized);
    let outcome = state
        .ledger
        .refund(id, amount, reason, idem.as_ref())
        .await?;
    render::<Refund>(outcome, StatusCode::CREATED)
}
