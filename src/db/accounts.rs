//! Account look-ups that are not one account's state: lists, the shared account of a customer,
//! and the accounts the scheduler must bring up to date.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;

/// Account keys in key order, optionally of one external id, after a cursor.
pub async fn list_keys(
    conn: &mut PgConnection,
    external_id: Option<&str>,
    after: Option<&str>,
    limit: i64,
) -> Result<Vec<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT key_id FROM accounts
          WHERE ($1::text IS NULL OR external_id = $1) AND ($2::text IS NULL OR key_id > $2)
          ORDER BY key_id LIMIT $3",
    )
    .bind(external_id)
    .bind(after)
    .bind(limit)
    .fetch_all(conn)
    .await
}

pub async fn exists(conn: &mut PgConnection, key_id: &str) -> Result<bool, sqlx::Error> {
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM accounts WHERE key_id = $1)")
        .bind(key_id)
        .fetch_one(conn)
        .await
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
         ) due ORDER BY key_id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
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
