//! Admin adjustments of a pool's balance.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

pub struct NewAdjustment<'a> {
    pub key_id: &'a str,
    pub id: Uuid,
    pub pool: &'a str,
    pub op: &'a str,
    pub amount: i64,
    pub delta: i64,
    pub reason: &'a str,
    pub available_after: i64,
    pub now: DateTime<Utc>,
}

pub async fn insert(conn: &mut PgConnection, a: &NewAdjustment<'_>) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO adjustments (key_id, id, pool, op, amount, delta, reason, available_after,
                                  created_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)",
    )
    .bind(a.key_id)
    .bind(a.id)
    .bind(a.pool)
    .bind(a.op)
    .bind(a.amount)
    .bind(a.delta)
    .bind(a.reason)
    .bind(a.available_after)
    .bind(a.now)
    .execute(conn)
    .await?;
    Ok(())
}
