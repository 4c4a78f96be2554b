//! `/v1/accounts`: accounts, balances, the journal, usage and plan changes.

use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, SubsecRound, Utc};
use serde::Deserialize;
use serde_json::{json, Value};

use super::auth::{Admin, Service};
use super::export;
use super::extract::{AppJson, AppPath, AppQuery, IdempotencyKey};
use super::idempotency::{idempotency, render};
use super::plans::plan_id;
use crate::app::AppState;
use crate::db::entries::EntryFilter;
use crate::error::ApiError;
use crate::ledger::account::AccountInput;
use crate::ledger::model::{Account, Balance};
use crate::ledger::overrides::OverridesBody;
use crate::ledger::plan_change::Proration;
use crate::ledger::top_up::{self, AutoTopUp};
use crate::ledger::types::{
    check_external_id, check_timestamp, EntryKind, InvalidField, KeyId, PackId,
};

pub const PAGE_DEFAULT: i64 = 100;
pub const PAGE_MAX: i64 = 500;

pub(crate) fn key_id(raw: &str) -> Result<KeyId, ApiError> {
    KeyId::parse("key_id", raw).map_err(|f| ApiError::invalid_field("invalid_request", &f))
}

fn invalid(field: &str, reason: &str) -> ApiError {
    ApiError::invalid_field("invalid_request", &InvalidField::new(field, reason))
}

/// `metadata` must be a JSON object when given.
pub(crate) fn metadata_object(value: Option<Value>) -> Result<Option<Value>, ApiError> {
    match value {
        None | Some(Value::Null) => Ok(None),
        Some(v @ Value::Object(_)) => Ok(Some(v)),
        Some(_) => Err(invalid("metadata", "must be a JSON object")),
    }
}

/// A cursor of a list in key order: the last key of the previous page.
pub(crate) fn key_cursor(cursor: Option<&str>) -> Result<Option<KeyId>, ApiError> {
    cursor
        .map(|c| key_id(c).map_err(|_| invalid("cursor", "is not a cursor this API returned")))
        .transpose()
}

pub(crate) fn page_limit(limit: Option<i64>) -> Result<i64, ApiError> {
    match limit {
        None => Ok(PAGE_DEFAULT),
        Some(n) if (1..=PAGE_MAX).contains(&n) => Ok(n),
        Some(_) => Err(invalid("limit", "must be between 1 and 500")),
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AccountBody {
    plan: String,
    #[serde(default, deserialize_with = "super::strict::timestamp")]
    billing_anchor: Option<DateTime<Utc>>,
    /// Absent keeps the current value; `null` clears it.
    #[serde(default, deserialize_with = "crate::ledger::types::present")]
    external_id: Option<Option<String>>,
    #[serde(default)]
    metadata: Option<Value>,
    /// Absent keeps the current value (false for a new account).
    #[serde(default)]
    shared: Option<bool>,
    /// Absent keeps the current policy; `null` removes it.
    #[serde(default, deserialize_with = "crate::ledger::types::present")]
    auto_top_up: Option<Option<AutoTopUpBody>>,
    /// Absent keeps the current overrides; `null` (or `{}`) removes them; an object replaces
    /// them whole.
    #[serde(default, deserialize_with = "crate::ledger::types::present")]
    overrides: Option<Option<OverridesBody>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AutoTopUpBody {
    pack: String,
    below: i64,
    #[serde(default)]
    max_per_period: Option<i64>,
}

impl AutoTopUpBody {
    fn validate(self) -> Result<AutoTopUp, ApiError> {
        let pack = PackId::parse("auto_top_up.pack", &self.pack)
            .map_err(|f| ApiError::invalid_field("invalid_request", &f))?;
        let max_per_period = self
            .max_per_period
            .map_or(Some(1), |n| i32::try_from(n).ok())
            .filter(|n| (1..=top_up::MAX_PER_PERIOD).contains(n))
            .ok_or_else(|| {
                invalid(
                    "auto_top_up.max_per_period",
                    &format!("must be from 1 to {}", top_up::MAX_PER_PERIOD),
                )
            })?;
        Ok(AutoTopUp {
            pack,
            below: self.below,
            max_per_period,
        })
    }
}

/// PUT /v1/accounts/{key_id}: 201 when created, 200 when updated.
pub async fn put(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    AppJson(body, _): AppJson<AccountBody>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let plan = plan_id(&body.plan).map_err(|_| {
        invalid(
            "plan",
            "must be a plan id: letters, digits, '_', '-', '.' and ':'",
        )
    })?;
    if let Some(Some(external_id)) = &body.external_id {
        check_external_id(external_id)
            .map_err(|f| ApiError::invalid_field("invalid_request", &f))?;
    }
    let input = AccountInput {
        plan,
        // PostgreSQL keeps microseconds; so does the ledger, so a repeated PUT matches.
        billing_anchor: body
            .billing_anchor
            .map(|a| check_timestamp("billing_anchor", a.trunc_subsecs(6)))
            .transpose()
            .map_err(|f| ApiError::invalid_field("invalid_request", &f))?,
        external_id: body.external_id,
        metadata: metadata_object(body.metadata)?,
        shared: body.shared,
        auto_top_up: body
            .auto_top_up
            .map(|policy| policy.map(AutoTopUpBody::validate).transpose())
            .transpose()?,
        overrides: body
            .overrides
            .map(|o| o.map(OverridesBody::validate).transpose())
            .transpose()
            .map_err(|f| ApiError::invalid_field("invalid_request", &f))?,
    };
    let (account, created) = state.ledger.put_account(&key, input).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(account)).into_response())
}

/// GET /v1/accounts/{key_id}: the account with its balance.
pub async fn get(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
) -> Result<Json<Account>, ApiError> {
    let key = key_id(&raw_key)?;
    Ok(Json(state.ledger.account_with_forecast(&key).await?))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    external_id: Option<String>,
    limit: Option<i64>,
    cursor: Option<String>,
}

/// GET /v1/accounts?external_id=…: accounts in key order, with their balances.
pub async fn list(
    _: Service,
    State(state): State<AppState>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    if let Some(external_id) = &query.external_id {
        check_external_id(external_id)
            .map_err(|f| ApiError::invalid_field("invalid_request", &f))?;
    }
    let after = key_cursor(query.cursor.as_deref())?;
    let limit = page_limit(query.limit)?;
    let (data, next_cursor) = state
        .ledger
        .list_accounts(
            query.external_id.as_deref(),
            after.as_ref().map(KeyId::as_str),
            limit,
        )
        .await?;
    Ok(Json(json!({"data": data, "next_cursor": next_cursor})))
}

/// GET /v1/accounts/{key_id}/balance
pub async fn balance(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
) -> Result<Json<Balance>, ApiError> {
    let key = key_id(&raw_key)?;
    Ok(Json(state.ledger.balance(&key).await?))
}

/// A time filter's bounds, `from` (inclusive) and `to` (exclusive), each optional.
pub(crate) type TimeRange = (Option<DateTime<Utc>>, Option<DateTime<Utc>>);

/// A `from`..`to` filter: each within the years the ledger takes, `to` later than `from`.
pub(crate) fn time_range(
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
) -> Result<TimeRange, ApiError> {
    let field = |f| ApiError::invalid_field("invalid_request", &f);
    let from = from
        .map(|t| check_timestamp("from", t))
        .transpose()
        .map_err(field)?;
    let to = to
        .map(|t| check_timestamp("to", t))
        .transpose()
        .map_err(field)?;
    if let (Some(from), Some(to)) = (from, to) {
        if from >= to {
            return Err(invalid("to", "must be later than from"));
        }
    }
    Ok((from, to))
}

/// The journal's query: `limit`, `cursor`, and the filters `kind` (comma-separated), `from`, `to`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EntriesQuery {
    limit: Option<i64>,
    cursor: Option<String>,
    kind: Option<String>,
    from: Option<DateTime<Utc>>,
    to: Option<DateTime<Utc>>,
}

impl EntriesQuery {
    /// The filter and the page size.
    pub(crate) fn filter(self) -> Result<(EntryFilter, i64), ApiError> {
        let limit = page_limit(self.limit)?;
        let before = self
            .cursor
            .as_deref()
            .map(|c| {
                c.parse::<i64>()
                    .ok()
                    .filter(|n| *n > 0)
                    .ok_or_else(|| invalid("cursor", "is not a cursor this API returned"))
            })
            .transpose()?;
        let mut kinds = Vec::new();
        for name in self.kind.iter().flat_map(|k| k.split(',')) {
            let kind = EntryKind::parse(name.trim()).ok_or_else(|| {
                let known: Vec<&str> = EntryKind::ALL.iter().map(|k| k.as_str()).collect();
                invalid(
                    "kind",
                    &format!(
                        "'{name}' is not an entry kind; use one or more of {}, separated by commas",
                        known.join(", ")
                    ),
                )
            })?;
            if !kinds.contains(&kind) {
                kinds.push(kind);
            }
        }
        let (from, to) = time_range(self.from, self.to)?;
        let filter = EntryFilter {
            before,
            kinds,
            from,
            to,
            source_key_id: None,
        };
        Ok((filter, limit))
    }
}

/// GET /v1/accounts/{key_id}/entries: newest first, `next_cursor` to page on; with
/// `Accept: text/csv`, everything that matches as a streamed CSV.
pub async fn entries(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    headers: HeaderMap,
    AppQuery(query): AppQuery<EntriesQuery>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let (filter, limit) = query.filter()?;
    answer_entries(&state, &key, filter, limit, &headers).await
}

/// A page of the journal as JSON, or all of it that matches as CSV.
pub(crate) async fn answer_entries(
    state: &AppState,
    key: &KeyId,
    filter: EntryFilter,
    limit: i64,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    if !export::wants_csv(headers) {
        return Ok(Json(state.ledger.entries(key, &filter, limit).await?).into_response());
    }
    state.ledger.require_account(key).await?;
    let ledger = state.ledger.clone();
    let account = key.clone();
    Ok(export::csv_response(
        &format!("entries-{key}.csv"),
        move |cursor: Option<String>| {
            let ledger = ledger.clone();
            let account = account.clone();
            let mut filter = filter.clone();
            async move {
                if let Some(cursor) = cursor {
                    filter.before = cursor.parse().ok();
                }
                let page = ledger
                    .entries(&account, &filter, export::EXPORT_PAGE)
                    .await?;
                Ok((page.data, page.next_cursor))
            }
        },
    ))
}

/// GET /v1/accounts/{key_id}/usage
pub async fn usage(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    AppQuery(params): AppQuery<super::me::UsageParams>,
) -> Result<Json<crate::ledger::usage::Usage>, ApiError> {
    let key = key_id(&raw_key)?;
    let query = params.query(&state, &key, None).await?;
    Ok(Json(state.ledger.usage(&key, &query).await?))
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
        ApiError::invalid_field(
            "invalid_request",
            &InvalidField::new(
                "plan",
                "must be a plan id: letters, digits, '_', '-', '.' and ':'",
            ),
        )
    })?;
    let normalized = json!({"plan": plan, "proration": body.proration});
    let idem = idempotency(key, "POST /v1/accounts/{key_id}/plan", &normalized);
    let outcome = state
        .ledger
        .change_plan(&account, &plan, body.proration, idem.as_ref())
        .await?;
    render::<Account>(outcome, StatusCode::OK)
}
