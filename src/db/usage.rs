//! Usage buckets over the debits of one account.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

use crate::ledger::usage::UsageRow;

/// start, pool, operation, key, credits, count.
type BucketRow = (
    DateTime<Utc>,
    String,
    Option<String>,
    Option<String>,
    i64,
    i64,
);

/// Sums of debits per bucket, in UTC, from the hourly rollup. `interval` is `hour`, `day` or
/// `month`; `group` is `operation`, `pool` or `key`. `from` and `to` are whole hours.
pub async fn buckets(
    conn: &mut PgConnection,
    key_id: &str,
    from: DateTime<Utc>,
    to: DateTime<Utc>,
    interval: &str,
    group: &str,
    source_key_id: Option<&str>,
) -> Result<Vec<UsageRow>, sqlx::Error> {
    let rows: Vec<BucketRow> = sqlx::query_as(
        "SELECT date_trunc($4, hour AT TIME ZONE 'UTC') AT TIME ZONE 'UTC' AS start,
                pool,
                CASE WHEN $5 = 'operation' THEN nullif(operation, '') END AS operation,
                CASE WHEN $5 = 'key' THEN nullif(source_key_id, '') END AS key_id,
                sum(credits)::bigint AS credits,
                sum(count)::bigint AS count
           FROM usage_hourly
          WHERE key_id = $1 AND hour >= $2 AND hour < $3
            AND ($6::text IS NULL OR source_key_id = $6)
          GROUP BY 1, 2, 3, 4
          ORDER BY 1, 2, 3 NULLS FIRST, 4 NULLS FIRST",
    )
    .bind(key_id)
    .bind(from)
    .bind(to)
    .bind(interval)
    .bind(group)
    .bind(source_key_id)
    .fetch_all(conn)
    .await?;
    Ok(rows
        .into_iter()
        .map(
            |(start, pool, operation, key_id, credits, count)| UsageRow {
                start,
                pool,
                operation,
                key_id,
                credits,
                count,
            },
        )
        .collect())
}
