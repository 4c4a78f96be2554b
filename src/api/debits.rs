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
use crate::ledger::command::Idempotency;
use crate::ledger::debit::DebitRequest;
use crate::ledger::model::Debit;
use crate::ledger::pricing::DebitSpec;
use crate::ledger::types::{check_positive, InvalidField, OperationName, PoolName};
use crate::service::Outcome;

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
    /// The debit fields of another body (a reservation's), to validate them the same way.
    pub fn new(
        operation: Option<String>,
        quantity: Option<i64>,
        cost: Option<i64>,
        pool: Option<String>,
        metadata: Option<Value>,
    ) -> Self {
        DebitBody {
            operation,
            quantity,
            cost,
            pool,
            metadata,
            dry_run: false,
        }
    }

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
            metadata: metadata_object(self.metadata)?
                .unwrap_or_else(|| Value::Object(Default::default())),
            dry_run: self.dry_run,
            source_key_id: None,
        })
    }
}

/// The request as the ledger understood it, defaults filled in: what an idempotency key is tied
/// to, so that `{"operation": "search"}` and `{"operation": "search", "quantity": 1}` are one
/// request.
fn normalized(request: &DebitRequest) -> Value {
    serde_json::json!({
        "operation": request.spec.operation,
        "quantity": request.spec.quantity,
        "cost": request.spec.cost,
        "pool": request.spec.pool,
        "metadata": request.metadata,
    })
}

/// Renders a successful debit (or its replay) with `X-Credits-Remaining`.
pub fn debit_response(status: StatusCode, debit: &Debit, replayed: bool) -> Response {
    let remaining = debit.remaining;
    let mut response = (status, Json(debit)).into_response();
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
    AppJson(body, _): AppJson<DebitBody>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let request = body.validate()?;
    let idempotency = idempotency_key.map(|key| Idempotency {
        key,
        request_hash: request_hash("POST /v1/accounts/{key_id}/debits", &normalized(&request)),
    });
    match state
        .ledger
        .debit(&key, &request, idempotency.as_ref())
        .await?
    {
        Outcome::Done(debit) => {
            let status = if debit.dry_run {
                StatusCode::OK
            } else {
                StatusCode::CREATED
            };
            Ok(debit_response(status, &debit, false))
        }
        Outcome::Replayed(body) => {
            // The stored JSON comes from PostgreSQL; render it through the same type as the
            // original answer so the replay is byte for byte the same.
            let debit: Debit = serde_json::from_value(body).map_err(|e| {
                tracing::error!(error = %e, "stored debit response does not decode");
                ApiError::internal()
            })?;
            Ok(debit_response(StatusCode::CREATED, &debit, true))
        }
    }
}
