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

/// Accounts whose period has ended, that hold expired unjournaled grants or expired holds, or
/// that hold a grant to announce as expiring within their plan's `expiry_warning_days`.
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
             UNION
             -- Bounded by the longest warning any plan gives, so the index range scanned is
             -- only the grants some plan could warn about now.
             (SELECT g.key_id FROM grants g
                JOIN accounts a ON a.key_id = g.key_id
                JOIN plan_heads h ON h.id = a.plan_id
                JOIN plans p ON p.id = h.id AND p.version = h.latest_version
               WHERE g.remaining > 0 AND g.voided_at IS NULL AND g.expiry_warned_at IS NULL
                 AND g.kind IN ('pack', 'promotional', 'adjustment', 'refund')
                 AND g.effective_at <= $1 AND g.expires_at > $1
                 AND g.expires_at <= $1 + make_interval(days => (
                         SELECT coalesce(max(lp.expiry_warning_days), 0)
                           FROM plan_heads lh
                           JOIN plans lp ON lp.id = lh.id AND lp.version = lh.latest_version))
                 AND g.expires_at <= $1 + make_interval(days => p.expiry_warning_days)
               ORDER BY g.expires_at LIMIT $2)
         ) due ORDER BY key_id LIMIT $2",
    )
    .bind(now)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// The shared account a key draws from: the one it is a registered member of; else its
/// customer's (Unkey identity `externalId`), the oldest should there be more than one.
pub async fn shared_for(
    conn: &mut PgConnection,
    key_id: &str,
    external_id: Option<&str>,
) -> Result<Option<String>, sqlx::Error> {
    sqlx::query_scalar(
        "SELECT coalesce(
             (SELECT key_id FROM member_keys WHERE member_key_id = $1),
             (SELECT key_id FROM accounts WHERE shared AND external_id = $2
               ORDER BY created_at, key_id LIMIT 1))",
    )
    .bind(key_id)
    .bind(external_id)
    .fetch_one(conn)
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
