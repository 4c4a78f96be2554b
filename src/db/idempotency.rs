//! Idempotency records for account-less routes (webhook endpoints), which claim a key, do the
//! work, then store the answer. The ledger's own records are read with the account's state and
//! written with its effects, under the account's lock (`db::state`), with the same semantics.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

#[derive(Debug, Clone, PartialEq)]
pub enum Claim {
    /// The key is ours: do the work in this transaction, then `finish`.
    Fresh,
    /// A request with this key and these parameters already succeeded.
    Replay {
        status: u16,
        body: serde_json::Value,
    },
    /// This key was used with other parameters.
    Conflict,
}

/// Claims `key` in `scope` inside the caller's transaction. A concurrent claim of the same key
/// waits here until the other transaction ends, then sees its stored answer (or, if it rolled
/// back, claims the key itself).
pub async fn claim(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    request_hash: &str,
    now: DateTime<Utc>,
) -> Result<Claim, sqlx::Error> {
    loop {
        let inserted = sqlx::query(
            "INSERT INTO idempotency_keys (scope, key, request_hash, status, response, created_at)
             VALUES ($1, $2, $3, 0, 'null'::jsonb, $4) ON CONFLICT DO NOTHING",
        )
        .bind(scope)
        .bind(key)
        .bind(request_hash)
        .bind(now)
        .execute(&mut *conn)
        .await?;
        if inserted.rows_affected() == 1 {
            return Ok(Claim::Fresh);
        }
        let stored: Option<(String, i16, Json<serde_json::Value>)> = sqlx::query_as(
            "SELECT request_hash, status, response FROM idempotency_keys
              WHERE scope = $1 AND key = $2",
        )
        .bind(scope)
        .bind(key)
        .fetch_optional(&mut *conn)
        .await?;
        match stored {
            Some((hash, _, _)) if hash != request_hash => return Ok(Claim::Conflict),
            Some((_, status, Json(body))) => {
                return Ok(Claim::Replay {
                    status: u16::try_from(status).unwrap_or(200),
                    body,
                })
            }
            // The row was removed (its retention ended) between the two statements: claim again.
            None => continue,
        }
    }
}

pub async fn finish(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    status: u16,
    body: &serde_json::Value,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE idempotency_keys SET status = $3, response = $4 WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .bind(i16::try_from(status).unwrap_or(200))
    .bind(Json(body))
    .execute(conn)
    .await?;
    Ok(())
}

/// Forgets keys older than the retention (at least 30 days, rule 5). Returns how many.
pub async fn purge_older_than(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    Ok(
        sqlx::query("DELETE FROM idempotency_keys WHERE created_at < $1 AND status > 0")
            .bind(cutoff)
            .execute(conn)
            .await?
            .rows_affected(),
    )
}
