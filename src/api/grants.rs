//! Grants, voids, adjustments and plan changes: the admin's tools on an account's credits.

use axum::extract::State;
use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use uuid::Uuid;

use super::accounts::{key_id, metadata_object, page_limit};
use super::auth::{Admin, Service};
use super::debits::IDEMPOTENT_REPLAYED;
use super::extract::{request_hash, AppJson, AppPath, AppQuery, IdempotencyKey};
use super::plans::plan_id;
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::adjust::AdjustmentRequest;
use crate::ledger::command::Idempotency;
use crate::ledger::grant::GrantRequest;
use crate::ledger::model::{Account, Adjustment, AdjustmentOp, Grant, GrantPage};
use crate::ledger::plan_change::Proration;
use crate::ledger::types::{
    check_positive, check_timestamp, GrantKind, InvalidField, PoolName, MAX_CREDITS,
};
use crate::service::Outcome;

fn field(f: InvalidField) -> ApiError {
    ApiError::invalid_field("invalid_request", &f)
}

/// Renders an idempotent outcome: the new value, or the stored answer replayed through the same
/// type so that it is the same body.
pub fn render<T: Serialize + DeserializeOwned>(
    outcome: Outcome<T>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Done(value) => Ok((status, Json(value)).into_response()),
        Outcome::Replayed(body) => {
            let value: T = serde_json::from_value(body).map_err(|e| {
                tracing::error!(error = %e, "stored response does not decode");
                ApiError::internal()
            })?;
            let mut response = (status, Json(value)).into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

pub(crate) fn idempotency(
    key: Option<String>,
    route: &str,
    request: &Value,
) -> Option<Idempotency> {
    key.map(|key| Idempotency {
        key,
        request_hash: request_hash(route, request),
    })
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pool: Option<String>,
    kind: String,
    amount: i64,
    expires_at: Option<DateTime<Utc>>,
    effective_at: Option<DateTime<Utc>>,
    priority: Option<i32>,
    metadata: Option<Value>,
}

impl GrantBody {
    fn validate(self) -> Result<GrantRequest, ApiError> {
        let pool =
            PoolName::parse("pool", self.pool.as_deref().unwrap_or("credits")).map_err(field)?;
        let kind = GrantKind::ADMIN
            .into_iter()
            .find(|k| k.as_str() == self.kind)
            .ok_or_else(|| {
                field(InvalidField::new(
                    "kind",
                    "must be pack, promotional or adjustment (allowance and rollover come from periods)",
                ))
            })?;
        let priority = self.priority.unwrap_or(0);
        if !(-1000..=1000).contains(&priority) {
            return Err(field(InvalidField::new(
                "priority",
                "must be between -1000 and 1000",
            )));
        }
        Ok(GrantRequest {
            pool,
            kind,
            amount: check_positive("amount", self.amount).map_err(field)?,
            effective_at: self
                .effective_at
                .map(|t| check_timestamp("effective_at", t.trunc_subsecs(6)))
                .transpose()
                .map_err(field)?,
            expires_at: self
                .expires_at
                .map(|t| check_timestamp("expires_at", t.trunc_subsecs(6)))
                .transpose()
                .map_err(field)?,
            priority,
            metadata: metadata_object(self.metadata)?.unwrap_or_else(|| json!({})),
        })
    }
}

/// POST /v1/accounts/{key_id}/grants: 201 with the grant.
pub async fn create(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body, _): AppJson<GrantBody>,
) -> Result<Response, ApiError> {
    let account = key_id(&raw_key)?;
    let request = body.validate()?;
    let normalized = json!({
        "pool": request.pool, "kind": request.kind, "amount": request.amount,
        "effective_at": request.effective_at, "expires_at": request.expires_at,
        "priority": request.priority, "metadata": request.metadata,
    });
    let idem = idempotency(key, "POST /v1/accounts/{key_id}/grants", &normalized);
    let outcome = state
        .ledger
        .create_grant(&account, &request, idem.as_ref())
        .await?;
    render::<Grant>(outcome, StatusCode::CREATED)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantsQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// GET /v1/accounts/{key_id}/grants: every grant, newest first.
pub async fn list(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    AppQuery(query): AppQuery<GrantsQuery>,
) -> Result<Json<GrantPage>, ApiError> {
    let account = key_id(&raw_key)?;
    let limit = page_limit(query.limit)?;
    let before = query
        .cursor
        .as_deref()
        .map(|c| {
            c.parse::<Uuid>().map_err(|_| {
                field(InvalidField::new(
                    "cursor",
                    "is not a cursor this API returned",
                ))
            })
        })
        .transpose()?;
    Ok(Json(
        state.ledger.list_grants(&account, before, limit).await?,
    ))
}

/// POST /v1/grants/{id}/void: 200 with the voided grant.
pub async fn void(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
) -> Result<Json<Grant>, ApiError> {
    let id = raw_id
        .parse::<Uuid>()
        .map_err(|_| field(InvalidField::new("id", "must be a grant id (a UUID)")))?;
    Ok(Json(state.ledger.void_grant(id).await?))
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

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanChangeBody {
    plan: String,
    #[serde(default = "default_proration")]
    proration: Proration,
}

fn default_proration() -> Proration {
    Proration::None
}

/// POST /v1/accounts/{key_id}/plan: 200 with the account on its new plan.
pub async fn change_plan(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body, _): AppJson<PlanChangeBody>,
) -> Result<Response, ApiError> {
    let account = key_id(&raw_key)?;
    let plan = plan_id(&body.plan).map_err(|_| {
        field(InvalidField::new(
            "plan",
            "must be a plan id: letters, digits, '_', '-', '.' and ':'",
        ))
    })?;
    let normalized = json!({"plan": plan, "proration": body.proration});
    let idem = idempotency(key, "POST /v1/accounts/{key_id}/plan", &normalized);
    let outcome = state
        .ledger
        .change_plan(&account, &plan, body.proration, idem.as_ref())
        .await?;
    render::<Account>(outcome, StatusCode::OK)
}
