//! Auto top-up through Stripe: the worker that pays for requested packs. For each request it
//! charges the customer's default payment method off-session, at most once: the payment method
//! and then the PaymentIntent are recorded on the request as soon as Stripe names them, and a
//! later attempt only reads that PaymentIntent back. A paid request is granted the pack as it
//! was requested (credits, pool and expiry fixed then, whatever the catalogue says now), with the
//! request's id as the grant's Idempotency-Key; the grant settles the request. A refusal ends it
//! `failed` with Stripe's reason; an outage, or a payment still processing, waits.

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

/// How long a claimed request is left to its worker: more than the worst case of one request
/// (three calls, each up to three tries of STRIPE_TIMEOUT_MS).
const LEASE_SECONDS: i64 = 600;

/// How often a payment still processing (a bank debit) is looked at again.
const PROCESSING_RECHECK_SECONDS: i64 = 3_600;

#[derive(Debug, sqlx::FromRow)]
struct Due {
    key_id: String,
    id: Uuid,
    pool: String,
    pack: String,
    credits: i64,
    expires_in_days: Option<i32>,
    price_amount: Option<i64>,
    price_currency: Option<String>,
    attempts: i32,
    payment_method: Option<String>,
    payment_intent: Option<String>,
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
    Paid {
        payment_intent: String,
    },
    Failed(String),
    /// Stripe could not be asked: tried again after a delay, a few times, then failed.
    TryLater(String),
    /// The payment is under way (a bank debit still processing): looked at again later.
    Processing(String),
}

impl TopUpCharger {
    pub fn new(db: PgPool, stripe: Stripe, ledger: Ledger) -> Self {
        TopUpCharger { db, stripe, ledger }
    }

    /// One pass: works through up to `batch` due requests, claiming one at a time (a lease keeps
    /// other workers off it). A request whose settlement fails is left to a later pass; what
    /// Stripe was already asked is recorded on it. Returns how many it worked on.
    pub async fn charge_due(&self, batch: i64) -> Result<usize, ServiceError> {
        let mut worked: usize = 0;
        while (worked as i64) < batch {
            let Some(request) = self.claim().await? else {
                break;
            };
            worked += 1;
            let outcome = self.charge(&request).await;
            if let Err(err) = self.settle(&request, outcome).await {
                tracing::error!(key_id = %request.key_id, request = %request.id, error = %err,
                                "auto top-up not settled; a later pass tries again");
            }
        }
        Ok(worked)
    }

    async fn claim(&self) -> Result<Option<Due>, ServiceError> {
        let now = self.ledger.now();
        Ok(sqlx::query_as(
            "WITH due AS (
                 SELECT key_id, id FROM auto_top_ups
                  WHERE status = 'requested' AND next_attempt_at <= $1
                    AND (leased_until IS NULL OR leased_until <= $1)
                  ORDER BY next_attempt_at, id
                  LIMIT 1
                  FOR UPDATE SKIP LOCKED)
             UPDATE auto_top_ups t
                SET leased_until = $2, attempts = t.attempts + 1
               FROM due
              WHERE t.key_id = due.key_id AND t.id = due.id
          RETURNING t.key_id, t.id, t.pool, t.pack, t.credits, t.expires_in_days, t.price_amount,
                    t.price_currency, t.attempts, t.payment_method, t.payment_intent,
                    (SELECT a.metadata->>'stripe_customer_id' FROM accounts a
                      WHERE a.key_id = t.key_id) AS customer",
        )
        .bind(now)
        .bind(now + chrono::Duration::seconds(LEASE_SECONDS))
        .fetch_optional(&self.db)
        .await?)
    }

    /// Records what Stripe named for the request, before anything else can go wrong.
    async fn remember(&self, r: &Due, column: &str, value: &str) -> Result<(), sqlx::Error> {
        let sql = match column {
            "payment_method" => {
                "UPDATE auto_top_ups SET payment_method = $3 WHERE key_id = $1 AND id = $2"
            }
            _ => "UPDATE auto_top_ups SET payment_intent = $3 WHERE key_id = $1 AND id = $2",
        };
        sqlx::query(sql)
            .bind(&r.key_id)
            .bind(r.id)
            .bind(value)
            .execute(&self.db)
            .await?;
        Ok(())
    }

    async fn charge(&self, r: &Due) -> Charged {
        // Charged before: only read the payment back, never charge again.
        if let Some(id) = &r.payment_intent {
            return match self.stripe.payment_intent(id).await {
                Ok(intent) => from_status(intent),
                Err(err) => classify(err),
            };
        }
        let Some(customer) = r.customer.as_deref() else {
            return Charged::Failed("the account has no metadata.stripe_customer_id".into());
        };
        let (Some(amount), Some(currency)) = (r.price_amount, r.price_currency.as_deref()) else {
            return Charged::Failed(format!("pack {} has no price to charge", r.pack));
        };
        let payment_method = match &r.payment_method {
            Some(pm) => pm.clone(),
            None => match self.stripe.default_payment_method(customer).await {
                Ok(Some(pm)) => {
                    // Fixed for the request, so that a retry asks Stripe the same thing.
                    if let Err(err) = self.remember(r, "payment_method", &pm).await {
                        return Charged::TryLater(err.to_string());
                    }
                    pm
                }
                Ok(None) => {
                    return Charged::Failed(format!(
                        "Stripe customer {customer} has no default payment method"
                    ))
                }
                Err(err) => return classify(err),
            },
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
            Ok(intent) => {
                if let Err(err) = self.remember(r, "payment_intent", &intent.id).await {
                    tracing::error!(request = %r.id, payment_intent = %intent.id, error = %err,
                                    "could not record the payment intent");
                }
                from_status(intent)
            }
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
                    // As requested: a catalogue changed meanwhile cannot refuse a paid pack.
                    source: GrantSource::Sold {
                        pack,
                        pool: pool.clone(),
                        credits: r.credits,
                        expires_in_days: r.expires_in_days,
                    },
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
                // The grant settled the request (or, if a policy change ended it meanwhile, the
                // customer still gets what was paid for).
                sqlx::query(
                    "UPDATE auto_top_ups SET leased_until = NULL WHERE key_id = $1 AND id = $2",
                )
                .bind(&r.key_id)
                .bind(r.id)
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
            Charged::Processing(reason) => {
                let next =
                    self.ledger.now() + chrono::Duration::seconds(PROCESSING_RECHECK_SECONDS);
                sqlx::query(
                    "UPDATE auto_top_ups
                        SET leased_until = NULL, next_attempt_at = $3, failure = $4,
                            attempts = 0
                      WHERE key_id = $1 AND id = $2 AND status = 'requested'",
                )
                .bind(&r.key_id)
                .bind(r.id)
                .bind(next)
                .bind(&reason)
                .execute(&self.db)
                .await?;
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

/// What a PaymentIntent's status means for the request.
fn from_status(intent: super::PaymentIntent) -> Charged {
    match intent.status.as_str() {
        "succeeded" => Charged::Paid {
            payment_intent: intent.id,
        },
        "processing" => Charged::Processing(format!("payment {} is processing", intent.id)),
        other => Charged::Failed(format!(
            "the payment {} is {other}: it needs the customer",
            intent.id
        )),
    }
}

/// A refusal by Stripe (a declined card, a missing customer) ends the request; an outage, or
/// Stripe still busy with the same request (an idempotency conflict), waits.
fn classify(err: StripeError) -> Charged {
    match err {
        StripeError::Refused { status, body }
            if status == 409 || body.kind.as_deref() == Some("idempotency_error") =>
        {
            Charged::TryLater(format!(
                "Stripe: {}",
                body.message.as_deref().unwrap_or("idempotency conflict")
            ))
        }
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
