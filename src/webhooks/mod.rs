//! Webhooks: endpoints (admin), and the delivery worker that sends the outbox's events with the
//! Standard Webhooks signature, at least once, in order per account and endpoint, retrying with
//! exponential backoff. Safe with several processes: attempts are claimed with
//! `FOR UPDATE SKIP LOCKED` and a lease, so no attempt is made twice.

pub mod guard;
pub mod sealed;
pub mod sign;

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::db;
use crate::db::idempotency::Claim;
use crate::db::webhooks::{Claimed, DeliveryRow, EndpointRow};
use crate::ledger::command::Idempotency;
use crate::ledger::{Clock, LedgerError};
use crate::service::{Outcome, ServiceError};
use sealed::{SealError, SecretKeys};

/// When the retries of a failed delivery come: after 5 s, 30 s, 2 min, 10 min, 30 min, 2 h, 5 h,
/// 10 h and 14 h — ten attempts over about 32 hours.
pub const DEFAULT_RETRY_SECONDS: [u64; 9] = [5, 30, 120, 600, 1_800, 7_200, 18_000, 36_000, 50_400];

/// An endpoint as the API shows it (the secret only once, when created).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Endpoint {
    pub id: Uuid,
    pub url: String,
    /// Event types delivered; empty means all.
    pub events: Vec<String>,
    pub description: Option<String>,
    pub created_at: DateTime<Utc>,
}

impl From<EndpointRow> for Endpoint {
    fn from(row: EndpointRow) -> Self {
        Endpoint {
            id: row.id,
            url: row.url,
            events: row.events,
            description: row.description,
            created_at: row.created_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CreatedEndpoint {
    #[serde(flatten)]
    pub endpoint: Endpoint,
    /// `whsec_…`: shown in this answer only. Verify signatures with it.
    pub secret: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Delivery {
    pub event_id: Uuid,
    pub event_type: String,
    pub key_id: String,
    /// `pending`, `delivered` or `failed` (every attempt used).
    pub status: String,
    pub attempts: i32,
    pub last_status_code: Option<i32>,
    pub last_error: Option<String>,
    pub last_attempt_at: Option<DateTime<Utc>>,
    pub next_attempt_at: Option<DateTime<Utc>>,
    pub delivered_at: Option<DateTime<Utc>>,
    pub created_at: DateTime<Utc>,
}

impl From<DeliveryRow> for Delivery {
    fn from(row: DeliveryRow) -> Self {
        Delivery {
            next_attempt_at: (row.status == "pending").then_some(row.next_attempt_at),
            event_id: row.event_id,
            event_type: row.event_type,
            key_id: row.key_id,
            status: row.status,
            attempts: row.attempts,
            last_status_code: row.last_status_code,
            last_error: row.last_error,
            last_attempt_at: row.last_attempt_at,
            delivered_at: row.delivered_at,
            created_at: row.created_at,
        }
    }
}

/// The idempotency scope of the account-less endpoint route.
const SCOPE: &str = "route:POST /v1/webhook-endpoints";

/// What creating an endpoint came to.
#[derive(Debug)]
pub enum Creation {
    Done(Outcome<CreatedEndpoint>),
    /// A replay of a creation whose endpoint has since been deleted.
    Deleted(Uuid),
}

#[derive(Clone)]
pub struct Webhooks {
    db: PgPool,
    http: reqwest::Client,
    clock: Clock,
    retry: Vec<Duration>,
    /// `LEDGER_WEBHOOK_ALLOW_PRIVATE_NETWORKS`: endpoints may be on loopback or private networks.
    allow_private: bool,
    /// `LEDGER_SECRETS_KEY`: seals endpoint secrets at rest; without it no endpoint is created.
    secrets: Option<SecretKeys>,
}

impl std::fmt::Debug for Webhooks {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Webhooks")
            .field("retry", &self.retry)
            .finish_non_exhaustive()
    }
}

fn ledger_err(err: sqlx::Error) -> ServiceError {
    ServiceError::Database(err)
}

impl Webhooks {
    pub fn new(
        db: PgPool,
        clock: Clock,
        retry: Vec<Duration>,
        allow_private: bool,
        secrets: Option<SecretKeys>,
    ) -> Result<Self, reqwest::Error> {
        let mut http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(10))
            // A redirect could lead anywhere, inside included: a 3xx is the endpoint's answer.
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!(
                "credit-ledger-webhooks/",
                env!("CARGO_PKG_VERSION")
            ));
        if !allow_private {
            http = http.dns_resolver(std::sync::Arc::new(guard::PublicOnly));
        }
        Ok(Webhooks {
            db,
            http: http.build()?,
            clock,
            retry,
            allow_private,
            secrets,
        })
    }

    /// Whether endpoint secrets can be sealed, and so endpoints created.
    pub fn can_seal(&self) -> bool {
        self.secrets.is_some()
    }

    /// The secret of an endpoint from its stored form.
    fn open(&self, endpoint: Uuid, stored: &str) -> Result<String, SealError> {
        match &self.secrets {
            Some(keys) => keys.open(endpoint, stored),
            None => sealed::open_without_keys(stored),
        }
    }

    /// Seals, under the current key, every stored secret that is not: plain ones from before
    /// sealing existed, and ones sealed under an older key of a rotation. Without keys, counts the
    /// plain ones. Returns how many secrets were (or, without keys, would be) sealed; secrets that
    /// no loaded key opens are left as they are, with a warning.
    pub async fn seal_stored_secrets(&self) -> Result<usize, ServiceError> {
        let mut conn = self.db.acquire().await.map_err(ledger_err)?;
        let stored = db::webhooks::secrets(&mut conn).await.map_err(ledger_err)?;
        let Some(keys) = &self.secrets else {
            return Ok(stored
                .iter()
                .filter(|(_, secret)| sealed::open_without_keys(secret).is_ok())
                .count());
        };
        let mut sealed_now = 0;
        for (id, secret) in stored {
            if keys.is_current(&secret) {
                continue;
            }
            match keys.open(id, &secret) {
                Ok(plain) => {
                    let resealed = keys.seal(id, &plain);
                    if db::webhooks::replace_secret(&mut conn, id, &secret, &resealed)
                        .await
                        .map_err(ledger_err)?
                    {
                        sealed_now += 1;
                    }
                }
                Err(err) => {
                    tracing::warn!(endpoint = %id, error = %err, "webhook secret left as it is");
                }
            }
        }
        Ok(sealed_now)
    }

    /// How many attempts a delivery gets in all.
    pub fn max_attempts(&self) -> i32 {
        i32::try_from(self.retry.len() + 1).unwrap_or(i32::MAX)
    }

    pub async fn create_endpoint(
        &self,
        url: String,
        events: Vec<String>,
        description: Option<String>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Creation, ServiceError> {
        let now = self.clock.now();
        let mut tx = self.db.begin().await.map_err(ledger_err)?;
        if let Some(idem) = idempotency {
            match db::idempotency::claim(&mut tx, SCOPE, &idem.key, &idem.request_hash, now)
                .await
                .map_err(ledger_err)?
            {
                Claim::Fresh => {}
                Claim::Replay { body, .. } => return self.replay(&mut tx, body).await,
                Claim::Conflict => return Err(LedgerError::IdempotencyKeyReused.into()),
            }
        }
        let keys = self
            .secrets
            .as_ref()
            .ok_or_else(|| ServiceError::Unavailable("LEDGER_SECRETS_KEY is not set".to_owned()))?;
        let id = Uuid::now_v7();
        let secret = sign::new_secret();
        let row = EndpointRow {
            id,
            url,
            events,
            secret: keys.seal(id, &secret),
            description,
            created_at: now,
        };
        db::webhooks::insert_endpoint(&mut tx, &row)
            .await
            .map_err(ledger_err)?;
        let created = CreatedEndpoint {
            secret,
            endpoint: row.into(),
        };
        if let Some(idem) = idempotency {
            // Stored without the secret: a replay takes it from the endpoint, if it still exists.
            let mut body =
                serde_json::to_value(&created).map_err(|e| ServiceError::Corrupt(e.to_string()))?;
            if let Some(stored) = body.as_object_mut() {
                stored.remove("secret");
            }
            db::idempotency::finish(&mut tx, SCOPE, &idem.key, 201, &body)
                .await
                .map_err(ledger_err)?;
        }
        tx.commit().await.map_err(ledger_err)?;
        Ok(Creation::Done(Outcome::Done(created)))
    }

    /// The stored answer of a creation, with the secret of the endpoint it made; or, if that
    /// endpoint has been deleted since, `Creation::Deleted`: its secret is gone with it.
    async fn replay(
        &self,
        conn: &mut sqlx::PgConnection,
        mut body: serde_json::Value,
    ) -> Result<Creation, ServiceError> {
        let id = body["id"]
            .as_str()
            .and_then(|id| id.parse::<Uuid>().ok())
            .ok_or_else(|| ServiceError::Corrupt("a stored endpoint creation has no id".into()))?;
        match db::webhooks::endpoint(conn, id).await.map_err(ledger_err)? {
            Some(endpoint) => {
                let secret = self
                    .open(endpoint.id, &endpoint.secret)
                    .map_err(|e| ServiceError::Corrupt(e.to_string()))?;
                body["secret"] = serde_json::Value::String(secret);
                Ok(Creation::Done(Outcome::Replayed(body)))
            }
            None => Ok(Creation::Deleted(id)),
        }
    }

    pub async fn list_endpoints(&self) -> Result<Vec<Endpoint>, ServiceError> {
        let mut conn = self.db.acquire().await.map_err(ledger_err)?;
        Ok(db::webhooks::endpoints(&mut conn)
            .await
            .map_err(ledger_err)?
            .into_iter()
            .map(Endpoint::from)
            .collect())
    }

    pub async fn get_endpoint(&self, id: Uuid) -> Result<Option<Endpoint>, ServiceError> {
        let mut conn = self.db.acquire().await.map_err(ledger_err)?;
        Ok(db::webhooks::endpoint(&mut conn, id)
            .await
            .map_err(ledger_err)?
            .map(Endpoint::from))
    }

    pub async fn delete_endpoint(&self, id: Uuid) -> Result<bool, ServiceError> {
        let mut conn = self.db.acquire().await.map_err(ledger_err)?;
        db::webhooks::delete_endpoint(&mut conn, id)
            .await
            .map_err(ledger_err)
    }

    pub async fn deliveries(&self, id: Uuid, limit: i64) -> Result<Vec<Delivery>, ServiceError> {
        let mut conn = self.db.acquire().await.map_err(ledger_err)?;
        Ok(db::webhooks::deliveries(&mut conn, id, limit)
            .await
            .map_err(ledger_err)?
            .into_iter()
            .map(Delivery::from)
            .collect())
    }

    /// One pass of the worker: claims due attempts, sends them, records the outcomes. Returns
    /// how many attempts it made.
    pub async fn deliver_due(&self, batch: i64) -> Result<usize, ServiceError> {
        let now = self.clock.now();
        // The lease outlasts the HTTP timeout, so a claimed attempt is never claimed again while
        // it may still be in flight; a worker that died frees it when the lease ends.
        let lease = now + chrono::Duration::seconds(60);
        let claimed = {
            let mut tx = self.db.begin().await.map_err(ledger_err)?;
            let claimed = db::webhooks::claim_due(&mut tx, now, lease, batch)
                .await
                .map_err(ledger_err)?;
            tx.commit().await.map_err(ledger_err)?;
            claimed
        };
        let attempts = claimed.len();
        // A secret sealed under a key this process lacks (a replica not yet given the key, or one
        // with only the old key during a rotation) is not this process's to send: the attempt is
        // handed back uncounted, for a process that has the key, instead of using up retries.
        let mut sendable = Vec::with_capacity(claimed.len());
        for c in claimed {
            match self.open(c.endpoint_id, &c.secret) {
                Err(err @ (SealError::NoKeys | SealError::UnknownKey(_))) => {
                    let later = self.clock.now() + chrono::Duration::seconds(60);
                    let mut conn = self.db.acquire().await.map_err(ledger_err)?;
                    db::webhooks::hand_back(
                        &mut conn,
                        &c,
                        later,
                        &format!("not sent by this process: {err}"),
                    )
                    .await
                    .map_err(ledger_err)?;
                }
                _ => sendable.push(c),
            }
        }
        let sends = sendable.into_iter().map(|c| async move {
            let outcome = self.send(&c).await;
            (c, outcome)
        });
        for (c, outcome) in futures::future::join_all(sends).await {
            let now = self.clock.now();
            let (status, next, code, error) = match outcome {
                Ok(code) => ("delivered", None, Some(code), None),
                Err((code, error)) => {
                    metrics::counter!("webhook_delivery_failures_total").increment(1);
                    match usize::try_from(c.attempts - 1)
                        .ok()
                        .and_then(|i| self.retry.get(i))
                    {
                        Some(delay) => (
                            "pending",
                            Some(now + chrono::Duration::from_std(*delay).unwrap_or_default()),
                            code,
                            Some(error),
                        ),
                        None => ("failed", None, code, Some(error)),
                    }
                }
            };
            metrics::counter!("webhook_deliveries_total", "outcome" => status).increment(1);
            let mut conn = self.db.acquire().await.map_err(ledger_err)?;
            db::webhooks::record_attempt(&mut conn, &c, status, next, code, error.as_deref(), now)
                .await
                .map_err(ledger_err)?;
        }
        Ok(attempts)
    }

    /// Sends one attempt: `Ok(status)` on 2xx, else the status (if any) and why.
    async fn send(&self, c: &Claimed) -> Result<i32, (Option<i32>, String)> {
        let body = serde_json::json!({
            "type": c.event_type,
            "timestamp": c.event_created_at,
            "data": c.payload.0,
        })
        .to_string();
        let timestamp = self.clock.now().timestamp();
        let id = c.event_id.to_string();
        let secret = self
            .open(c.endpoint_id, &c.secret)
            .map_err(|e| (None, format!("not sent: {e}")))?;
        let signature =
            sign::sign(&secret, &id, timestamp, &body).map_err(|e| (None, e.to_string()))?;
        // Checked again at delivery: the endpoint may predate the rule or the setting.
        let url =
            reqwest::Url::parse(&c.url).map_err(|_| (None, "the URL is not valid".to_owned()))?;
        if let Some(reason) = guard::refuse(&url, self.allow_private) {
            return Err((None, format!("not sent: the URL {reason}")));
        }
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .header("webhook-id", &id)
            .header("webhook-timestamp", timestamp.to_string())
            .header("webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| {
                (
                    None,
                    if e.is_timeout() {
                        "timed out".to_owned()
                    } else {
                        "could not connect".to_owned()
                    },
                )
            })?;
        let code = i32::from(response.status().as_u16());
        if response.status().is_success() {
            Ok(code)
        } else {
            Err((Some(code), format!("the endpoint answered HTTP {code}")))
        }
    }

    /// Whether endpoints may be on loopback or private networks.
    pub fn allow_private(&self) -> bool {
        self.allow_private
    }

    /// Runs the worker until `shutdown`, a pass every `poll`.
    pub fn spawn_worker(
        self,
        poll: Duration,
        shutdown: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    _ = shutdown.cancelled() => break,
                    _ = tokio::time::sleep(poll) => {}
                }
                // Work through a backlog, but let a shutdown in between passes.
                while !shutdown.is_cancelled() {
                    match self.deliver_due(50).await {
                        Ok(n) if n > 0 => continue,
                        Ok(_) => break,
                        Err(err) => {
                            tracing::error!(error = %err, "webhook delivery pass failed");
                            break;
                        }
                    }
                }
            }
        })
    }
}
