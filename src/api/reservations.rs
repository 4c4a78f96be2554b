//! `/v1/accounts/{key_id}/reservations`, `/v1/reservations/{id}`: holds for long work.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::accounts::key_id;
use super::auth::Service;
use super::debits::{debit_response, DebitBody};
use super::extract::{AppJson, AppPath, IdempotencyKey, OptionalJson};
use super::idempotency::{idempotency, render};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::model::{Debit, Reservation};
use crate::ledger::reserve::{ReservationRequest, DEFAULT_TTL_SECONDS, MAX_TTL_SECONDS};
use crate::ledger::types::{check_positive, InvalidField};
use crate::service::Outcome;

fn field(f: InvalidField) -> ApiError {
    ApiError::invalid_field("invalid_request", &f)
}

pub(crate) fn uuid_path(raw: &str, what: &str) -> Result<Uuid, ApiError> {
    raw.parse::<Uuid>().map_err(|_| {
        field(InvalidField::new(
            "id",
            format!("must be a {what} id (a UUID)"),
        ))
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReservationBody {
    operation: Option<String>,
    quantity: Option<i64>,
    cost: Option<i64>,
    pool: Option<String>,
    metadata: Option<Value>,
    ttl_seconds: Option<i64>,
}

/// POST /v1/accounts/{key_id}/reservations: 201 with the hold, 402 when it cannot be covered.
pub async fn create(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body, _): AppJson<ReservationBody>,
) -> Result<Response, ApiError> {
    let account = key_id(&raw_key)?;
    let ttl_seconds = body.ttl_seconds.unwrap_or(DEFAULT_TTL_SECONDS);
    if !(1..=MAX_TTL_SECONDS).contains(&ttl_seconds) {
        return Err(field(InvalidField::new(
            "ttl_seconds",
            format!("must be between 1 and {MAX_TTL_SECONDS}"),
        )));
    }
    // The same fields as a debit, validated the same way.
    let debit = DebitBody::new(
        body.operation,
        body.quantity,
        body.cost,
        body.pool,
        body.metadata,
    )
    .validate()?;
    let request = ReservationRequest {
        source_key_id: None,
        spec: debit.spec,
        ttl_seconds,
        metadata: debit.metadata,
    };
    let normalized = json!({
        "operation": request.spec.operation, "quantity": request.spec.quantity,
        "cost": request.spec.cost, "pool": request.spec.pool, "metadata": request.metadata,
        "ttl_seconds": request.ttl_seconds,
    });
    let idem = idempotency(key, "POST /v1/accounts/{key_id}/reservations", &normalized);
    let outcome = state
        .ledger
        .reserve(&account, &request, idem.as_ref())
        .await?;
    render::<Reservation>(outcome, StatusCode::CREATED)
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CommitBody {
    amount: Option<i64>,
}

/// POST /v1/reservations/{id}/commit: 200 with the debit.
pub async fn commit(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    OptionalJson(body): OptionalJson<CommitBody>,
) -> Result<Response, ApiError> {
    let id = uuid_path(&raw_id, "reservation")?;
    let amount = body
        .amount
        .map(|a| check_positive("amount", a).map_err(field))
        .transpose()?;
    let normalized = json!({"reservation_id": id, "amount": amount});
    let idem = idempotency(key, "POST /v1/reservations/{id}/commit", &normalized);
    match state
        .ledger
        .commit_reservation(id, amount, idem.as_ref())
        .await?
    {
        Outcome::Done(debit) => Ok(debit_response(StatusCode::OK, &debit, false)),
        Outcome::Replayed(body) => {
            let debit: Debit = serde_json::from_value(body).map_err(|e| {
                tracing::error!(error = %e, "stored debit does not decode");
                ApiError::internal()
            })?;
            Ok(debit_response(StatusCode::OK, &debit, true))
        }
    }
}

/// POST /v1/reservations/{id}/release: 200 with the released reservation. With an
/// Idempotency-Key, a retry answers the first release again.
pub async fn release(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
) -> Result<Response, ApiError> {
    let id = uuid_path(&raw_id, "reservation")?;
    let normalized = json!({"reservation_id": id});
    let idem = idempotency(key, "POST /v1/reservations/{id}/release", &normalized);
    let outcome = state.ledger.release_reservation(id, idem.as_ref()).await?;
    render::<Reservation>(outcome, StatusCode::OK)
}

/// GET /v1/reservations/{id}
pub async fn get(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
) -> Result<Json<Reservation>, ApiError> {
    let id = uuid_path(&raw_id, "reservation")?;
    Ok(Json(state.ledger.get_reservation(id).await?))
}
