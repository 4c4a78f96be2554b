//! The journal.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ledger::model::Entry;
use crate::ledger::types::EntryKind;

#[derive(sqlx::FromRow)]
struct EntryRow {
    id: i64,
    key_id: String,
    pool: String,
    kind: String,
    amount: i64,
    balance_after: Option<i64>,
    grant_id: Option<Uuid>,
    operation: Option<String>,
    debit_id: Option<Uuid>,
    reservation_id: Option<Uuid>,
    adjustment_id: Option<Uuid>,
    source_key_id: Option<String>,
    created_at: DateTime<Utc>,
    metadata: sqlx::types::Json<serde_json::Value>,
}

/// Entries of an account, newest first, strictly older than the cursor id; with
/// `source_key_id`, only those that key's calls wrote.
pub async fn list(
    conn: &mut PgConnection,
    key_id: &str,
    before: Option<i64>,
    limit: i64,
    source_key_id: Option<&str>,
) -> Result<Vec<Entry>, sqlx::Error> {
    let rows: Vec<EntryRow> = sqlx::query_as(
        "SELECT id, key_id, pool, kind::text AS kind, amount, balance_after, grant_id, operation, debit_id,
                reservation_id, adjustment_id, source_key_id, created_at, metadata
           FROM entries
          WHERE key_id = $1 AND ($2::bigint IS NULL OR id < $2)
            AND ($4::text IS NULL OR source_key_id = $4)
          ORDER BY id DESC
          LIMIT $3",
    )
    .bind(key_id)
    .bind(before)
    .bind(limit)
    .bind(source_key_id)
    .fetch_all(conn)
    .await?;
    rows.into_iter()
        .map(|r| {
            let kind = EntryKind::parse(&r.kind).ok_or_else(|| {
                sqlx::Error::Decode(format!("unknown entry kind {}", r.kind).into())
            })?;
            Ok(Entry {
                id: r.id,
                key_id: r.key_id,
                pool: r.pool,
                kind,
                amount: r.amount,
                balance_after: r.balance_after,
                grant_id: r.grant_id,
                operation: r.operation,
                debit_id: r.debit_id,
                reservation_id: r.reservation_id,
                adjustment_id: r.adjustment_id,
                source_key_id: r.source_key_id,
                created_at: r.created_at,
                metadata: r.metadata.0,
            })
        })
        .collect()
}
