//! `/v1/accounts/{key_id}/grants` and `/v1/grants/{id}/void`: packs, promotions, adjustments.

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::Response;
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use uuid::Uuid;

use super::accounts::{key_id, metadata_object, page_limit};
use super::auth::{Admin, Service};
use super::extract::{AppJson, AppPath, AppQuery, IdempotencyKey};
use super::idempotency::{idempotency, render};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::grant::{GrantRequest, GrantSource};
use crate::ledger::model::{Grant, GrantPage};
use crate::ledger::types::{
    check_positive, check_timestamp, GrantKind, InvalidField, PackId, PoolName,
};

fn field(f: InvalidField) -> ApiError {
    ApiError::invalid_field("invalid_request", &f)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct GrantBody {
    pack: Option<String>,
    pool: Option<String>,
    /// Absent differs from null (refused, as the schema says), hence the double options.
    #[serde(default, deserialize_with = "crate::ledger::types::present")]
    kind: Option<Option<String>>,
    #[serde(default, deserialize_with = "crate::ledger::types::present")]
    amount: Option<Option<i64>>,
    #[serde(default, deserialize_with = "super::strict::timestamp")]
    expires_at: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "super::strict::timestamp")]
    effective_at: Option<DateTime<Utc>>,
    priority: Option<i32>,
    metadata: Option<Value>,
}

impl GrantBody {
    fn validate(self) -> Result<GrantRequest, ApiError> {
        if let Some(None) = self.kind {
            return Err(field(InvalidField::new(
                "kind",
                "must be pack, promotional or adjustment, not null",
            )));
        }
        if let Some(None) = self.amount {
            return Err(field(InvalidField::new(
                "amount",
                "must be a number of credits, not null",
            )));
        }
        let kind = self.kind.flatten();
        let amount = self.amount.flatten();
        let source = match self.pack {
            Some(pack) => {
                // The catalogue decides these; a body that also sets them is a mistake.
                let conflicting = [
                    ("amount", amount.is_some()),
                    ("pool", self.pool.is_some()),
                    ("expires_at", self.expires_at.is_some()),
                    ("kind", kind.as_deref().is_some_and(|k| k != "pack")),
                ];
                if let Some((name, _)) = conflicting.iter().find(|(_, set)| *set) {
                    return Err(field(InvalidField::new(
                        *name,
                        "comes from the pack's catalogue entry: leave it out when pack is given",
                    )));
                }
                GrantSource::Pack(PackId::parse("pack", &pack).map_err(field)?)
            }
            None => {
                let pool = PoolName::parse("pool", self.pool.as_deref().unwrap_or("credits"))
                    .map_err(field)?;
                let kind = kind.as_deref().ok_or_else(|| {
                    field(InvalidField::new(
                        "kind",
                        "is required with amount (pack, promotional or adjustment); or give pack instead",
                    ))
                })?;
                let kind = GrantKind::ADMIN
                    .into_iter()
                    .find(|k| k.as_str() == kind)
                    .ok_or_else(|| {
                        field(InvalidField::new(
                            "kind",
                            "must be pack, promotional or adjustment (allowance and rollover come from periods)",
                        ))
                    })?;
                let amount = amount.ok_or_else(|| {
                    field(InvalidField::new(
                        "amount",
                        "is required: the credits to grant (or give pack instead)",
                    ))
                })?;
                GrantSource::Amount {
                    pool,
                    kind,
                    amount: check_positive("amount", amount).map_err(field)?,
                    expires_at: self
                        .expires_at
                        .map(|t| check_timestamp("expires_at", t.trunc_subsecs(6)))
                        .transpose()
                        .map_err(field)?,
                }
            }
        };
        let priority = self.priority.unwrap_or(0);
        if !(-1000..=1000).contains(&priority) {
            return Err(field(InvalidField::new(
                "priority",
                "must be between -1000 and 1000",
            )));
        }
        Ok(GrantRequest {
            source,
            effective_at: self
                .effective_at
                .map(|t| check_timestamp("effective_at", t.trunc_subsecs(6)))
                .transpose()
                .map_err(field)?,
            priority,
            metadata: metadata_object(self.metadata)?.unwrap_or_else(|| json!({})),
        })
    }
}

/// The parameters an `Idempotency-Key` is bound to. Amount grants keep the shape they had before
/// packs existed, so that a retry across an upgrade still replays.
fn normalized(request: &GrantRequest) -> Value {
    match &request.source {
        GrantSource::Amount {
            pool,
            kind,
            amount,
            expires_at,
        } => json!({
            "pool": pool, "kind": kind, "amount": amount,
            "effective_at": request.effective_at, "expires_at": expires_at,
            "priority": request.priority, "metadata": request.metadata,
        }),
        GrantSource::Pack(pack) | GrantSource::Sold { pack, .. } => json!({
            "pack": pack, "effective_at": request.effective_at,
            "priority": request.priority, "metadata": request.metadata,
        }),
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
    let idem = idempotency(
        key,
        "POST /v1/accounts/{key_id}/grants",
        &normalized(&request),
    );
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
