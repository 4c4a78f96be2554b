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
    pub shared: bool,
    pub metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

const ACCOUNT_COLUMNS: &str = "key_id, plan_id, billing_anchor, period_start, period_end, \
                               external_id, shared, metadata, created_at, updated_at";

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
    pub shared: bool,
    pub metadata: &'a serde_json::Value,
    pub now: DateTime<Utc>,
}

/// Inserts the account unless it exists; true when this call created it.
pub async fn insert(conn: &mut PgConnection, new: &NewAccount<'_>) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO accounts (key_id, plan_id, billing_anchor, period_start, period_end,
                               external_id, metadata, created_at, updated_at, shared)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $8, $9)
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
    .bind(new.shared)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

pub async fn update_details(
    conn: &mut PgConnection,
    key_id: &str,
    external_id: Option<&str>,
    shared: bool,
    metadata: &serde_json::Value,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE accounts SET external_id = $2, metadata = $3, updated_at = $4, shared = $5
          WHERE key_id = $1",
    )
    .bind(key_id)
    .bind(external_id)
    .bind(Json(metadata))
    .bind(now)
    .bind(shared)
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

/// Locks the account unless another transaction holds it (the scheduler skips busy accounts).
pub async fn lock_or_skip(
    conn: &mut PgConnection,
    key_id: &str,
) -> Result<Option<AccountRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ACCOUNT_COLUMNS} FROM accounts WHERE key_id = $1 FOR UPDATE SKIP LOCKED"
    ))
    .bind(key_id)
    .fetch_optional(conn)
    .await
}

/// Moves the account to a new period (and, for a plan change, a new plan and anchor).
pub async fn set_period(
    conn: &mut PgConnection,
    key_id: &str,
    plan_id: &str,
    billing_anchor: DateTime<Utc>,
    start: DateTime<Utc>,
    end: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE accounts SET plan_id = $2, billing_anchor = $3, period_start = $4, period_end = $5,
                             updated_at = $6
          WHERE key_id = $1",
    )
    .bind(key_id)
    .bind(plan_id)
    .bind(billing_anchor)
    .bind(start)
    .bind(end)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// Starts a pool's new period: what it allows, nothing used.
pub async fn reset_pool(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    allowance: Option<i64>,
    overage_limit: i64,
    period_start: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO account_pools (key_id, pool, allowance, used, overage_limit, overage_used,
                                    period_start)
         VALUES ($1, $2, $3, 0, $4, 0, $5)
         ON CONFLICT (key_id, pool) DO UPDATE
            SET allowance = $3, used = 0, overage_limit = $4, overage_used = 0, period_start = $5",
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

/// Changes what a pool allows in the current period, keeping what it used.
pub async fn set_pool_terms(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    allowance: Option<i64>,
    overage_limit: i64,
    period_start: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO account_pools (key_id, pool, allowance, overage_limit, period_start)
         VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT (key_id, pool) DO UPDATE SET allowance = $3, overage_limit = $4",
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

/// Whether the account needs a roll or has expired grants left to journal at `now`.
pub async fn needs_maintenance(
    conn: &mut PgConnection,
    key_id: &str,
    now: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let due: Option<bool> = sqlx::query_scalar(
        "SELECT a.period_end <= $2
                OR EXISTS (SELECT 1 FROM grants g
                            WHERE g.key_id = a.key_id AND g.remaining > 0 AND g.voided_at IS NULL
                              AND g.expires_at <= $2)
                OR EXISTS (SELECT 1 FROM reservations r
                            WHERE r.key_id = a.key_id AND r.status = 'active'
                              AND r.expires_at <= $2)
                -- A newer plan version added a pool the account has no counters for.
                OR EXISTS (SELECT 1 FROM plan_heads h
                             JOIN plans p ON p.id = h.id AND p.version = h.latest_version
                             CROSS JOIN LATERAL jsonb_object_keys(p.pools) AS k(pool)
                            WHERE h.id = a.plan_id
                              AND NOT EXISTS (SELECT 1 FROM account_pools ap
                                               WHERE ap.key_id = a.key_id AND ap.pool = k.pool))
           FROM accounts a WHERE a.key_id = $1",
    )
    .bind(key_id)
    .bind(now)
    .fetch_optional(conn)
    .await?;
    Ok(due.unwrap_or(false))
}

/// Accounts whose period has ended, or that hold expired unjournaled grants or expired holds.
pub async fn due_for_maintenance(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT key_id FROM (
             (SELECT key_id FROM accounts WHERE period_end <= $1 ORDER BY period_end LIMIT $2)
             UNION
             (SELECT key_id FROM grants
               WHERE remaining > 0 AND voided_at IS NULL AND expires_at <= $1
               ORDER BY expires_at LIMIT $2)
             UNION
             (SELECT key_id FROM reservations
               WHERE status = 'active' AND expires_at <= $1
               ORDER BY expires_at LIMIT $2)
         ) due LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Changes a pool's counters by signed deltas (a refund lowers `used`, a refund of overage
/// lowers `overage_used`).
pub async fn shift_pool_counters(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    used_delta: i64,
    overage_delta: i64,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE account_pools SET used = used + $3, overage_used = overage_used + $4
          WHERE key_id = $1 AND pool = $2",
    )
    .bind(key_id)
    .bind(pool)
    .bind(used_delta)
    .bind(overage_delta)
    .execute(conn)
    .await?;
    Ok(())
}

/// One pool's counters.
pub async fn pool(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
) -> Result<Option<PoolRow>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, pool, allowance, used, overage_limit, overage_used
           FROM account_pools WHERE key_id = $1 AND pool = $2",
    )
    .bind(key_id)
    .bind(pool)
    .fetch_optional(conn)
    .await
}

/// The shared account of a customer (Unkey identity `externalId`): the oldest, should there be
/// more than one.
pub async fn shared_for(
    conn: &mut PgConnection,
    external_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT key_id FROM accounts WHERE shared AND external_id = $1
          ORDER BY created_at, key_id LIMIT 1",
    )
    .bind(external_id)
    .fetch_optional(conn)
    .await
}

/// Another shared account of the same customer, if any.
pub async fn other_shared(
    conn: &mut PgConnection,
    external_id: &str,
    key_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT key_id FROM accounts WHERE shared AND external_id = $1 AND key_id <> $2 LIMIT 1",
    )
    .bind(external_id)
    .bind(key_id)
    .fetch_optional(conn)
    .await
}
