//! Auto top-up through Stripe: the worker that pays for requested packs. For each request it
//! charges the customer's default payment method off-session (a PaymentIntent with the
//! request's id in its Idempotency-Key, so a retry or a second worker never charges twice), then
//! grants the pack with the request's id as the grant's Idempotency-Key (the grant settles the
//! request), or ends the request `failed` with Stripe's reason. A Stripe outage leaves the request
//! waiting, tried again later.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{OffSessionCharge, Stripe, StripeError};
use crate::ledger::command::Idempotency;
use crate::ledger::grant::{GrantRequest, GrantSource};
use crate::ledger::types::{KeyId, PackId, PoolName};
use crate::service::{Ledger, ServiceError};

/// Delays before each new attempt after Stripe could not be reached: 1, 5, 15, 60 minutes; then
/// the request fails.
const RETRY_SECONDS: [i64; 4] = [60, 300, 900, 3_600];

#[derive(Debug, sqlx::FromRow)]
struct Due {
    key_id: String,
    id: Uuid,
    pool: String,
    pack: String,
    price_amount: Option<i64>,
    price_currency: Option<String>,
    attempts: i32,
    customer: Option<String>,
}

#[derive(Clone, Debug)]
pub struct TopUpCharger {
    db: PgPool,
    stripe: Stripe,
    ledger: Ledger,
}

/// What one attempt came to.
enum Charged {
    Paid { payment_intent: String },
    Failed(String),
    TryLater(String),
}

impl TopUpCharger {
    pub fn new(db: PgPool, stripe: Stripe, ledger: Ledger) -> Self {
        TopUpCharger { db, stripe, ledger }
    }

    /// One pass: claims up to `batch` due requests (a lease keeps other workers off them) and
    /// settles each. Returns how many it worked on.
    pub async fn charge_due(&self, batch: i64) -> Result<usize, ServiceError> {
        let now = self.ledger.now();
        let due: Vec<Due> = sqlx::query_as(
            "WITH due AS (
                 SELECT key_id, id FROM auto_top_ups
                  WHERE status = 'requested' AND next_attempt_at <= $1
                    AND (leased_until IS NULL OR leased_until <= $1)
                  ORDER BY next_attempt_at, id
                  LIMIT $3
                  FOR UPDATE SKIP LOCKED)
             UPDATE auto_top_ups t
                SET leased_until = $2, attempts = t.attempts + 1
               FROM due
              WHERE t.key_id = due.key_id AND t.id = due.id
          RETURNING t.key_id, t.id, t.pool, t.pack, t.price_amount, t.price_currency, t.attempts,
                    (SELECT a.metadata->>'stripe_customer_id' FROM accounts a
                      WHERE a.key_id = t.key_id) AS customer",
        )
        .bind(now)
        .bind(now + chrono::Duration::seconds(120))
        .bind(batch)
        .fetch_all(&self.db)
        .await?;
        let count = due.len();
        for request in due {
            let outcome = self.charge(&request).await;
            self.settle(&request, outcome).await?;
        }
        Ok(count)
    }

    async fn charge(&self, r: &Due) -> Charged {
        let Some(customer) = r.customer.as_deref() else {
            return Charged::Failed("the account has no metadata.stripe_customer_id".into());
        };
        let (Some(amount), Some(currency)) = (r.price_amount, r.price_currency.as_deref()) else {
            return Charged::Failed(format!("pack {} has no price to charge", r.pack));
        };
        let payment_method = match self.stripe.default_payment_method(customer).await {
            Ok(Some(pm)) => pm,
            Ok(None) => {
                return Charged::Failed(format!(
                    "Stripe customer {customer} has no default payment method"
                ))
            }
            Err(err) => return classify(err),
        };
        let request_id = r.id.to_string();
        let description = format!("Auto top-up: pack {} for {}", r.pack, r.key_id);
        let charge = OffSessionCharge {
            key_id: &r.key_id,
            pack: &r.pack,
            request_id: &request_id,
            customer,
            payment_method: &payment_method,
            amount,
            currency,
            description: &description,
            idempotency_key: &format!("credit-ledger-auto-top-up-{}", r.id),
        };
        match self.stripe.charge_off_session(&charge).await {
            Ok(intent) if intent.status == "succeeded" => Charged::Paid {
                payment_intent: intent.id,
            },
            Ok(intent) => Charged::Failed(format!(
                "the payment {} is {} and needs the customer",
                intent.id, intent.status
            )),
            Err(err) => classify(err),
        }
    }

    async fn settle(&self, r: &Due, outcome: Charged) -> Result<(), ServiceError> {
        let key_id =
            KeyId::try_from(r.key_id.clone()).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        let pool =
            PoolName::parse("pool", &r.pool).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
        match outcome {
            Charged::Paid { payment_intent } => {
                let pack = PackId::parse("pack", &r.pack)
                    .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
                let request = GrantRequest {
                    source: GrantSource::Pack(pack),
                    effective_at: None,
                    priority: 0,
                    metadata: json!({"auto_top_up": r.id, "stripe_payment_intent": payment_intent}),
                };
                let idempotency = Idempotency {
                    key: format!("auto-top-up:{}", r.id),
                    request_hash: format!("auto-top-up:{}:{}", r.id, r.pack),
                };
                self.ledger
                    .create_grant(&key_id, &request, Some(&idempotency))
                    .await?;
                sqlx::query(
                    "UPDATE auto_top_ups SET payment_intent = $3 WHERE key_id = $1 AND id = $2",
                )
                .bind(&r.key_id)
                .bind(r.id)
                .bind(&payment_intent)
                .execute(&self.db)
                .await?;
                metrics::counter!("auto_top_ups_total", "outcome" => "succeeded").increment(1);
            }
            Charged::Failed(reason) => {
                tracing::warn!(key_id = %r.key_id, request = %r.id, %reason, "auto top-up failed");
                self.ledger
                    .top_up_failed(&key_id, r.id, pool, reason)
                    .await?;
                metrics::counter!("auto_top_ups_total", "outcome" => "failed").increment(1);
            }
            Charged::TryLater(reason) => {
                let retry = usize::try_from(r.attempts - 1)
                    .ok()
                    .and_then(|i| RETRY_SECONDS.get(i));
                match retry {
                    Some(delay) => {
                        let next: DateTime<Utc> =
                            self.ledger.now() + chrono::Duration::seconds(*delay);
                        tracing::warn!(key_id = %r.key_id, request = %r.id, %reason, "auto top-up waits for Stripe");
                        sqlx::query(
                            "UPDATE auto_top_ups
                                SET leased_until = NULL, next_attempt_at = $3, failure = $4
                              WHERE key_id = $1 AND id = $2 AND status = 'requested'",
                        )
                        .bind(&r.key_id)
                        .bind(r.id)
                        .bind(next)
                        .bind(&reason)
                        .execute(&self.db)
                        .await?;
                    }
                    None => {
                        self.ledger
                            .top_up_failed(&key_id, r.id, pool, reason)
                            .await?;
                        metrics::counter!("auto_top_ups_total", "outcome" => "failed").increment(1);
                    }
                }
            }
        }
        Ok(())
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
                    match self.charge_due(20).await {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => break,
                        Err(err) => {
                            tracing::error!(error = %err, "auto top-up pass failed");
                            break;
                        }
                    }
                }
            }
        })
    }
}

/// A refusal by Stripe (a declined card, a missing customer) ends the request; an outage waits.
fn classify(err: StripeError) -> Charged {
    match err {
        StripeError::Refused { body, .. } => Charged::Failed(format!(
            "Stripe: {}{}",
            body.message.as_deref().unwrap_or("refused"),
            body.decline_code
                .or(body.code)
                .map(|c| format!(" ({c})"))
                .unwrap_or_default()
        )),
        StripeError::Unavailable(reason) => Charged::TryLater(reason),
    }
}
