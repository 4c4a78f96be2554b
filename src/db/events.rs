//! The outbox: events written in the transaction of the change they report.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

/// Writes an event and queues its deliveries (SQL function `cl_emit`, which the debit function
/// uses too).
pub async fn emit(
    conn: &mut PgConnection,
    key_id: &str,
    event_type: &str,
    payload: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<Uuid, sqlx::Error> {
    sqlx::query_scalar("SELECT cl_emit($1, $2, $3, $4)")
        .bind(key_id)
        .bind(event_type)
        .bind(Json(payload))
        .bind(now)
        .fetch_one(conn)
        .await
}

/// Thresholds of the period reached and not yet resolved, for a pool.
pub async fn open_thresholds(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    period_start: DateTime<Utc>,
) -> Result<Vec<i32>, sqlx::Error> {
    let open: Option<Vec<i32>> = sqlx::query_scalar(
        "SELECT ARRAY(SELECT t FROM unnest(thresholds_reached) t
                       WHERE NOT (t = ANY (thresholds_resolved)) ORDER BY t)
           FROM pool_alerts WHERE key_id = $1 AND pool = $2 AND period_start = $3",
    )
    .bind(key_id)
    .bind(pool)
    .bind(period_start)
    .fetch_optional(conn)
    .await?;
    Ok(open.unwrap_or_default())
}

pub async fn mark_resolved(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    period_start: DateTime<Utc>,
    threshold: i32,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE pool_alerts SET thresholds_resolved = array_append(thresholds_resolved, $4)
          WHERE key_id = $1 AND pool = $2 AND period_start = $3",
    )
    .bind(key_id)
    .bind(pool)
    .bind(period_start)
    .bind(threshold)
    .execute(conn)
    .await?;
    Ok(())
}

/// Announces the thresholds `used` crossed going from `old_used` to `new_used` (SQL function
/// `cl_announce_thresholds`, which the debit function uses too).
#[allow(clippy::too_many_arguments)]
pub async fn announce_thresholds(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    plan_id: &str,
    plan_version: i32,
    period: (DateTime<Utc>, DateTime<Utc>),
    allowance: Option<i64>,
    used: (i64, i64),
    available: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT cl_announce_thresholds($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)")
        .bind(key_id)
        .bind(pool)
        .bind(plan_id)
        .bind(plan_version)
        .bind(period.0)
        .bind(period.1)
        .bind(allowance)
        .bind(used.0)
        .bind(used.1)
        .bind(available)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}

/// Announces the first refusal of the period in a pool (SQL function `cl_announce_exhausted`).
pub async fn announce_exhausted(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    period_start: DateTime<Utc>,
    details: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT cl_announce_exhausted($1, $2, $3, $4, $5)")
        .bind(key_id)
        .bind(pool)
        .bind(period_start)
        .bind(Json(details))
        .bind(now)
        .execute(conn)
        .await?;
    Ok(())
}
