//! The debit: a read of what pricing needs, then one call of the `cl_debit` SQL function.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use super::plans::PlanRow;

/// What the debit needs before it can be priced: the account's plan, and an already stored
/// response when the idempotency key was used before. One round trip.
#[derive(Debug, sqlx::FromRow)]
pub struct DebitContext {
    #[sqlx(flatten)]
    pub plan: PlanRow,
    pub period_end: DateTime<Utc>,
    /// An active hold of the account is past its TTL: release it before debiting.
    pub holds_expired: bool,
    pub request_hash: Option<String>,
    pub status: Option<i16>,
    pub response: Option<Json<serde_json::Value>>,
}

pub async fn context(
    conn: &mut PgConnection,
    key_id: &str,
    idempotency_key: Option<&str>,
    now: DateTime<Utc>,
) -> Result<Option<DebitContext>, sqlx::Error> {
    sqlx::query_as(
        "SELECT p.id, p.version, p.name, p.interval, p.pools, p.operations, p.ratelimits,
                p.thresholds, p.created_at, a.period_end,
                EXISTS (SELECT 1 FROM reservations r
                         WHERE r.key_id = a.key_id AND r.status = 'active'
                           AND r.expires_at <= $3) AS holds_expired,
                i.request_hash, i.status, i.response
           FROM accounts a
           JOIN plan_heads h ON h.id = a.plan_id
           JOIN plans p ON p.id = h.id AND p.version = h.latest_version
           LEFT JOIN idempotency_keys i ON i.scope = a.key_id AND i.key = $2 AND i.status > 0
          WHERE a.key_id = $1",
    )
    .bind(key_id)
    .bind(idempotency_key)
    .bind(now)
    .fetch_optional(conn)
    .await
}

pub struct DebitCall<'a> {
    pub key_id: &'a str,
    pub pool: &'a str,
    pub cost: i64,
    pub operation: Option<&'a str>,
    pub quantity: i64,
    pub plan_id: &'a str,
    pub plan_version: i32,
    pub metadata: &'a serde_json::Value,
    pub dry_run: bool,
    pub idempotency: Option<(&'a str, &'a str)>,
    pub debit_id: Uuid,
    /// The Unkey keyId that made the debit, when it came through `/v1/verify`.
    pub source_key_id: Option<&'a str>,
    pub now: DateTime<Utc>,
}

/// Runs the debit function; its jsonb outcome is interpreted by `ledger::ops`.
pub async fn apply(
    conn: &mut PgConnection,
    call: &DebitCall<'_>,
) -> Result<serde_json::Value, sqlx::Error> {
    let (idem_key, idem_hash) = call.idempotency.unzip();
    let Json(outcome) = sqlx::query_scalar::<_, Json<serde_json::Value>>(
        "SELECT cl_debit($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(call.key_id)
    .bind(call.pool)
    .bind(call.cost)
    .bind(call.operation)
    .bind(call.quantity)
    .bind(call.plan_id)
    .bind(call.plan_version)
    .bind(Json(call.metadata))
    .bind(call.dry_run)
    .bind(idem_key)
    .bind(idem_hash)
    .bind(call.debit_id)
    .bind(call.source_key_id)
    .bind(call.now)
    .fetch_one(conn)
    .await?;
    Ok(outcome)
}
