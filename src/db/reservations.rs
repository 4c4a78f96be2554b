//! Reservations (holds) and refunds.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ledger::model::Drawn;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ReservationRow {
    pub key_id: String,
    pub id: Uuid,
    pub pool: String,
    pub operation: Option<String>,
    pub quantity: i64,
    pub amount: i64,
    pub status: String,
    pub expires_at: DateTime<Utc>,
    pub plan_id: String,
    pub plan_version: i32,
    pub drawn: Json<Vec<Drawn>>,
    pub metadata: Json<serde_json::Value>,
    pub debit_id: Option<Uuid>,
    pub committed_amount: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const COLUMNS: &str =
    "key_id, id, pool, operation, quantity, amount, status, expires_at, plan_id, \
                       plan_version, drawn, metadata, debit_id, committed_amount, created_at, \
                       updated_at";

pub struct NewReservation<'a> {
    pub key_id: &'a str,
    pub id: Uuid,
    pub pool: &'a str,
    pub operation: Option<&'a str>,
    pub quantity: i64,
    pub amount: i64,
    pub expires_at: DateTime<Utc>,
    pub plan_id: &'a str,
    pub plan_version: i32,
    pub drawn: &'a [Drawn],
    pub metadata: &'a serde_json::Value,
    pub now: DateTime<Utc>,
}

pub async fn insert(conn: &mut PgConnection, r: &NewReservation<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO reservations (key_id, id, pool, operation, quantity, amount, status, expires_at,
                                   plan_id, plan_version, drawn, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, 'active', $7, $8, $9, $10, $11, $12, $12)",
    )
    .bind(r.key_id)
    .bind(r.id)
    .bind(r.pool)
    .bind(r.operation)
    .bind(r.quantity)
    .bind(r.amount)
    .bind(r.expires_at)
    .bind(r.plan_id)
    .bind(r.plan_version)
    .bind(Json(r.drawn))
    .bind(Json(r.metadata))
    .bind(r.now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn get(
    conn: &mut PgConnection,
    key_id: &str,
    id: Uuid,
) -> Result<Option<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM reservations WHERE key_id = $1 AND id = $2"
    ))
    .bind(key_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The account a reservation belongs to, for routes that name it by id alone.
pub async fn owner(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT key_id FROM reservations WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Active holds of the account whose TTL ended at or before `upto`, oldest expiry first.
pub async fn expired_active(
    conn: &mut PgConnection,
    key_id: &str,
    upto: DateTime<Utc>,
) -> Result<Vec<ReservationRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM reservations
          WHERE key_id = $1 AND status = 'active' AND expires_at <= $2
          ORDER BY expires_at, id"
    ))
    .bind(key_id)
    .bind(upto)
    .fetch_all(conn)
    .await
}

pub async fn finish(
    conn: &mut PgConnection,
    key_id: &str,
    id: Uuid,
    status: &str,
    debit_id: Option<Uuid>,
    committed_amount: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE reservations SET status = $3, debit_id = $4, committed_amount = $5, updated_at = $6
          WHERE key_id = $1 AND id = $2 AND status = 'active'",
    )
    .bind(key_id)
    .bind(id)
    .bind(status)
    .bind(debit_id)
    .bind(committed_amount)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Credits held by active reservations, per account and pool.
pub async fn reserved_of(
    conn: &mut PgConnection,
    key_ids: &[String],
) -> Result<Vec<(String, String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, pool, sum(amount)::bigint FROM reservations
          WHERE key_id = ANY($1) AND status = 'active' GROUP BY key_id, pool",
    )
    .bind(key_ids)
    .fetch_all(conn)
    .await
}

/// A debit as a refund needs it.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DebitRow {
    pub key_id: String,
    pub id: Uuid,
    pub pool: String,
    pub cost: i64,
    pub refunded: i64,
    pub overage: i64,
    pub reset_at: DateTime<Utc>,
    pub drawn: Json<Vec<Drawn>>,
}

pub async fn debit_owner(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT key_id FROM debits WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

pub async fn lock_debit(
    conn: &mut PgConnection,
    key_id: &str,
    id: Uuid,
) -> Result<Option<DebitRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, id, pool, cost, refunded, overage, reset_at, drawn FROM debits
          WHERE key_id = $1 AND id = $2 FOR UPDATE",
    )
    .bind(key_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// What earlier refunds of a debit returned per grant it drew from (`None`: its overage).
pub async fn refunded_parts(
    conn: &mut PgConnection,
    key_id: &str,
    debit_id: Uuid,
) -> Result<Vec<(Option<Uuid>, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT (part->>'grant_id')::uuid, sum((part->>'amount')::bigint)::bigint
           FROM refunds, jsonb_array_elements(parts) part
          WHERE key_id = $1 AND debit_id = $2
          GROUP BY 1",
    )
    .bind(key_id)
    .bind(debit_id)
    .fetch_all(conn)
    .await
}

pub struct NewRefund<'a> {
    pub key_id: &'a str,
    pub id: Uuid,
    pub debit_id: Uuid,
    pub pool: &'a str,
    pub amount: i64,
    pub reason: Option<&'a str>,
    pub parts: &'a serde_json::Value,
    pub now: DateTime<Utc>,
}

pub async fn insert_refund(conn: &mut PgConnection, r: &NewRefund<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO refunds (key_id, id, debit_id, pool, amount, reason, parts, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
    )
    .bind(r.key_id)
    .bind(r.id)
    .bind(r.debit_id)
    .bind(r.pool)
    .bind(r.amount)
    .bind(r.reason)
    .bind(Json(r.parts))
    .bind(r.now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE debits SET refunded = refunded + $3 WHERE key_id = $1 AND id = $2")
        .bind(r.key_id)
        .bind(r.debit_id)
        .bind(r.amount)
        .execute(conn)
        .await?;
    Ok(())
}

pub struct NewDebit<'a> {
    pub key_id: &'a str,
    pub id: Uuid,
    pub pool: &'a str,
    pub operation: Option<&'a str>,
    pub quantity: i64,
    pub cost: i64,
    pub plan_id: &'a str,
    pub plan_version: i32,
    pub remaining: Option<i64>,
    pub reset_at: DateTime<Utc>,
    pub drawn: &'a [Drawn],
    pub metadata: &'a serde_json::Value,
    pub reservation_id: Option<Uuid>,
    pub now: DateTime<Utc>,
}

/// A debit made outside the debit function (a committed reservation); counts in `used`.
pub async fn insert_debit(conn: &mut PgConnection, d: &NewDebit<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO debits (key_id, id, pool, operation, quantity, cost, plan_id, plan_version,
                             remaining, reset_at, drawn, metadata, reservation_id, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)",
    )
    .bind(d.key_id)
    .bind(d.id)
    .bind(d.pool)
    .bind(d.operation)
    .bind(d.quantity)
    .bind(d.cost)
    .bind(d.plan_id)
    .bind(d.plan_version)
    .bind(d.remaining)
    .bind(d.reset_at)
    .bind(Json(d.drawn))
    .bind(Json(d.metadata))
    .bind(d.reservation_id)
    .bind(d.now)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE account_pools SET used = used + $3 WHERE key_id = $1 AND pool = $2")
        .bind(d.key_id)
        .bind(d.pool)
        .bind(d.cost)
        .execute(&mut *conn)
        .await?;
    sqlx::query("SELECT cl_usage_add($1, $2, $3, NULL, $4, $5)")
        .bind(d.key_id)
        .bind(d.pool)
        .bind(d.operation)
        .bind(d.now)
        .bind(d.cost)
        .execute(conn)
        .await?;
    Ok(())
}
