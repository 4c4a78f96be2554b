//! Stripe, optional: a small typed client over reqwest for the few calls credit-ledger makes
//! (Checkout Sessions now), and the verification of Stripe's webhook signatures.
//!
//! Why not a Stripe crate: the maintained one (async-stripe) generates the whole API surface and
//! costs minutes of build time for the two or three form-encoded calls used here; Stripe's wire
//! format (form bodies, an `Idempotency-Key` header, one error envelope) is small and stable.

pub mod meter;
pub mod signature;
pub mod top_up;

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
    /// `STRIPE_TIMEOUT_MS`: the most one call to Stripe may take (each attempt).
    pub timeout: Duration,
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
            .field("timeout", &self.timeout)
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
    /// What the pack holds at the sale, pinned in the session's metadata: the webhook grants
    /// exactly this, whatever the catalogue says by the time the payment arrives.
    pub pool: &'a str,
    pub credits: i64,
    pub expires_in_days: Option<i32>,
    pub stripe_price: &'a str,
    pub success_url: &'a str,
    pub cancel_url: &'a str,
    pub customer: Option<&'a str>,
    /// Passed on as Stripe's `Idempotency-Key`, so a retried request makes one session (a call
    /// without one gets a fresh key that covers its own retries).
    pub idempotency_key: Option<&'a str>,
}

/// A charge of a saved payment method without the customer present.
#[derive(Debug, Clone)]
pub struct OffSessionCharge<'a> {
    pub key_id: &'a str,
    pub pack: &'a str,
    pub request_id: &'a str,
    pub customer: &'a str,
    pub payment_method: &'a str,
    pub amount: i64,
    pub currency: &'a str,
    pub description: &'a str,
    pub idempotency_key: &'a str,
}

/// A PaymentIntent as the ledger reads it back.
#[derive(Debug, Clone, Deserialize, serde::Serialize, PartialEq, Eq)]
pub struct PaymentIntent {
    pub id: String,
    pub status: String,
}

/// A path segment with everything but unreserved characters percent-encoded.
fn urlencoding_segment(raw: &str) -> String {
    raw.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'~') {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
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
    pub fn new(
        api_base: &str,
        secret_key: &str,
        timeout: Duration,
    ) -> Result<Self, reqwest::Error> {
        Ok(Stripe {
            http: reqwest::Client::builder()
                .connect_timeout(Duration::from_secs(5).min(timeout))
                .timeout(timeout)
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
        let credits = request.credits.to_string();
        let days = request.expires_in_days.map(|d| d.to_string());
        let mut form: Vec<(&str, &str)> = vec![
            ("mode", "payment"),
            ("line_items[0][price]", request.stripe_price),
            ("line_items[0][quantity]", "1"),
            ("success_url", request.success_url),
            ("cancel_url", request.cancel_url),
            ("client_reference_id", request.key_id),
            ("metadata[credit_ledger_key_id]", request.key_id),
            ("metadata[credit_ledger_pack]", request.pack),
            ("metadata[credit_ledger_pool]", request.pool),
            ("metadata[credit_ledger_credits]", credits.as_str()),
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
        if let Some(days) = days.as_deref() {
            form.push(("metadata[credit_ledger_expires_in_days]", days));
        }
        self.post_form("/v1/checkout/sessions", &form, request.idempotency_key)
            .await
    }

    /// `POST /v1/billing/meter_events`: `value` units for `customer` at `timestamp`. Stripe
    /// drops an event whose `identifier` it has seen; `idempotency_key` covers this call's own
    /// quick retries (a fresh one per scheduled attempt, since Stripe replays a saved 5xx to a
    /// reused key for 24 hours).
    pub async fn create_meter_event(
        &self,
        event_name: &str,
        customer: &str,
        value: i64,
        timestamp: i64,
        identifier: &str,
        idempotency_key: &str,
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
        self.post_form::<serde_json::Value>(
            "/v1/billing/meter_events",
            &form,
            Some(idempotency_key),
        )
        .await
        .map(|_| ())
    }

    /// The customer's default payment method (`invoice_settings.default_payment_method`), if
    /// any. A missing customer is a refusal (404).
    pub async fn default_payment_method(
        &self,
        customer: &str,
    ) -> Result<Option<String>, StripeError> {
        #[derive(Deserialize)]
        struct InvoiceSettings {
            default_payment_method: Option<String>,
        }
        #[derive(Deserialize)]
        struct Customer {
            invoice_settings: Option<InvoiceSettings>,
        }
        let path = format!("/v1/customers/{}", urlencoding_segment(customer));
        let customer: Customer = self.send(reqwest::Method::GET, &path, &[], None).await?;
        Ok(customer
            .invoice_settings
            .and_then(|s| s.default_payment_method))
    }

    /// `GET /v1/payment_intents/{id}`: a PaymentIntent's current status.
    pub async fn payment_intent(&self, id: &str) -> Result<PaymentIntent, StripeError> {
        let path = format!("/v1/payment_intents/{}", urlencoding_segment(id));
        self.send(reqwest::Method::GET, &path, &[], None).await
    }

    /// `POST /v1/payment_intents`, confirmed off-session on the customer's payment method. The
    /// Idempotency-Key makes a retry (or a second worker) return the same PaymentIntent.
    pub async fn charge_off_session(
        &self,
        charge: &OffSessionCharge<'_>,
    ) -> Result<PaymentIntent, StripeError> {
        let amount = charge.amount.to_string();
        let form = [
            ("amount", amount.as_str()),
            ("currency", charge.currency),
            ("customer", charge.customer),
            ("payment_method", charge.payment_method),
            ("off_session", "true"),
            ("confirm", "true"),
            ("description", charge.description),
            ("metadata[credit_ledger_key_id]", charge.key_id),
            ("metadata[credit_ledger_pack]", charge.pack),
            ("metadata[credit_ledger_auto_top_up]", charge.request_id),
        ];
        self.post_form("/v1/payment_intents", &form, Some(charge.idempotency_key))
            .await
    }

    async fn post_form<T: for<'de> Deserialize<'de>>(
        &self,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        // Every call carries a key, so that the retries below can never do it twice.
        let key = idempotency_key
            .map(str::to_owned)
            .unwrap_or_else(|| uuid::Uuid::new_v4().to_string());
        self.send(reqwest::Method::POST, path, form, Some(&key))
            .await
    }

    async fn send<T: for<'de> Deserialize<'de>>(
        &self,
        method: reqwest::Method,
        path: &str,
        form: &[(&str, &str)],
        idempotency_key: Option<&str>,
    ) -> Result<T, StripeError> {
        let url = format!("{}{path}", self.api_base);
        let mut last = String::new();
        for attempt in 0..=RETRIES {
            if attempt > 0 {
                tokio::time::sleep(Duration::from_millis(250 * u64::from(attempt))).await;
            }
            let mut call = self
                .http
                .request(method.clone(), &url)
                .bearer_auth(&self.secret_key);
            if let Some(key) = idempotency_key {
                call = call.header("Idempotency-Key", key);
            }
            if method == reqwest::Method::POST {
                call = call.form(form);
            }
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
