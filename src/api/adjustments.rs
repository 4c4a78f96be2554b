//! `POST /v1/accounts/{key_id}/adjustments`

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use serde::Deserialize;
use serde_json::json;

use super::accounts::key_id;
use super::auth::Admin;
use super::extract::{AppJson, AppPath, IdempotencyKey};
use super::idempotency::{idempotency, render};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::adjust::AdjustmentRequest;
use crate::ledger::model::{Adjustment, AdjustmentOp};
use crate::ledger::types::{check_positive, InvalidField, PoolName, MAX_CREDITS};

fn field(f: InvalidField) -> ApiError {
    ApiError::invalid_field("invalid_request", &f)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdjustmentBody {
    pool: Option<String>,
    op: AdjustmentOp,
    amount: i64,
    reason: String,
}

/// POST /v1/accounts/{key_id}/adjustments: 201 with the adjustment.
pub async fn adjust(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body, _): AppJson<AdjustmentBody>,
) -> Result<Response, ApiError> {
    let account = key_id(&raw_key)?;
    let pool = PoolName::parse("pool", body.pool.as_deref().unwrap_or("credits")).map_err(field)?;
    let amount = match body.op {
        AdjustmentOp::Set if (0..=MAX_CREDITS).contains(&body.amount) => body.amount,
        AdjustmentOp::Set => {
            return Err(field(InvalidField::new(
                "amount",
                format!("must be between 0 and {MAX_CREDITS}"),
            )))
        }
        _ => check_positive("amount", body.amount).map_err(field)?,
    };
    let reason = body.reason.trim().to_owned();
    if reason.is_empty() || reason.chars().count() > 500 {
        return Err(field(InvalidField::new(
            "reason",
            "must be 1 to 500 characters long",
        )));
    }
    let request = AdjustmentRequest {
        pool,
        op: body.op,
        amount,
        reason,
    };
    let normalized = json!({"pool": request.pool, "op": request.op, "amount": request.amount,
                            "reason": request.reason});
    let idem = idempotency(key, "POST /v1/accounts/{key_id}/adjustments", &normalized);
    let outcome = state
        .ledger
        .adjust(&account, &request, idem.as_ref())
        .await?;
    render::<Adjustment>(outcome, StatusCode::CREATED)
}
