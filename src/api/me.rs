//! The customer's own views, `/v1/me/*`, authenticated by the customer's own API key.

use axum::extract::State;
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::Json;
use chrono::{DateTime, Utc};
use serde::Deserialize;
use serde_json::json;

use super::accounts::EntriesQuery;
use super::auth::bearer;
use super::extract::AppQuery;
use super::verify::{gate, KEY_MAX};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::model::Balance;
use crate::ledger::types::check_timestamp;
use crate::ledger::usage::{Usage, UsageGroup, UsageInterval, UsageQuery};

/// The customer's own key, from `Authorization: Bearer <key>`.
pub struct CustomerKey(String);

impl axum::extract::FromRequestParts<AppState> for CustomerKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let key = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized("send your API key as 'Authorization: Bearer <key>'")
        })?;
        // A ledger token sent here by mistake is not passed on to Unkey.
        if state.tokens.role_of(key).is_some() {
            return Err(ApiError::unauthorized(
                "this is a ledger admin or service token; /v1/me/* takes a customer's own API key",
            ));
        }
        if key.len() > KEY_MAX {
            return Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "invalid_key",
                "the API key is not valid",
            )
            .with_details(json!({"unkey_code": "NOT_FOUND"})));
        }
        Ok(CustomerKey(key.to_owned()))
    }
}

async fn my_account(
    state: &AppState,
    key: &CustomerKey,
) -> Result<(crate::ledger::types::KeyId, String), ApiError> {
    let gate = gate(state)?;
    let verified = gate.identify(&key.0).await?;
    let account = gate.account_of(&state.ledger, &verified).await?;
    Ok((account, verified.key_id.to_string()))
}

/// GET /v1/me/balance
pub async fn my_balance(
    State(state): State<AppState>,
    key: CustomerKey,
) -> Result<Json<Balance>, ApiError> {
    let (account, _) = my_account(&state, &key).await?;
    Ok(Json(state.ledger.balance(&account).await?))
}

/// GET /v1/me/entries (JSON or, with `Accept: text/csv`, CSV)
pub async fn my_entries(
    State(state): State<AppState>,
    key: CustomerKey,
    headers: axum::http::HeaderMap,
    AppQuery(query): AppQuery<EntriesQuery>,
) -> Result<axum::response::Response, ApiError> {
    let (mut filter, limit) = query.filter()?;
    let (account, key_id) = my_account(&state, &key).await?;
    // A member key of a shared account sees only the entries it made.
    filter.source_key_id = (account.as_str() != key_id).then_some(key_id);
    super::accounts::answer_entries(&state, &account, filter, limit, &headers).await
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageParams {
    #[serde(default, deserialize_with = "super::strict::timestamp")]
    from: Option<DateTime<Utc>>,
    #[serde(default, deserialize_with = "super::strict::timestamp")]
    to: Option<DateTime<Utc>>,
    interval: Option<UsageInterval>,
    group_by: Option<UsageGroup>,
}

impl UsageParams {
    /// Defaults: the current period so far, by day, per operation.
    pub async fn query(
        self,
        state: &AppState,
        account: &crate::ledger::types::KeyId,
        source_key_id: Option<String>,
    ) -> Result<UsageQuery, ApiError> {
        let invalid = |f| ApiError::invalid_field("invalid_request", &f);
        let from = match self.from {
            Some(from) => check_timestamp("from", from).map_err(invalid)?,
            None => {
                state
                    .ledger
                    .get_account(account)
                    .await?
                    .current_period
                    .start
            }
        };
        let to = match self.to {
            Some(to) => check_timestamp("to", to).map_err(invalid)?,
            None => state.ledger.now() + chrono::Duration::seconds(1),
        };
        Ok(UsageQuery {
            from,
            to,
            interval: self.interval.unwrap_or(UsageInterval::Day),
            group_by: self.group_by.unwrap_or(UsageGroup::Operation),
            source_key_id,
        })
    }
}

/// GET /v1/me/usage: this key's own debits (in a shared account, only the ones it made).
pub async fn my_usage(
    State(state): State<AppState>,
    key: CustomerKey,
    AppQuery(params): AppQuery<UsageParams>,
) -> Result<Json<Usage>, ApiError> {
    let (account, key_id) = my_account(&state, &key).await?;
    let source = (account.as_str() != key_id).then_some(key_id);
    let query = params.query(&state, &account, source).await?;
    Ok(Json(state.ledger.usage(&account, &query).await?))
}
