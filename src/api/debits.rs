//! `POST /v1/accounts/{key_id}/debits`

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::Value;

use super::accounts::{key_id, metadata_object, page_limit, time_range};
use super::auth::Service;
use super::export;
use super::extract::{request_hash, AppJson, AppPath, AppQuery, IdempotencyKey};
use crate::app::AppState;
use crate::db::debits::DebitFilter;
use crate::error::ApiError;
use crate::ledger::command::Idempotency;
use crate::ledger::debit::DebitRequest;
use crate::ledger::model::{Debit, DebitRecord};
use crate::ledger::pricing::DebitSpec;
use crate::ledger::types::{check_positive, InvalidField, OperationName, PoolName};
use crate::service::Outcome;
use uuid::Uuid;

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

/// The debit list's query: `from`, `to`, `operation`, `limit`, `cursor`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DebitsQuery {
    from: Option<chrono::DateTime<chrono::Utc>>,
    to: Option<chrono::DateTime<chrono::Utc>>,
    operation: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// A debit list cursor: `<created_at in microseconds>.<debit id>`.
fn parse_cursor(raw: &str) -> Option<(chrono::DateTime<chrono::Utc>, Uuid)> {
    let (micros, id) = raw.split_once('.')?;
    let at = chrono::DateTime::from_timestamp_micros(micros.parse().ok()?)?;
    Some((at, id.parse().ok()?))
}

impl DebitsQuery {
    fn filter(self) -> Result<(DebitFilter, i64), ApiError> {
        let limit = page_limit(self.limit)?;
        let before = self
            .cursor
            .as_deref()
            .map(|c| {
                parse_cursor(c).ok_or_else(|| {
                    field(InvalidField::new(
                        "cursor",
                        "is not a cursor this API returned",
                    ))
                })
            })
            .transpose()?;
        let (from, to) = time_range(self.from, self.to)?;
        let operation = self
            .operation
            .map(|o| OperationName::parse("operation", &o).map(|o| o.to_string()))
            .transpose()
            .map_err(field)?;
        let filter = DebitFilter {
            before,
            from,
            to,
            operation,
        };
        Ok((filter, limit))
    }
}

/// GET /v1/accounts/{key_id}/debits: newest first, with their refunds; with
/// `Accept: text/csv`, everything that matches as a streamed CSV.
pub async fn list(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    headers: axum::http::HeaderMap,
    AppQuery(query): AppQuery<DebitsQuery>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let (filter, limit) = query.filter()?;
    if !export::wants_csv(&headers) {
        return Ok(Json(state.ledger.debit_records(&key, &filter, limit).await?).into_response());
    }
    state.ledger.require_account(&key).await?;
    let ledger = state.ledger.clone();
    let account = key.clone();
    Ok(export::csv_response(
        &format!("debits-{key}.csv"),
        move |cursor: Option<String>| {
            let ledger = ledger.clone();
            let account = account.clone();
            let mut filter = filter.clone();
            async move {
                if let Some(cursor) = cursor {
                    filter.before = parse_cursor(&cursor);
                }
                let page = ledger
                    .debit_records(&account, &filter, export::EXPORT_PAGE)
                    .await?;
                Ok((page.data, page.next_cursor))
            }
        },
    ))
}

/// GET /v1/debits/{id}: the debit with its refunds.
pub async fn get(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
) -> Result<Json<DebitRecord>, ApiError> {
    let id = raw_id
        .parse::<Uuid>()
        .map_err(|_| field(InvalidField::new("id", "must be a debit id (a UUID)")))?;
    Ok(Json(state.ledger.debit_record(id).await?))
}
