//! Stripe, optional: a small typed client over reqwest for the few calls credit-ledger makes
//! (Checkout Sessions now), and the verification of Stripe's webhook signatures.
//!
//! Why not a Stripe crate: the maintained one (async-stripe) generates the whole API surface and
//! costs minutes of build time for the two or three form-encoded calls used here; Stripe's wire
//! format (form bodies, an `Idempotency-Key` header, one error envelope) is small and stable.

pub mod meter;
pub mod signature;

use std::time::Duration;

use serde::Deserialize;

pub const DEFAULT_API_BASE: &str = "https://api.stripe.com";
pub const DEFAULT_METER_EVENT_NAME: &str = "credit_overage";

#[derive(Clone, PartialEq, Eq)]
pub struct StripeSettings {
    /// `STRIPE_SECRET_KEY`; `None` leaves the calls to Stripe off.
    pub secret_key: Option<String>,
    /// `STRIPE_API_BASE`.
    pub api_base: String,
    /// `STRIPE_WEBHOOK_SECRET` (`whsec_…`); `None` leaves `POST /v1/stripe/webhook` off.
    pub webhook_secret: Option<String>,
    /// `STRIPE_METER_EVENT_NAME`.
    pub meter_event_name: String,
}

impl std::fmt::Debug for StripeSettings {
    // Neither secret ever reaches a log line.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StripeSettings")
            .field("secret_key", &self.secret_key.as_ref().map(|_| "***"))
            .field("api_base", &self.api_base)
            .field(
                "webhook_secret",
                &self.webhook_secret.as_ref().map(|_| "***"),
            )
            .field("meter_event_name", &self.meter_event_name)
            .finish()
    }
}

/// Stripe's error envelope: `{"error": {"type", "code", "message", "param", ...}}`.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct StripeErrorBody {
    #[serde(rename = "type")]
    pub kind: Option<String>,
    pub code: Option<String>,
    pub decline_code: Option<String>,
    pub message: Option<String>,
    pub param: Option<String>,
}

#[derive(Deserialize)]
struct Envelope {
    error: StripeErrorBody,
}

#[derive(Debug, thiserror::Error)]
pub enum StripeError {
    /// Stripe answered and refused (4xx other than 429): retrying the same request will not help.
    #[error("Stripe refused the request (HTTP {status}): {}", .body.message.as_deref().unwrap_or("no message"))]
    Refused { status: u16, body: StripeErrorBody },
    /// Stripe could not be asked: a timeout, a connection error, a 429 or a 5xx, after retries.
    #[error("Stripe is unavailable: {0}")]
    Unavailable(String),
}

/// A Checkout Session as the ledger needs it back.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct CheckoutSession {
    pub id: String,
    pub url: Option<String>,
}

/// What a Checkout Session for a pack is made of.
#[derive(Debug, Clone)]
pub struct CheckoutRequest<'a> {
    pub key_id: &'a str,
    pub pack: &'a str,
    pub stripe_price: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    pub customer: Option<&'a str>,
    /// Passed on as Stripe's `Idempotency-Key`, so a retried request makes one session (a call
    /// without one gets a fresh key that covers its own retries).
    pub idempotency_key: Option<&'a str>,
}

/// Metadata keys the ledger sets on what it creates at Stripe, and reads back from webhooks.
pub const METADATA_KEY_ID: &str = "credit_ledger_key_id";
pub const METADATA_PACK: &str = "credit_ledger_pack";

/// Attempts after the first, for a timeout, a connection error, a 429 or a 5xx.
const RETRIES: u32 = 2;

#[derive(Clone)]
pub struct Stripe {
    http: reqwest::Client,
    api_base: String,
    secret_key: String,
}

impl std::fmt::Debug for Stripe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stripe")
            .field("api_base", &self.api_base)
            .finish_non_exhaustive()
    }
}

impl Stripe {
    pub fn new(api_base: &str, secret_key: &str) -> Result<Self, reqwest::Error> {
        Ok(Stripe {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5))
                .timeout(Duration::from_secs(20))
                .user_agent(concat!("credit-ledger/", env!("CARGO_PKG_VERSION")))
                .build()?,
            api_base: api_base.trim_end_matches('/').to_owned(),
            secret_key: secret_key.to_owned(),
        })
    }

    /// `POST /v1/checkout/sessions`: a payment-mode session selling one unit of the pack's price,
    /// with metadata naming the account and the pack (on the session and its PaymentIntent).
    pub async fn create_checkout_session(
        &self,
        request: &CheckoutRequest<'_>,
    ) -> Result<CheckoutSession, StripeError> {
        let mut form: Vec<(&str, &str)> = vec![
            ("mode", "payment"),
            ("line_items[0][price]", request.stripe_price),
            ("line_items[0][quantity]", "1"),
            ("success_url", request.success_url),
            ("cancel_url", request.cancel_url),
            ("client_reference_id", request.key_id),
            ("metadata[credit_ledger_key_id]", request.key_id),
            ("metadata[credit_ledger_pack]", request.pack),
            (
                "payment_intent_data[metadata][credit_ledger_key_id]",
                request.key_id,
            ),
            (
                "payment_intent_data[metadata][credit_ledger_pack]",
                request.pack,
            ),
        ];
        if let Some(customer) = request.customer {
            form.push(("customer", customer));
        }
        self.post_form("/v1/checkout/sessions", &form, request.idempotency_key)
            .await
    }

    /// `POST /v1/billing/meter_events`: `value` units for `customer` at `timestamp`. The
    /// `identifier` is also the request's Idempotency-Key, so a retry is answered, not counted.
    pub async fn create_meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: i64,
        timestamp: i64,
        identifier: &str,
    ) -> Result<(), StripeError> {
        let value = value.to_string();
        let timestamp = timestamp.to_string();
        let form = [
            ("event_name", event_name),
            ("payload[stripe_customer_id]", customer),
            ("payload[value]", value.as_str()),
            ("timestamp", timestamp.as_str()),
            ("identifier", identifier),
        ];
        self.post_form::<serde_json::Value>("/v1/billing/meter_events", &form, Some(identifier))
            .await
            .map(|_| ())
    }

    async fn post_form<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let url = format!("{}{path}", self.api_base);
        // Every call carries a key, so that the retries below can never do it twice.
        let key = idempotency_key
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        let mut last = String::new();
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            let call = self
                .http
                .post(&url)
                .bearer_auth(&self.secret_key)
                .header("Idempotency-Key", &key)
                .form(form);
            match call.send().await {
                Ok(response) => {
                    let status = response.status();
                    let text = response.text().await.unwrap_or_default();
                    if status.is_success() {
                        return serde_json::from_str(&text).map_err(|e| {
                            StripeError::Unavailable(format!("{path} answered unreadably: {e}"))
                        });
                    }
                    if status.as_u16() == 429 || status.is_server_error() {
                        last = format!("{path} answered HTTP {status}");
                        continue;
                    }
                    let body = serde_json::from_str::<Envelope>(&text)
                        .map(|e| e.error)
                        .unwrap_or(StripeErrorBody {
                            kind: None,
                            code: None,
                            decline_code: None,
                            message: Some(format!("HTTP {status} without Stripe's error body")),
                            param: None,
                        });
                    return Err(StripeError::Refused {
                        status: status.as_u16(),
                        body,
                    });
                }
                Err(err) => {
                    last = if err.is_timeout() {
                        format!("{path} timed out")
                    } else {
                        format!("{path} could not be reached")
                    };
                }
            }
            tracing::debug!(path, attempt, reason = %last, "retrying stripe");
        }
        Err(StripeError::Unavailable(last))
    }
}
