//! `/v1/plans`

use axum::extract::State;
use axum::Json;
use serde::Deserialize;
use serde_json::json;

use super::auth::{Admin, Service};
use super::extract::{AppJson, AppPath, AppQuery};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::plan::{Plan, PlanBody};
use crate::ledger::types::PlanId;
use crate::ledger::LedgerError;

pub(crate) fn plan_id(raw: &str) -> Result<PlanId, ApiError> {
    PlanId::parse("plan_id", raw).map_err(|f| ApiError::invalid_field("invalid_request", &f))
}

/// PUT /v1/plans/{plan_id}: create, or replace with a new version.
pub async fn put(
    _: Admin,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
    body: Result<AppJson<PlanBody>, ApiError>,
) -> Result<Json<Plan>, ApiError> {
    let id = plan_id(&raw_id)?;
    let AppJson(body, _) = body.map_err(|mut e| {
        if e.code == "invalid_request" {
            e.code = "invalid_plan";
        }
        e
    })?;
    let definition = body.validate().map_err(LedgerError::InvalidPlan)?;
    let (plan, _) = state.ledger.put_plan(&id, definition).await?;
    Ok(Json(plan))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanQuery {
    version: Option<i32>,
}

/// GET /v1/plans/{plan_id}: the latest version, or `?version=`.
pub async fn get(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_id): AppPath<String>,
    AppQuery(query): AppQuery<PlanQuery>,
) -> Result<Json<Plan>, ApiError> {
    let id = plan_id(&raw_id)?;
    Ok(Json(state.ledger.get_plan(&id, query.version).await?))
}

/// GET /v1/plans: the latest version of every plan.
pub async fn list(
    _: Service,
    State(state): State<AppState>,
) -> Result<Json<serde_json::Value>, ApiError> {
    let plans = state.ledger.list_plans().await?;
    Ok(Json(json!({ "data": plans })))
}
