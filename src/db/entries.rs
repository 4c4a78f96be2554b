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
                reservation_id, adjustment_id, created_at, metadata
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
