//! Grants (buckets of credits) and the journal entries that change them. Every function here is
//! called with the account's row lock held.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

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
    /// The journal entry's kind: `grant`, or `adjustment` for an adjustment's credits.
    pub entry_kind: &'a str,
    pub adjustment_id: Option<Uuid>,
    /// The instant at which the entry's `balance_after` is taken (a roll uses the boundary).
    pub balance_at: DateTime<Utc>,
    pub now: DateTime<Utc>,
}

/// Inserts a grant and its journal entry in one statement; returns the pool's available credits
/// after it (as of `balance_at`).
pub async fn insert(conn: &mut PgConnection, g: &NewGrant<'_>) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "WITH g AS (
             INSERT INTO grants (key_id, id, pool, kind, amount, remaining, effective_at, expires_at,
                                 priority, period_start, metadata, created_at)
             VALUES ($1, $2, $3, $4, $5, $5, $6, $7, $8, $9, $10, $11)
             RETURNING key_id
         ), balance AS (
             -- The CTE sees the grants as they were before the insert.
             SELECT (coalesce(sum(remaining), 0)
                     + CASE WHEN $6 <= $12 AND ($7::timestamptz IS NULL OR $7 > $12)
                            THEN $5 ELSE 0 END)::bigint AS after
               FROM grants
              WHERE key_id = $1 AND pool = $3 AND remaining > 0 AND voided_at IS NULL
                AND effective_at <= $12 AND (expires_at IS NULL OR expires_at > $12)
         )
         INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, adjustment_id,
                              created_at)
         SELECT g.key_id, $3, $13, $5, balance.after, $2, $14, $11 FROM g, balance
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
    .bind(g.balance_at)
    .bind(g.entry_kind)
    .bind(g.adjustment_id)
    .fetch_one(conn)
    .await
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct GrantRecord {
    pub key_id: String,
    pub id: Uuid,
    pub pool: String,
    pub kind: String,
    pub amount: i64,
    pub remaining: i64,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    pub period_start: Option<DateTime<Utc>>,
    pub metadata: Json<serde_json::Value>,
    pub created_at: DateTime<Utc>,
    pub voided_at: Option<DateTime<Utc>>,
}

const GRANT_COLUMNS: &str = "key_id, id, pool, kind, amount, remaining, effective_at, expires_at, \
                             priority, period_start, metadata, created_at, voided_at";

pub async fn get(
    conn: &mut PgConnection,
    key_id: &str,
    id: Uuid,
) -> Result<Option<GrantRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants WHERE key_id = $1 AND id = $2"
    ))
    .bind(key_id)
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// The account a grant belongs to, for routes that name a grant by id alone.
pub async fn owner(conn: &mut PgConnection, id: Uuid) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT key_id FROM grants WHERE id = $1")
        .bind(id)
        .fetch_optional(conn)
        .await
}

/// Grants of an account, newest first, strictly older than the cursor id (ids are UUIDv7).
pub async fn list(
    conn: &mut PgConnection,
    key_id: &str,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<GrantRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants
          WHERE key_id = $1 AND ($2::uuid IS NULL OR id < $2)
          ORDER BY id DESC LIMIT $3"
    ))
    .bind(key_id)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The drawable grants of a pool at `at`: effective, unexpired, unvoided, with credits left.
pub async fn drawable(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    at: DateTime<Utc>,
) -> Result<Vec<GrantRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants
          WHERE key_id = $1 AND pool = $2 AND remaining > 0 AND voided_at IS NULL
            AND effective_at <= $3 AND (expires_at IS NULL OR expires_at > $3)"
    ))
    .bind(key_id)
    .bind(pool)
    .bind(at)
    .fetch_all(conn)
    .await
}

/// The pool's available credits at `at`.
pub async fn available(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    at: DateTime<Utc>,
) -> Result<i64, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(sum(remaining), 0)::bigint FROM grants
          WHERE key_id = $1 AND pool = $2 AND remaining > 0 AND voided_at IS NULL
            AND effective_at <= $3 AND (expires_at IS NULL OR expires_at > $3)",
    )
    .bind(key_id)
    .bind(pool)
    .bind(at)
    .fetch_one(conn)
    .await
}

/// One change of a grant's `remaining`, with its journal entry.
pub struct Change<'a> {
    pub key_id: &'a str,
    pub grant_id: Uuid,
    pub pool: &'a str,
    /// Signed: negative takes credits out of the grant.
    pub amount: i64,
    pub kind: &'a str,
    pub balance_after: Option<i64>,
    pub operation: Option<&'a str>,
    pub debit_id: Option<Uuid>,
    pub reservation_id: Option<Uuid>,
    pub adjustment_id: Option<Uuid>,
    pub metadata: &'a serde_json::Value,
    pub now: DateTime<Utc>,
}

pub async fn apply_change(conn: &mut PgConnection, c: &Change<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH g AS (
             UPDATE grants SET remaining = remaining + $4 WHERE key_id = $1 AND id = $2
             RETURNING key_id
         )
         INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, adjustment_id,
                              metadata, created_at, operation, debit_id, reservation_id)
         SELECT g.key_id, $3, $5, $4, $6, $2, $7, $8, $9, $10, $11, $12 FROM g",
    )
    .bind(c.key_id)
    .bind(c.grant_id)
    .bind(c.pool)
    .bind(c.amount)
    .bind(c.kind)
    .bind(c.balance_after)
    .bind(c.adjustment_id)
    .bind(Json(c.metadata))
    .bind(c.now)
    .bind(c.operation)
    .bind(c.debit_id)
    .bind(c.reservation_id)
    .execute(conn)
    .await?;
    Ok(())
}

/// Journals every grant of the account that expired at or before `upto` with credits left: an
/// `expiration` entry for what was left, and `remaining` set to 0. With `period_grants`, the
/// allowance and rollover grants expire too whatever their expiry (a period closed early), and
/// their expiry moves to `upto`. Returns how many grants expired.
pub async fn expire_due(
    conn: &mut PgConnection,
    key_id: &str,
    upto: DateTime<Utc>,
    period_grants: bool,
    now: DateTime<Utc>,
) -> Result<Vec<Expired>, sqlx::Error> {
    let expired: Vec<Expired> = sqlx::query_as(
        "WITH due AS (
             SELECT id, pool, kind, remaining FROM grants
              WHERE key_id = $1 AND remaining > 0 AND voided_at IS NULL
                AND (expires_at <= $2 OR ($4 AND kind IN ('allowance', 'rollover')))
         ), cleared AS (
             UPDATE grants g
                SET remaining = 0,
                    expires_at = least(g.expires_at,
                                       greatest($2, g.effective_at + interval '1 microsecond'))
               FROM due WHERE g.key_id = $1 AND g.id = due.id
             RETURNING g.id
         ), journaled AS (
             INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, created_at)
             SELECT $1, due.pool, 'expiration', -due.remaining,
                    (SELECT coalesce(sum(a.remaining), 0)::bigint FROM grants a
                      WHERE a.key_id = $1 AND a.pool = due.pool AND a.remaining > 0
                        AND a.voided_at IS NULL AND a.effective_at <= $2
                        AND (a.expires_at IS NULL OR a.expires_at > $2)),
                    due.id, $3
               FROM due JOIN cleared ON cleared.id = due.id
             RETURNING grant_id
         )
         SELECT due.id AS grant_id, due.pool, due.kind, due.remaining AS amount
           FROM due JOIN journaled ON journaled.grant_id = due.id
          ORDER BY due.pool, due.id",
    )
    .bind(key_id)
    .bind(upto)
    .bind(now)
    .bind(period_grants)
    .fetch_all(&mut *conn)
    .await?;
    if period_grants {
        // Spent (or fully held) period grants close too, so nothing can flow back into them.
        sqlx::query(
            "UPDATE grants
                SET expires_at = least(expires_at, greatest($2, effective_at + interval '1 microsecond'))
              WHERE key_id = $1 AND kind IN ('allowance', 'rollover') AND remaining = 0
                AND voided_at IS NULL AND expires_at > $2",
        )
        .bind(key_id)
        .bind(upto)
        .execute(conn)
        .await?;
    }
    Ok(expired)
}

/// A grant that expired with credits left.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Expired {
    pub grant_id: Uuid,
    pub pool: String,
    pub kind: String,
    pub amount: i64,
}

/// Marks a grant voided, journaling what it had left as a `void` entry.
pub async fn void(
    conn: &mut PgConnection,
    key_id: &str,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH before AS (
             SELECT id, pool, remaining FROM grants WHERE key_id = $1 AND id = $2
         ), voided AS (
             UPDATE grants g SET remaining = 0, voided_at = $3 FROM before
              WHERE g.key_id = $1 AND g.id = before.id
             RETURNING g.id
         )
         INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, created_at)
         SELECT $1, before.pool, 'void', -before.remaining,
                (SELECT coalesce(sum(a.remaining), 0)::bigint FROM grants a
                  WHERE a.key_id = $1 AND a.pool = before.pool AND a.id <> before.id
                    AND a.remaining > 0 AND a.voided_at IS NULL AND a.effective_at <= $3
                    AND (a.expires_at IS NULL OR a.expires_at > $3)),
                before.id, $3
           FROM before JOIN voided ON voided.id = before.id
          WHERE before.remaining > 0",
    )
    .bind(key_id)
    .bind(id)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}

/// The allowance grant of a pool for the period starting at `period_start`, if any.
pub async fn allowance_of_period(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    period_start: DateTime<Utc>,
) -> Result<Option<GrantRecord>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {GRANT_COLUMNS} FROM grants
          WHERE key_id = $1 AND pool = $2 AND kind = 'allowance' AND period_start = $3"
    ))
    .bind(key_id)
    .bind(pool)
    .bind(period_start)
    .fetch_optional(conn)
    .await
}

/// Changes a grant's amount and remaining together (plan change with proration `difference`),
/// journaling the change of remaining as an `adjustment` entry.
pub async fn resize(
    conn: &mut PgConnection,
    key_id: &str,
    grant: &GrantRecord,
    new_amount: i64,
    new_remaining: i64,
    balance_after: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "WITH g AS (
             UPDATE grants SET amount = $3, remaining = $4 WHERE key_id = $1 AND id = $2
             RETURNING key_id, pool
         )
         INSERT INTO entries (key_id, pool, kind, amount, balance_after, grant_id, created_at)
         SELECT g.key_id, g.pool, 'adjustment', $5, $6, $2, $7 FROM g WHERE $5 <> 0",
    )
    .bind(key_id)
    .bind(grant.id)
    .bind(new_amount)
    .bind(new_remaining)
    .bind(new_remaining - grant.remaining)
    .bind(balance_after)
    .bind(now)
    .execute(conn)
    .await?;
    Ok(())
}
