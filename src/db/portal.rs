//! Customer portal links (`portal_sessions`): stored by the digest of their token.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A portal link as stored.
#[derive(Debug, Clone, sqlx::FromRow)]
pub struct PortalSession {
    pub key_id: String,
    pub return_url: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// Records a link for the account; `false` when there is no such account.
pub async fn insert(
    conn: &mut PgConnection,
    key_id: &str,
    token_hash: &[u8; 32],
    return_url: Option<&str>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
) -> Result<bool, sqlx::Error> {
    let inserted = sqlx::query(
        "INSERT INTO portal_sessions (key_id, id, token_hash, return_url, created_at, expires_at)
         SELECT key_id, $2, $3, $4, $5, $6 FROM accounts WHERE key_id = $1",
    )
    .bind(key_id)
    .bind(Uuid::now_v7())
    .bind(token_hash.as_slice())
    .bind(return_url)
    .bind(created_at)
    .bind(expires_at)
    .execute(conn)
    .await?;
    Ok(inserted.rows_affected() == 1)
}

/// The link whose token has this digest, expired or not.
pub async fn find(
    conn: &mut PgConnection,
    key_id: &str,
    token_hash: &[u8; 32],
) -> Result<Option<PortalSession>, sqlx::Error> {
    sqlx::query_as(
        "SELECT key_id, return_url, expires_at FROM portal_sessions
          WHERE key_id = $1 AND token_hash = $2",
    )
    .bind(key_id)
    .bind(token_hash.as_slice())
    .fetch_optional(conn)
    .await
}

/// Forgets links that expired before `cutoff`.
pub async fn purge_expired_before(
    conn: &mut PgConnection,
    cutoff: DateTime<Utc>,
) -> Result<u64, sqlx::Error> {
    let done = sqlx::query("DELETE FROM portal_sessions WHERE expires_at < $1")
        .bind(cutoff)
        .execute(conn)
        .await?;
    Ok(done.rows_affected())
}
