//! `/v1/accounts/{key_id}/members`: the member keys of a shared account and their per-period
//! caps (DESIGN.md section 5, "Shared accounts, per-key caps").

use std::collections::BTreeMap;

use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::{key_cursor, key_id, page_limit};
use super::auth::{Admin, Service};
use super::extract::{AppJson, AppPath, AppQuery};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::types::{check_non_negative, KeyId, PoolName};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemberBody {
    /// Pool → the most credits the key may use of it per period. Absent or `{}`: no caps.
    #[serde(default)]
    caps: Option<BTreeMap<String, i64>>,
}

const MAX_CAPS: usize = 32;

fn member_key(raw: &str) -> Result<KeyId, ApiError> {
    KeyId::parse("member_key_id", raw).map_err(|f| ApiError::invalid_field("invalid_request", &f))
}

fn caps(body: MemberBody) -> Result<BTreeMap<PoolName, i64>, ApiError> {
    let field = |f| ApiError::invalid_field("invalid_request", &f);
    let raw = body.caps.unwrap_or_default();
    if raw.len() > MAX_CAPS {
        return Err(field(crate::ledger::types::InvalidField::new(
            "caps",
            format!("may name at most {MAX_CAPS} pools"),
        )));
    }
    let mut caps = BTreeMap::new();
    for (pool, cap) in raw {
        let name = format!("caps.{pool}");
        let pool = PoolName::parse(&name, &pool).map_err(field)?;
        caps.insert(pool, check_non_negative(&name, cap).map_err(field)?);
    }
    Ok(caps)
}

/// PUT /v1/accounts/{key_id}/members/{member_key_id}: 201 when the key became a member, 200 when
/// its caps were replaced.
pub async fn put(
    _: Admin,
    State(state): State<AppState>,
    AppPath((raw_key, raw_member)): AppPath<(String, String)>,
    AppJson(body, _): AppJson<MemberBody>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let member = member_key(&raw_member)?;
    let caps = caps(body)?;
    let (row, created) = state.ledger.put_member(&key, &member, caps).await?;
    let status = if created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok((status, Json(row)).into_response())
}

/// GET /v1/accounts/{key_id}/members/{member_key_id}
pub async fn get(
    _: Service,
    State(state): State<AppState>,
    AppPath((raw_key, raw_member)): AppPath<(String, String)>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let member = member_key(&raw_member)?;
    Ok(Json(state.ledger.get_member(&key, &member).await?).into_response())
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ListQuery {
    limit: Option<i64>,
    cursor: Option<String>,
}

/// GET /v1/accounts/{key_id}/members: in key order, `next_cursor` to page on.
pub async fn list(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    AppQuery(query): AppQuery<ListQuery>,
) -> Result<Json<Value>, ApiError> {
    let key = key_id(&raw_key)?;
    let limit = page_limit(query.limit)?;
    let after = key_cursor(query.cursor.as_deref())?;
    let data = state
        .ledger
        .list_members(&key, after.as_ref().map(KeyId::as_str), limit)
        .await?;
    let next_cursor = (data.len() as i64 == limit)
        .then(|| data.last().map(|m| m.member_key_id.clone()))
        .flatten();
    Ok(Json(json!({"data": data, "next_cursor": next_cursor})))
}

/// DELETE /v1/accounts/{key_id}/members/{member_key_id}: 204. The key's past debits stay on the
/// account; its next ones are its own again.
pub async fn delete(
    _: Admin,
    State(state): State<AppState>,
    AppPath((raw_key, raw_member)): AppPath<(String, String)>,
) -> Result<Response, ApiError> {
    let key = key_id(&raw_key)?;
    let member = member_key(&raw_member)?;
    state.ledger.remove_member(&key, &member).await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}
