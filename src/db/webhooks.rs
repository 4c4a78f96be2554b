//! Webhook endpoints and deliveries.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;
use uuid::Uuid;

#[derive(Clone, sqlx::FromRow)]
pub struct EndpointRow {
    pub id: Uuid,
    pub url: String,
    pub events: Vec<String>,
    pub secret: String,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

const ENDPOINT_COLUMNS: &str = "id, url, events, secret, description, created_at";

pub async fn insert_endpoint(conn: &mut PgConnection, e: &EndpointRow) -> Result<(), sqlx::Error> {
    sqlx::query(
        "INSERT INTO webhook_endpoints (id, url, events, secret, description, created_at)
         VALUES ($1, $2, $3, $4, $5, $6)",
    )
    .bind(e.id)
    .bind(&e.url)
    .bind(&e.events)
    .bind(&e.secret)
    .bind(&e.description)
    .bind(e.created_at)
    .execute(conn)
    .await?;
    Ok(())
}

/// Every endpoint's id and stored secret.
pub async fn secrets(conn: &mut PgConnection) -> Result<Vec<(Uuid, String)>, sqlx::Error> {
    sqlx::query_as("SELECT id, secret FROM webhook_endpoints ORDER BY id")
        .fetch_all(conn)
        .await
}

/// Replaces an endpoint's stored secret if it is still `old`; whether it did.
pub async fn replace_secret(
    conn: &mut PgConnection,
    id: Uuid,
    old: &str,
    new: &str,
) -> Result<bool, sqlx::Error> {
    let done =
        sqlx::query("UPDATE webhook_endpoints SET secret = $3 WHERE id = $1 AND secret = $2")
            .bind(id)
            .bind(old)
            .bind(new)
            .execute(conn)
            .await?;
    Ok(done.rows_affected() == 1)
}

pub async fn endpoints(conn: &mut PgConnection) -> Result<Vec<EndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints ORDER BY created_at, id"
    ))
    .fetch_all(conn)
    .await
}

pub async fn endpoint(
    conn: &mut PgConnection,
    id: Uuid,
) -> Result<Option<EndpointRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {ENDPOINT_COLUMNS} FROM webhook_endpoints WHERE id = $1"
    ))
    .bind(id)
    .fetch_optional(conn)
    .await
}

/// Deletes an endpoint and, with it, its queued deliveries and their log.
pub async fn delete_endpoint(conn: &mut PgConnection, id: Uuid) -> Result<bool, sqlx::Error> {
    Ok(sqlx::query("DELETE FROM webhook_endpoints WHERE id = $1")
        .bind(id)
        .execute(conn)
        .await?
        .rows_affected()
        == 1)
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct DeliveryRow {
    pub key_id: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_seq: i64,
    pub event_type: String,
    pub status: String,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

const DELIVERY_COLUMNS: &str = "key_id, endpoint_id, event_id, event_seq, event_type, status, \
                                attempts, next_attempt_at, last_attempt_at, last_status_code, \
                                last_error, delivered_at, created_at";

/// The delivery log of an endpoint, newest first.
pub async fn deliveries(
    conn: &mut PgConnection,
    endpoint_id: Uuid,
    limit: i64,
) -> Result<Vec<DeliveryRow>, sqlx::Error> {
    sqlx::query_as(&format!(
        "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE endpoint_id = $1
          ORDER BY created_at DESC, event_seq DESC LIMIT $2"
    ))
    .bind(endpoint_id)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// An attempt claimed by a worker: what to send and where.
#[derive(Clone, sqlx::FromRow)]
pub struct Claimed {
    pub key_id: String,
    pub endpoint_id: Uuid,
    pub event_id: Uuid,
    pub event_type: String,
    pub attempts: i32,
    pub url: String,
    pub secret: String,
    pub payload: Json<serde_json::Value>,
    pub event_created_at: DateTime<Utc>,
}

/// Claims due attempts: the oldest pending delivery of each endpoint and account whose time has
/// come and that no worker holds, so that deliveries go out in order per account. Rows locked by
/// another worker are skipped; a claim is a lease (`leased_until`) that the attempt's outcome
/// replaces, so two workers never make one attempt twice.
pub async fn claim_due(
    conn: &mut PgConnection,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
    limit: i64,
) -> Result<Vec<Claimed>, sqlx::Error> {
    sqlx::query_as(
        "WITH due AS (
             SELECT d.key_id, d.endpoint_id, d.event_id
               FROM webhook_deliveries d
              WHERE d.status = 'pending' AND d.next_attempt_at <= $1
                AND (d.leased_until IS NULL OR d.leased_until <= $1)
                AND NOT EXISTS (SELECT 1 FROM webhook_deliveries e
                                 WHERE e.endpoint_id = d.endpoint_id AND e.key_id = d.key_id
                                   AND e.status = 'pending' AND e.event_seq < d.event_seq)
              ORDER BY d.next_attempt_at
              LIMIT $3
              FOR UPDATE SKIP LOCKED
         ), leased AS (
             UPDATE webhook_deliveries d SET leased_until = $2, attempts = d.attempts + 1
               FROM due
              WHERE d.key_id = due.key_id AND d.endpoint_id = due.endpoint_id
                AND d.event_id = due.event_id
             RETURNING d.key_id, d.endpoint_id, d.event_id, d.event_type, d.attempts
         )
         SELECT l.key_id, l.endpoint_id, l.event_id, l.event_type, l.attempts, w.url, w.secret,
                ev.payload, ev.created_at AS event_created_at
           FROM leased l
           JOIN webhook_endpoints w ON w.id = l.endpoint_id
           JOIN events ev ON ev.key_id = l.key_id AND ev.id = l.event_id",
    )
    .bind(now)
    .bind(lease_until)
    .bind(limit)
    .fetch_all(conn)
    .await
}

/// Records an attempt's outcome: delivered, failed for good, or pending with its next time.
#[allow(clippy::too_many_arguments)]
pub async fn record_attempt(
    conn: &mut PgConnection,
    c: &Claimed,
    status: &str,
    next_attempt_at: Option<DateTime<Utc>>,
    status_code: Option<i32>,
    error: Option<&str>,
    now: DateTime<Utc>,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries
            SET status = $4, next_attempt_at = coalesce($5, next_attempt_at), leased_until = NULL,
                last_attempt_at = $8, last_status_code = $6, last_error = $7,
                delivered_at = CASE WHEN $4 = 'delivered' THEN $8 END
          WHERE key_id = $1 AND endpoint_id = $2 AND event_id = $3 AND attempts = $9",
    )
    .bind(&c.key_id)
    .bind(c.endpoint_id)
    .bind(c.event_id)
    .bind(status)
    .bind(next_attempt_at)
    .bind(status_code)
    .bind(error)
    .bind(now)
    .bind(c.attempts)
    .execute(conn)
    .await?;
    Ok(())
}

/// Gives a claimed attempt back without counting it: it stays pending, due at `next_attempt_at`,
/// with `error` saying why it was not sent.
pub async fn hand_back(
    conn: &mut PgConnection,
    c: &Claimed,
    next_attempt_at: DateTime<Utc>,
    error: &str,
) -> Result<(), sqlx::Error> {
    sqlx::query(
        "UPDATE webhook_deliveries
            SET attempts = attempts - 1, leased_until = NULL, next_attempt_at = $4, last_error = $5
          WHERE key_id = $1 AND endpoint_id = $2 AND event_id = $3 AND attempts = $6",
    )
    .bind(&c.key_id)
    .bind(c.endpoint_id)
    .bind(c.event_id)
    .bind(next_attempt_at)
    .bind(error)
    .bind(c.attempts)
    .execute(conn)
    .await?;
    Ok(())
}

// The endpoint secret never reaches a log line.
impl std::fmt::Debug for EndpointRow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EndpointRow")
            .field("id", &self.id)
            .field("url", &self.url)
            .field("events", &self.events)
            .finish_non_exhaustive()
    }
}

impl std::fmt::Debug for Claimed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Claimed")
            .field("key_id", &self.key_id)
            .field("endpoint_id", &self.endpoint_id)
            .field("event_id", &self.event_id)
            .field("attempts", &self.attempts)
            .finish_non_exhaustive()
    }
}
