//! Members of shared accounts: the directory from a member key to its account, and each member's
//! caps. What a member used in a period is written with the account's state (`ledger_persist`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::ledger::types::PoolName;

/// A member as the API shows it: its caps and what it used this period.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize, sqlx::FromRow)]
pub struct MemberRow {
    pub key_id: String,
    pub member_key_id: String,
    pub caps: Json<BTreeMap<PoolName, i64>>,
    /// Credits used per pool in the account's current period (accepted debits and committed
    /// holds, less refunds).
    pub used: Json<BTreeMap<PoolName, i64>>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// `used` as of the account's current period: a member's counts of an earlier period are none.
const COLUMNS: &str = "m.key_id, m.member_key_id, m.caps,
    CASE WHEN m.period_start = a.period_start THEN m.used ELSE '{}'::jsonb END AS used,
    m.created_at, m.updated_at";

/// Serializes every change of one key's membership (and the creation of an account for it), so
/// "a member has no account of its own and belongs to one account" holds under concurrency.
pub async fn lock_key(conn: &mut PgConnection, key: &str) -> Result<(), sqlx::Error> {
    sqlx::query("SELECT pg_advisory_xact_lock(hashtextextended('member:' || $1, 0))")
        .bind(key)
        .execute(conn)
        .await?;
    Ok(())
}

/// Locks the account's row, as every write to it does; false when there is no such account.
pub async fn lock_account(conn: &mut PgConnection, key_id: &str) -> Result<bool, sqlx::Error> {
    let found: Option<i32> =
        sqlx::query_scalar("SELECT 1 FROM accounts WHERE key_id = $1 FOR UPDATE")
            .bind(key_id)
            .fetch_optional(conn)
            .await?;
    Ok(found.is_some())
}

/// The account a key is a member of, if any.
pub async fn account_of(
    conn: &mut PgConnection,
    member_key_id: &str,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar("SELECT key_id FROM member_keys WHERE member_key_id = $1")
        .bind(member_key_id)
        .fetch_optional(conn)
        .await
}

/// Makes `member_key_id` a member of `key_id` with `caps` (replacing its caps if it is one).
/// Returns the member and whether it is new. The caller holds the locks and checked the rules.
pub async fn put(
    conn: &mut PgConnection,
    key_id: &str,
    member_key_id: &str,
    caps: &BTreeMap<PoolName, i64>,
    now: DateTime<Utc>,
) -> Result<(MemberRow, bool), sqlx::Error> {
    let created = sqlx::query(
        "INSERT INTO member_keys (member_key_id, key_id, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (member_key_id) DO NOTHING",
    )
    .bind(member_key_id)
    .bind(key_id)
    .bind(now)
    .execute(&mut *conn)
    .await?
    .rows_affected()
        == 1;
    sqlx::query(
        "INSERT INTO members (key_id, member_key_id, caps, created_at, updated_at)
         VALUES ($1, $2, $3, $4, $4)
         ON CONFLICT (key_id, member_key_id) DO UPDATE
            SET caps = EXCLUDED.caps,
                updated_at = CASE WHEN members.caps = EXCLUDED.caps THEN members.updated_at
                                  ELSE EXCLUDED.updated_at END",
    )
    .bind(key_id)
    .bind(member_key_id)
    .bind(Json(caps))
    .bind(now)
    .execute(&mut *conn)
    .await?;
    let member = get(conn, key_id, member_key_id)
        .await?
        .ok_or(sqlx::Error::RowNotFound)?;
    Ok((member, created))
}

pub async fn get(
    conn: &mut PgConnection,
    key_id: &str,
    member_key_id: &str,
) -> Result<Option<MemberRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM members m JOIN accounts a ON a.key_id = m.key_id
          WHERE m.key_id = $1 AND m.member_key_id = $2"
    ))
    .bind(key_id)
    .bind(member_key_id)
    .fetch_optional(conn)
    .await
}

/// The account's members in key order, after a cursor.
pub async fn list(
    conn: &mut PgConnection,
    key_id: &str,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<MemberRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM members m JOIN accounts a ON a.key_id = m.key_id
          WHERE m.key_id = $1 AND ($2::text IS NULL OR m.member_key_id > $2)
          ORDER BY m.member_key_id LIMIT $3"
    ))
    .bind(key_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Ends a membership; false when the key was not a member of the account.
pub async fn remove(
    conn: &mut PgConnection,
    key_id: &str,
    member_key_id: &str,
) -> Result<bool, sqlx::Error> {
    sqlx::query("DELETE FROM member_keys WHERE member_key_id = $1 AND key_id = $2")
        .bind(member_key_id)
        .bind(key_id)
        .execute(&mut *conn)
        .await?;
    let removed = sqlx::query("DELETE FROM members WHERE key_id = $1 AND member_key_id = $2")
        .bind(key_id)
        .bind(member_key_id)
        .execute(conn)
        .await?
        .rows_affected();
    Ok(removed == 1)
}
