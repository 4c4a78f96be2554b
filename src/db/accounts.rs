//! Accounts, their per-pool period counters and their grants.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct AccountRow {
    pub key_id: String,
    pub plan_id: String,
    pub billing_anchor: DateTime<Utc>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub external_id: Option<String>,
    pub metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ACCOUNT_COLUMNS: &str = "key_id, plan_id, billing_anchor, period_start, period_end, \
                               external_id, metadata, created_at, updated_at";

pub async fn get(conn: &mut PgConnection, key_id: &str) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE key_id = $1"
    ))
    .bind(key_id)
    .fetch_optional(conn)
    .await
}

/// Several accounts in one round trip, in no particular order.
pub async fn get_many(
    conn: &mut PgConnection,
    key_ids: &[String],
) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE key_id = ANY($1)"
    ))
    .bind(key_ids)
    .fetch_all(conn)
    .await
}

/// Reads the account and locks it: every change to an account's grants holds this lock.
pub async fn lock(
    conn: &mut PgConnection,
    key_id: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE key_id = $1 FOR UPDATE"
    ))
    .bind(key_id)
    .fetch_optional(conn)
    .await
}

/// Accounts in key order, optionally of one external id, after a cursor.
pub async fn list(
    conn: &mut PgConnection,
    external_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts
          WHERE ($1::text IS NULL OR external_id = $1) AND ($2::text IS NULL OR key_id > $2)
          ORDER BY key_id LIMIT $3"
    ))
    .bind(external_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub struct NewAccount<'a> {
    pub key_id: &'a str,
    pub plan_id: &'a str,
    pub billing_anchor: DateTime<Utc>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub external_id: Option<&'a str>,
    pub metadata: &'a serde_json::Value,
    pub now: DateTime<Utc>,
}

/// Inserts the account unless it exists; true when this call created it.
pub async fn insert(conn: &mut PgConnection, new: &NewAccount<'_>) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO accounts (key_id, plan_id, billing_anchor, period_start, period_end,
                               external_id, metadata, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8)
         ON CONFLICT (key_id) DO NOTHING",
    )
    .bind(new.key_id)
    .bind(new.plan_id)
    .bind(new.billing_anchor)
    .bind(new.period_start)
    .bind(new.period_end)
    .bind(new.external_id)
    .bind(Json(new.metadata))
    .bind(new.now)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn update_details(
    conn: &mut PgConnection,
    key_id: &str,
    external_id: Option<&str>,
    metadata: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE accounts SET external_id = $2, metadata = $3, updated_at = $4 WHERE key_id = $1",
    )
    .bind(key_id)
    .bind(external_id)
    .bind(Json(metadata))
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

pub async fn insert_pool(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    allowance: Option<i64>,
    overage_limit: i64,
    period_start: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO account_pools (key_id, pool, allowance, overage_limit, period_start)
         VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(key_id)
    .bind(pool)
    .bind(allowance)
    .bind(overage_limit)
    .bind(period_start)
    .execute(conn)
    .await?;
    Ok(())
}

pub struct NewGrant<'a> {
    pub key_id: &'a str,
    pub id: Uuid,
    pub pool: &'a str,
    pub kind: &'a str,
    pub amount: i64,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    pub period_start: Option<DateTime<Utc>>,
    pub metadata: &'a serde_json::Value,
    pub now: DateTime<Utc>,
}

/// Inserts a grant and its journal entry (kind `grant`) in one statement; returns the pool's
/// available credits after it.
pub async fn insert_grant(conn: &mut PgConnection, g: &NewGrant<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH g AS (
             INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at, expires_at,
                                 priority, period_start, metadata, created_at)
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11)
             RETURNING key_id
         ), balance AS (
             -- The CTE sees the grants as they were before the insert.
             SELECT (coalesce(sum(remaining), 0)
                     + CASE WHEN $6 <= $11 AND ($7::timestamptz IS NULL OR $7 > $11)
                            THEN $5 ELSE 0 END)::bigint AS after
               FROM grants
              WHERE key_id = $1 AND pool = $3 AND remaining > 0 AND voided_at IS NULL
                AND effective_at <= $11 AND (expires_at IS NULL OR expires_at > $11)
         )
         INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, created_at)
         SELECT g.key_id, $3, 'grant', $5, balance.after, $2, $11 FROM g, balance
         RETURNING balance_after",
    )
    .bind(g.key_id)
    .bind(g.id)
    .bind(g.pool)
    .bind(g.kind)
    .bind(g.amount)
    .bind(g.effective_at)
    .bind(g.expires_at)
    .bind(g.priority)
    .bind(g.period_start)
    .bind(Json(g.metadata))
    .bind(g.now)
    .fetch_one(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PoolRow {
    pub key_id: String,
    pub pool: String,
    pub allowance: Option<i64>,
    pub used: i64,
    pub overage_limit: i64,
    pub overage_used: i64,
}

pub async fn pools_of(
    conn: &mut PgConnection,
    key_ids: &[String],
) -> Result<Vec<PoolRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, pool, allowance, used, overage_limit, overage_used
           FROM account_pools WHERE key_id = ANY($1) ORDER BY key_id, pool",
    )
    .bind(key_ids)
    .fetch_all(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRow {
    pub key_id: String,
    pub id: Uuid,
    pub pool: String,
    pub kind: String,
    pub amount: i64,
    pub remaining: i64,
    pub priority: i32,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

/// Grants in effect at `now`: effective, not expired, not voided.
pub async fn active_grants_of(
    conn: &mut PgConnection,
    key_ids: &[String],
    now: DateTime<Utc>,
) -> Result<Vec<GrantRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, id, pool, kind, amount, remaining, priority, effective_at, expires_at, created_at
           FROM grants
          WHERE key_id = ANY($1) AND voided_at IS NULL AND effective_at <= $2
            AND (expires_at IS NULL OR expires_at > $2)",
    )
    .bind(key_ids)
    .bind(now)
    .fetch_all(conn)
    .await
}
