//! The journal.

use sqlx::PgConnection;

use crate::ledger::model::Entry;

/// Entries of an account, newest first, strictly older than the cursor id.
pub async fn list(
    conn: &mut PgConnection,
    key_id: &str,
    before: Option<i64>,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    sqlx::query_as(
        "SELECT id, key_id, pool, kind, amount, balance_after, grant_id, operation, debit_id,
                reservation_id, adjustment_id, source_key_id, created_at, metadata
           FROM entries
          WHERE key_id = $1 AND ($2::bigint IS NULL OR id < $2)
          ORDER BY id DESC
          LIMIT $3",
    )
    .bind(key_id)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// A journal entry that changes no grant: overage taken or settled, a refund of an unlimited
/// pool's debit.
pub struct NewEntry<'a> {
    pub key_id: &'a str,
    pub pool: &'a str,
    pub kind: &'a str,
    pub amount: i64,
    pub balance_after: Option<i64>,
    pub operation: Option<&'a str>,
    pub debit_id: Option<uuid::Uuid>,
    pub metadata: &'a serde_json::Value,
    pub now: chrono::DateTime<chrono::Utc>,
}

pub async fn insert(conn: &mut PgConnection, e: &NewEntry<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO entries (key_id, pool, kind, amount, balance_after, operation, debit_id,
                              metadata, created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(e.key_id)
    .bind(e.pool)
    .bind(e.kind)
    .bind(e.amount)
    .bind(e.balance_after)
    .bind(e.operation)
    .bind(e.debit_id)
    .bind(sqlx::types::Json(e.metadata))
    .bind(e.now)
    .execute(conn)
    .await?;
    Ok(())
}
