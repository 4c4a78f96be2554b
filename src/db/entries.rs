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

/// Which entries of an account a page holds.
#[derive(Debug, Clone, Default)]
pub struct EntryFilter {
    /// Strictly older than this entry id (the cursor).
    pub before: Option<i64>,
    /// Only these kinds; empty means every kind.
    pub kinds: Vec<EntryKind>,
    /// Written at or after this instant.
    pub from: Option<DateTime<Utc>>,
    /// Written before this instant.
    pub to: Option<DateTime<Utc>>,
    /// Only those that this member key's calls wrote.
    pub source_key_id: Option<String>,
}

/// Entries of an account matching `filter`, newest first. The cursor is a plain range on the
/// primary key (no `IS NULL OR`), so that every page is an index range scan, however deep.
pub async fn list(
    conn: &mut PgConnection,
    key_id: &str,
    filter: &EntryFilter,
    limit: i64,
) -> Result<Vec<Entry>, sqlx::Error> {
    // A kind filter is its own clause with the kinds as a constant, so that the planner sees
    // how rare they are and reads a rare kind through `entries_by_kind` instead of walking the
    // account. The names are the enum's own static strings, never the caller's text.
    let by_kind = if filter.kinds.is_empty() {
        String::new()
    } else {
        let names: Vec<&str> = filter.kinds.iter().map(|k| k.as_str()).collect();
        format!("AND kind = ANY('{{{}}}'::entry_kind[])", names.join(","))
    };
    let rows: Vec<EntryRow> = sqlx::query_as(&format!(
        "SELECT id, key_id, pool, kind::text AS kind, amount, balance_after, grant_id, operation, debit_id,
                reservation_id, adjustment_id, source_key_id, created_at, metadata
           FROM entries
          WHERE key_id = $1 AND id < COALESCE($2::bigint, 9223372036854775807)
            AND ($4::text IS NULL OR source_key_id = $4)
            {by_kind}
            AND ($5::timestamptz IS NULL OR created_at >= $5)
            AND ($6::timestamptz IS NULL OR created_at < $6)
          ORDER BY id DESC
          LIMIT $3"
    ))
    .bind(key_id)
    .bind(filter.before)
    .bind(limit)
    .bind(filter.source_key_id.as_deref())
    .bind(filter.from)
    .bind(filter.to)
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
