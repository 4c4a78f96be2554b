//! Debits as history: one debit with its refunds, and an account's debits by time.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ledger::model::{DebitRecord, Drawn, RefundPart, RefundRecord};

#[derive(sqlx::FromRow)]
struct DebitRow {
    id: Uuid,
    key_id: String,
    pool: String,
    operation: Option<String>,
    quantity: i64,
    cost: i64,
    overage: i64,
    refunded: i64,
    remaining: Option<i64>,
    reset_at: DateTime<Utc>,
    drawn: sqlx::types::Json<Vec<Drawn>>,
    reservation_id: Option<Uuid>,
    source_key_id: Option<String>,
    plan_id: String,
    plan_version: i32,
    overrides: Option<sqlx::types::Json<serde_json::Value>>,
    metadata: sqlx::types::Json<serde_json::Value>,
    created_at: DateTime<Utc>,
}

#[derive(sqlx::FromRow)]
struct RefundRow {
    id: Uuid,
    debit_id: Uuid,
    amount: i64,
    reason: Option<String>,
    parts: sqlx::types::Json<Vec<RefundPart>>,
    created_at: DateTime<Utc>,
}

const COLUMNS: &str = "id, key_id, pool, operation, quantity, cost, overage, refunded, remaining,
    reset_at, drawn, reservation_id, source_key_id, plan_id, plan_version, overrides, metadata,
    created_at";

/// Which debits of an account a page holds, newest first.
#[derive(Debug, Clone, Default)]
pub struct DebitFilter {
    /// Strictly before this (created_at, id): the cursor.
    pub before: Option<(DateTime<Utc>, Uuid)>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    pub operation: Option<String>,
}

/// The debit with this id, with its refunds, whatever its account.
pub async fn find(conn: &mut PgConnection, id: Uuid) -> Result<Option<DebitRecord>, sqlx::Error> {
    let row: Option<DebitRow> =
        sqlx::query_as(&format!("SELECT {COLUMNS} FROM debits WHERE id = $1"))
            .bind(id)
            .fetch_optional(&mut *conn)
            .await?;
    let Some(row) = row else {
        return Ok(None);
    };
    let mut records = with_refunds(conn, vec![row]).await?;
    Ok(records.pop())
}

/// An account's debits matching `filter`, newest first, with their refunds.
pub async fn list(
    conn: &mut PgConnection,
    key_id: &str,
    filter: &DebitFilter,
    limit: i64,
) -> Result<Vec<DebitRecord>, sqlx::Error> {
    let (before_at, before_id) = filter.before.unzip();
    let rows: Vec<DebitRow> = sqlx::query_as(&format!(
        "SELECT {COLUMNS} FROM debits
          WHERE key_id = $1
            AND (created_at, id) < (COALESCE($2::timestamptz, 'infinity'),
                                    COALESCE($3::uuid, 'ffffffff-ffff-ffff-ffff-ffffffffffff'))
            AND created_at >= COALESCE($4::timestamptz, '-infinity')
            AND created_at < COALESCE($5::timestamptz, 'infinity')
            AND ($6::text IS NULL OR operation = $6)
          ORDER BY created_at DESC, id DESC
          LIMIT $7"
    ))
    .bind(key_id)
    .bind(before_at)
    .bind(before_id)
    .bind(filter.from)
    .bind(filter.to)
    .bind(filter.operation.as_deref())
    .bind(limit)
    .fetch_all(&mut *conn)
    .await?;
    with_refunds(conn, rows).await
}

async fn with_refunds(
    conn: &mut PgConnection,
    rows: Vec<DebitRow>,
) -> Result<Vec<DebitRecord>, sqlx::Error> {
    let Some(first) = rows.first() else {
        return Ok(Vec::new());
    };
    let key_id = first.key_id.clone();
    let ids: Vec<Uuid> = rows.iter().map(|r| r.id).collect();
    let refunds: Vec<RefundRow> = sqlx::query_as(
        "SELECT id, debit_id, amount, reason, parts, created_at FROM refunds
          WHERE key_id = $1 AND debit_id = ANY($2) ORDER BY created_at, id",
    )
    .bind(&key_id)
    .bind(&ids)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(|r| DebitRecord {
            refunds: refunds
                .iter()
                .filter(|f| f.debit_id == r.id)
                .map(|f| RefundRecord {
                    id: f.id,
                    amount: f.amount,
                    reason: f.reason.clone(),
                    parts: f.parts.0.clone(),
                    created_at: f.created_at,
                })
                .collect(),
            id: r.id,
            key_id: r.key_id,
            pool: r.pool,
            operation: r.operation,
            quantity: r.quantity,
            cost: r.cost,
            overage: r.overage,
            refunded: r.refunded,
            remaining: r.remaining,
            reset_at: r.reset_at,
            drawn: r.drawn.0,
            reservation_id: r.reservation_id,
            source_key_id: r.source_key_id,
            plan_id: r.plan_id,
            plan_version: r.plan_version,
            overrides: r.overrides.map(|o| o.0),
            metadata: r.metadata.0,
            created_at: r.created_at,
        })
        .collect())
}

/// Credits each pool of the account spent between `from` and `to`, net of what was refunded.
pub async fn spent_by_pool(
    conn: &mut PgConnection,
    key_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
) -> Result<Vec<(String, i64)>, sqlx::Error> {
    sqlx::query_as(
        "SELECT pool, COALESCE(sum(cost - refunded), 0)::bigint FROM debits
          WHERE key_id = $1 AND created_at >= $2 AND created_at < $3
          GROUP BY pool",
    )
    .bind(key_id)
    .bind(from)
    .bind(to)
    .fetch_all(conn)
    .await
}
