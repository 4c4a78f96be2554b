//! Overage to Stripe meter events: the worker that sends the outbox rows the journal's trigger
//! writes (migration 20261202000006), with retries. A row is claimed with a lease, so two
//! replicas never send it at once; its identifier is derived from the journal entry, so a repeat
//! after a lost answer is dropped by Stripe. Each scheduled attempt has an Idempotency-Key of its
//! own: Stripe replays a saved 5xx to a reused key for 24 hours.

use std::time::Duration;

use chrono::{DateTime, Utc};
use sha2::{Digest, Sha256};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

use super::{Stripe, StripeError};
use crate::ledger::Clock;

/// Delays before each retry: 30 s, 2 min, 10 min, 30 min, 2 h, 6 h, 12 h (about 21 hours in
/// all, inside the 24 hours in which Stripe drops a repeated identifier); then `failed`.
pub const RETRY_SECONDS: [i64; 7] = [30, 120, 600, 1_800, 7_200, 21_600, 43_200];

#[derive(Debug, sqlx::FromRow)]
struct Due {
    key_id: String,
    entry_id: i64,
    customer: String,
    value: i64,
    occurred_at: DateTime<Utc>,
    attempts: i32,
}

#[derive(Clone, Debug)]
pub struct MeterReporter {
    db: PgPool,
    stripe: Stripe,
    event_name: String,
    clock: Clock,
}

/// The identifier of an entry's meter event: unique per ledger entry (the account is hashed
/// in, so that two ledgers reporting to one Stripe account do not collide), at most 100 bytes.
pub fn identifier(key_id: &str, entry_id: i64) -> String {
    let account = hex::encode(&Sha256::digest(key_id.as_bytes())[..6]);
    format!("credit-ledger-{account}-{entry_id}")
}

impl MeterReporter {
    pub fn new(db: PgPool, stripe: Stripe, event_name: String, clock: Clock) -> Self {
        MeterReporter {
            db,
            stripe,
            event_name,
            clock,
        }
    }

    /// One pass: claims up to `batch` due rows, sends them, records each outcome. Returns how
    /// many were sent or attempted.
    pub async fn report_due(&self, batch: i64) -> Result<usize, sqlx::Error> {
        let now = self.clock.now();
        let due: Vec<Due> = sqlx::query_as(
            "WITH due AS (
                 SELECT key_id, entry_id FROM stripe_meter_events
                  WHERE status = 'pending' AND next_attempt_at <= $1
                    AND (leased_until IS NULL OR leased_until <= $1)
                  ORDER BY next_attempt_at, entry_id
                  LIMIT $3
                  FOR UPDATE SKIP LOCKED)
             UPDATE stripe_meter_events m
                SET leased_until = $2, attempts = m.attempts + 1
               FROM due
              WHERE m.key_id = due.key_id AND m.entry_id = due.entry_id
          RETURNING m.key_id, m.entry_id, m.customer, m.value, m.occurred_at, m.attempts",
        )
        .bind(now)
        // Long enough for every row of the batch, each up to three calls of STRIPE_TIMEOUT_MS.
        .bind(now + chrono::Duration::seconds(1_800))
        .bind(batch)
        .fetch_all(&self.db)
        .await?;
        let count = due.len();
        for row in due {
            let outcome = self
                .stripe
                .create_meter_event(
                    &self.event_name,
                    &row.customer,
                    row.value,
                    row.occurred_at.timestamp(),
                    &identifier(&row.key_id, row.entry_id),
                    &format!(
                        "{}-attempt-{}",
                        identifier(&row.key_id, row.entry_id),
                        row.attempts
                    ),
                )
                .await;
            let now = self.clock.now();
            let (status, next, error) = match outcome {
                Ok(()) => ("sent", None, None),
                Err(err) => {
                    let retry = usize::try_from(row.attempts - 1)
                        .ok()
                        .and_then(|i| RETRY_SECONDS.get(i));
                    // A refusal will not change by retrying; anything else might.
                    let permanent =
                        matches!(err, StripeError::Refused { status, .. } if status != 409);
                    match retry {
                        Some(delay) if !permanent => (
                            "pending",
                            Some(now + chrono::Duration::seconds(*delay)),
                            Some(err.to_string()),
                        ),
                        _ => ("failed", None, Some(err.to_string())),
                    }
                }
            };
            if status != "sent" {
                tracing::warn!(key_id = %row.key_id, entry_id = row.entry_id, status,
                               error = error.as_deref().unwrap_or(""), "stripe meter event not sent");
            }
            metrics::counter!("stripe_meter_events_total", "outcome" => status).increment(1);
            sqlx::query(
                "UPDATE stripe_meter_events
                    SET status = $3, leased_until = NULL, last_error = $4,
                        next_attempt_at = coalesce($5, next_attempt_at),
                        sent_at = CASE WHEN $3 = 'sent' THEN $6 END
                  WHERE key_id = $1 AND entry_id = $2 AND attempts = $7",
            )
            .bind(&row.key_id)
            .bind(row.entry_id)
            .bind(status)
            .bind(error)
            .bind(next)
            .bind(now)
            .bind(row.attempts)
            .execute(&self.db)
            .await?;
        }
        Ok(count)
    }

    /// Runs passes every `poll` until `shutdown`.
    pub fn spawn(self, poll: Duration, shutdown: CancellationToken) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(poll) => {}
                }
                while !shutdown.is_cancelled() {
                    match self.report_due(10).await {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => break,
                        Err(err) => {
                            tracing::error!(error = %err, "stripe meter pass failed");
                            break;
                        }
                    }
                }
            }
        })
    }
}
