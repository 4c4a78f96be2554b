//! Grants of an account, for the grant list.

use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::ledger::state::GrantRecord;

/// Grants of an account, newest first, strictly older than the cursor id (ids are UUIDv7).
pub async fn list(
    conn: &mut PgConnection,
    key_id: &str,
    before: Option<Uuid>,
    limit: i64,
) -> Result<Vec<GrantRecord>, sqlx::Error> {
    let rows: Vec<Json<GrantRecord>> = sqlx::query_scalar(
        "SELECT to_jsonb(g) FROM grants g
          WHERE g.key_id = $1 AND ($2::uuid IS NULL OR g.id < $2)
          ORDER BY g.id DESC LIMIT $3",
    )
    .bind(key_id)
    .bind(before)
    .bind(limit)
    .fetch_all(conn)
    .await?;
    Ok(rows.into_iter().map(|Json(g)| g).collect())
}
