//! `/healthz` (the process answers) and `/readyz` (the database answers and is migrated).

use axum::extract::State;
use axum::http::StatusCode;
use axum::Json;
use serde_json::{json, Value};

use crate::app::{AppState, READINESS_TIMEOUT};
use crate::db;

pub async fn healthz() -> Json<Value> {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> (StatusCode, Json<Value>) {
    // Its own connection and its own deadline: a pool busy with traffic is not a database
    // that cannot be reached.
    let check = async {
        let mut conn = state.readiness.acquire().await?;
        db::migrations_applied(&mut conn).await
    };
    let outcome = tokio::time::timeout(READINESS_TIMEOUT, check)
        .await
        .unwrap_or(Err(sqlx::Error::PoolTimedOut));
    match outcome {
        Ok(true) => (
            StatusCode::OK,
            Json(json!({"status": "ready", "database": "ok", "migrations": "applied"})),
        ),
        Ok(false) => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"status": "not_ready", "database": "ok", "migrations": "pending"})),
        ),
        Err(err) => {
            tracing::warn!(error = %err, "readiness check failed");
            (
                StatusCode::SERVICE_UNAVAILABLE,
                Json(json!({"status": "not_ready", "database": "unreachable"})),
            )
        }
    }
}
