//! `POST /v1/accounts/{key_id}/debits`

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::accounts::{key_id, metadata_object};
use super::auth::Service;
use super::extract::{request_hash, AppJson, AppPath, IdempotencyKey};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::ops::{DebitOutcome, DebitRequest, Idempotency};
use crate::ledger::rules::DebitSpec;
use crate::ledger::types::{check_positive, InvalidField, OperationName, PoolName};

pub const CREDITS_REMAINING: &str = "x-credits-remaining";
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebitBody {
    operation: Option<String>,
    quantity: Option<i64>,
    cost: Option<i64>,
    pool: Option<String>,
    metadata: Option<Value>,
    #[serde(default)]
    dry_run: bool,
}

fn field(f: InvalidField) -> ApiError {
    ApiError::invalid_field("invalid_request", &f)
}

impl DebitBody {
    pub fn validate(self) -> Result<DebitRequest, ApiError> {
        let operation = self
            .operation
            .as_deref()
            .map(|o| OperationName::parse("operation", o))
            .transpose()
            .map_err(field)?;
        let quantity = check_positive("quantity", self.quantity.unwrap_or(1)).map_err(field)?;
        let cost = self
            .cost
            .map(|c| check_positive("cost", c))
            .transpose()
            .map_err(field)?;
        let pool = self
            .pool
            .as_deref()
            .map(|p| PoolName::parse("pool", p))
            .transpose()
            .map_err(field)?;
        if operation.is_none() && cost.is_none() {
            return Err(field(InvalidField::new(
                "operation",
                "is required unless an explicit cost is given",
            )));
        }
        Ok(DebitRequest {
            spec: DebitSpec {
                operation,
                quantity,
                cost,
                pool,
            },
            metadata: metadata_object(self.metadata)?.unwrap_or_else(|| Value::Object(Default::default())),
            dry_run: self.dry_run,
        })
    }
}

/// Renders a successful debit (or its replay) with `X-Credits-Remaining`.
pub fn debit_response(status: StatusCode, body: Value, replayed: bool) -> Response {
    let remaining = body.get("remaining").and_then(Value::as_i64);
    let mut response = (status, Json(body)).into_response();
    if let Some(remaining) = remaining {
        response
            .headers_mut()
            .insert(CREDITS_REMAINING, HeaderValue::from(remaining));
    }
    if replayed {
        response
            .headers_mut()
            .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
    }
    response
}

/// POST /v1/accounts/{key_id}/debits: 201 with the debit, 200 for a dry run, 402 when the pool
/// cannot cover the cost.
pub async fn create(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    IdempotencyKey(idempotency_key): IdempotencyKey,
    AppJson(body, raw): AppJson<DebitBody>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let request = body.validate()?;
    let idempotency = idempotency_key.map(|key| Idempotency {
        key,
        request_hash: request_hash("POST /v1/accounts/{key_id}/debits", &raw),
    });
    match state
        .ledger
        .debit(&key, &request, idempotency.as_ref())
        .await?
    {
        DebitOutcome::Accepted(debit) => {
            let status = if debit.dry_run {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            let body = serde_json::to_value(&debit).map_err(|_| ApiError::internal())?;
            Ok(debit_response(status, body, false))
        }
        DebitOutcome::Replayed { status, body } => Ok(debit_response(
            StatusCode::from_u16(status).unwrap_or(StatusCode::CREATED),
            body,
            true,
        )),
    }
}
