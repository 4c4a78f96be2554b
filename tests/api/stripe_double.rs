//! A test double of Stripe that speaks the parts of its public API the ledger uses:
//! form-encoded bodies, `Authorization: Bearer sk_…`, `Idempotency-Key` (the same key and body
//! answer the first response again; the same key with another body is an `idempotency_error`),
//! Stripe's error envelope `{"error": {"type", "code", "message", "param"}}`, and failure modes
//! (5xx). It signs webhook events as Stripe does, with `Stripe-Signature`.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use axum::extract::{Form, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

pub const SECRET_KEY: &str = "sk_test_credit_ledger";
pub const WEBHOOK_SECRET: &str = "whsec_test_credit_ledger";

/// One request the double received.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub idempotency_key: Option<String>,
    pub form: BTreeMap<String, String>,
}

/// Idempotency-Key → the form it first came with, and the answer given.
type Replies = HashMap<String, (BTreeMap<String, String>, Value)>;

#[derive(Default)]
struct DoubleState {
    prices: Mutex<Vec<String>>,
    /// Every `price_…` id is known (for runs that test the ledger, not its catalogue).
    any_price: std::sync::atomic::AtomicBool,
    sessions: Mutex<HashMap<String, Value>>,
    meter_events: Mutex<Vec<Value>>,
    /// Customer id → its default payment method.
    customers: Mutex<HashMap<String, Option<String>>>,
    /// PaymentIntents that succeeded.
    charges: Mutex<Vec<Value>>,
    /// Every PaymentIntent made, by id (its status can move on: `complete_payment`).
    payment_intents: Mutex<HashMap<String, Value>>,
    replies: Mutex<Replies>,
    received: Mutex<Vec<Received>>,
    failures_left: AtomicUsize,
    /// Answers wait this long (a slow or hung Stripe).
    delay: Mutex<std::time::Duration>,
    next_id: AtomicUsize,
}

pub struct StripeDouble {
    pub base_url: String,
    state: Arc<DoubleState>,
    shutdown: CancellationToken,
}

impl Drop for StripeDouble {
    fn drop(&mut self) {
        self.shutdown.cancel();
    }
}

fn stripe_error(
    status: StatusCode,
    kind: &str,
    code: Option<&str>,
    param: Option<&str>,
    message: &str,
) -> Response {
    (
        status,
        Json(json!({"error": {"type": kind, "code": code, "param": param, "message": message}})),
    )
        .into_response()
}

/// What every route does first: record the request, check the key, fail on demand, and answer
/// a repeated Idempotency-Key with the first answer (or refuse it with other parameters).
/// `Err` is the answer to give.
fn preamble(
    state: &DoubleState,
    path: &str,
    headers: &HeaderMap,
    form: &BTreeMap<String, String>,
) -> Result<Option<String>, Box<Response>> {
    let idempotency_key = headers
        .get("idempotency-key")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned);
    state.received.lock().unwrap().push(Received {
        path: path.into(),
        idempotency_key: idempotency_key.clone(),
        form: form.clone(),
    });

    if headers.get("authorization").and_then(|v| v.to_str().ok())
        != Some(&format!("Bearer {SECRET_KEY}"))
    {
        return Err(Box::new(stripe_error(
            StatusCode::UNAUTHORIZED,
            "invalid_request_error",
            None,
            None,
            "Invalid API Key provided",
        )));
    }
    if state
        .failures_left
        .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| n.checked_sub(1))
        .is_ok()
    {
        return Err(Box::new(stripe_error(
            StatusCode::INTERNAL_SERVER_ERROR,
            "api_error",
            None,
            None,
            "An unknown error occurred",
        )));
    }
    if let Some(key) = &idempotency_key {
        if let Some((first_form, reply)) = state.replies.lock().unwrap().get(key) {
            if first_form != form {
                return Err(Box::new(stripe_error(
                    StatusCode::BAD_REQUEST,
                    "idempotency_error",
                    None,
                    None,
                    "Keys for idempotent requests can only be used with the same parameters they were first used with.",
                )));
            }
            return Err(Box::new(
                (StatusCode::OK, Json(reply.clone())).into_response(),
            ));
        }
    }
    Ok(idempotency_key)
}

/// Stripe's answer to a request without one of `required`, if it lacks one.
fn missing_param(form: &BTreeMap<String, String>, required: &[&str]) -> Option<Response> {
    let missing = required.iter().find(|r| !form.contains_key(**r))?;
    Some(stripe_error(
        StatusCode::BAD_REQUEST,
        "invalid_request_error",
        Some("parameter_missing"),
        Some(missing),
        &format!("Missing required param: {missing}."),
    ))
}

/// Waits as long as `delay_answers` says: a Stripe that answers too slowly.
async fn stall(state: &DoubleState) {
    let delay = *state.delay.lock().unwrap();
    tokio::time::sleep(delay).await;
}

fn remember(
    state: &DoubleState,
    key: Option<String>,
    form: BTreeMap<String, String>,
    reply: &Value,
) {
    if let Some(key) = key {
        state
            .replies
            .lock()
            .unwrap()
            .insert(key, (form, reply.clone()));
    }
}

async fn checkout_sessions(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    stall(&state).await;
    let idempotency_key = match preamble(&state, "/v1/checkout/sessions", &headers, &form) {
        Ok(key) => key,
        Err(answer) => return *answer,
    };
    if let Some(missing) = missing_param(&form, &["mode", "success_url", "line_items[0][price]"]) {
        return missing;
    }
    let price = &form["line_items[0][price]"];
    if !state.any_price.load(Ordering::SeqCst) && !state.prices.lock().unwrap().contains(price) {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            Some("resource_missing"),
            Some("line_items[0][price]"),
            &format!("No such price: '{price}'"),
        );
    }
    let n = state.next_id.fetch_add(1, Ordering::SeqCst) + 1;
    let id = format!("cs_test_{n}");
    let metadata: serde_json::Map<String, Value> = form
        .iter()
        .filter_map(|(k, v)| {
            k.strip_prefix("metadata[")
                .and_then(|k| k.strip_suffix(']'))
                .map(|k| (k.to_owned(), Value::String(v.clone())))
        })
        .collect();
    let session = json!({
        "id": id, "object": "checkout.session", "mode": form["mode"],
        "url": format!("https://checkout.stripe.com/c/pay/{id}"),
        "payment_status": "unpaid", "status": "open",
        "client_reference_id": form.get("client_reference_id"),
        "customer": form.get("customer"),
        "success_url": form.get("success_url"),
        "cancel_url": form.get("cancel_url"),
        "metadata": metadata,
    });
    state.sessions.lock().unwrap().insert(id, session.clone());
    remember(&state, idempotency_key, form, &session);
    (StatusCode::OK, Json(session)).into_response()
}

/// `GET /v1/customers/{id}`.
async fn customer(
    State(state): State<Arc<DoubleState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    stall(&state).await;
    if let Err(answer) = preamble(
        &state,
        &format!("/v1/customers/{id}"),
        &headers,
        &BTreeMap::new(),
    ) {
        return *answer;
    }
    match state.customers.lock().unwrap().get(&id) {
        Some(pm) => (
            StatusCode::OK,
            Json(json!({"id": id, "object": "customer",
                        "invoice_settings": {"default_payment_method": pm}})),
        )
            .into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            Some("id"),
            &format!("No such customer: '{id}'"),
        ),
    }
}

/// `POST /v1/payment_intents`, confirmed off-session. Stripe's test payment methods decide:
/// `pm_card_visa` succeeds, `pm_card_chargeDeclined` is declined (402 `card_error`),
/// `pm_card_authenticationRequired` needs the customer (402 `authentication_required`).
async fn payment_intents(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    stall(&state).await;
    let idempotency_key = match preamble(&state, "/v1/payment_intents", &headers, &form) {
        Ok(key) => key,
        Err(answer) => return *answer,
    };
    if let Some(missing) =
        missing_param(&form, &["amount", "currency", "customer", "payment_method"])
    {
        return missing;
    }
    let card_error = |code: &str, decline: Option<&str>, message: &str| {
        (
            StatusCode::PAYMENT_REQUIRED,
            Json(
                json!({"error": {"type": "card_error", "code": code, "decline_code": decline,
                                  "message": message, "param": null}}),
            ),
        )
            .into_response()
    };
    let answer = match form["payment_method"].as_str() {
        "pm_card_chargeDeclined" => {
            return card_error(
                "card_declined",
                Some("generic_decline"),
                "Your card was declined.",
            )
        }
        "pm_card_authenticationRequired" => {
            return card_error(
                "authentication_required",
                None,
                "This payment requires authentication by the customer.",
            )
        }
        method => {
            let n = state.next_id.fetch_add(1, Ordering::SeqCst) + 1;
            // A bank debit is still processing when confirmed.
            let status = if method == "pm_processing" {
                "processing"
            } else {
                "succeeded"
            };
            json!({"id": format!("pi_test_{n}"), "object": "payment_intent",
                   "status": status, "amount": form["amount"].parse::<i64>().unwrap_or(0),
                   "currency": form["currency"], "customer": form["customer"],
                   "metadata": {"credit_ledger_auto_top_up":
                                form.get("metadata[credit_ledger_auto_top_up]")}})
        }
    };
    let id = answer["id"].as_str().unwrap().to_owned();
    state
        .payment_intents
        .lock()
        .unwrap()
        .insert(id, answer.clone());
    state.charges.lock().unwrap().push(answer.clone());
    remember(&state, idempotency_key, form, &answer);
    (StatusCode::OK, Json(answer)).into_response()
}

/// `GET /v1/payment_intents/{id}`: the PaymentIntent as it stands now.
async fn payment_intent(
    State(state): State<Arc<DoubleState>>,
    axum::extract::Path(id): axum::extract::Path<String>,
    headers: HeaderMap,
) -> Response {
    stall(&state).await;
    let path = format!("/v1/payment_intents/{id}");
    if let Err(answer) = preamble(&state, &path, &headers, &BTreeMap::new()) {
        return *answer;
    }
    match state.payment_intents.lock().unwrap().get(&id) {
        Some(intent) => (StatusCode::OK, Json(intent.clone())).into_response(),
        None => stripe_error(
            StatusCode::NOT_FOUND,
            "invalid_request_error",
            Some("resource_missing"),
            Some("intent"),
            &format!("No such payment_intent: '{id}'"),
        ),
    }
}

/// `POST /v1/billing/meter_events`: an identifier already used is accepted and not counted
/// again (Stripe enforces uniqueness for at least 24 hours).
async fn meter_events(
    State(state): State<Arc<DoubleState>>,
    headers: HeaderMap,
    Form(form): Form<BTreeMap<String, String>>,
) -> Response {
    stall(&state).await;
    let idempotency_key = match preamble(&state, "/v1/billing/meter_events", &headers, &form) {
        Ok(key) => key,
        Err(answer) => return *answer,
    };
    if let Some(missing) = missing_param(
        &form,
        &[
            "event_name",
            "payload[stripe_customer_id]",
            "payload[value]",
        ],
    ) {
        return missing;
    }
    if form["payload[value]"].parse::<i64>().is_err() {
        return stripe_error(
            StatusCode::BAD_REQUEST,
            "invalid_request_error",
            None,
            Some("payload[value]"),
            "The value must be a number.",
        );
    }
    let identifier = form.get("identifier").cloned().unwrap_or_default();
    let event = json!({
        "object": "billing.meter_event", "event_name": form["event_name"],
        "identifier": identifier, "livemode": false,
        "timestamp": form.get("timestamp").and_then(|t| t.parse::<i64>().ok()),
        "payload": {"stripe_customer_id": form["payload[stripe_customer_id]"],
                    "value": form["payload[value]"]},
    });
    let mut events = state.meter_events.lock().unwrap();
    // Stripe ingests meter events asynchronously and drops one whose identifier it has seen:
    // the call is accepted, the event not counted again.
    if !identifier.is_empty()
        && events
            .iter()
            .any(|e| e["identifier"] == identifier.as_str())
    {
        drop(events);
        remember(&state, idempotency_key, form, &event);
        return (StatusCode::OK, Json(event)).into_response();
    }
    events.push(event.clone());
    drop(events);
    remember(&state, idempotency_key, form, &event);
    (StatusCode::OK, Json(event)).into_response()
}

impl StripeDouble {
    pub async fn start() -> StripeDouble {
        let state = Arc::new(DoubleState::default());
        let app = Router::new()
            .route("/v1/checkout/sessions", post(checkout_sessions))
            .route("/v1/billing/meter_events", post(meter_events))
            .route("/v1/customers/{id}", axum::routing::get(customer))
            .route("/v1/payment_intents", post(payment_intents))
            .route(
                "/v1/payment_intents/{id}",
                axum::routing::get(payment_intent),
            )
            .with_state(Arc::clone(&state));
        let (base_url, shutdown) = crate::helpers::serve_double(app).await;
        StripeDouble {
            base_url,
            state,
            shutdown,
        }
    }

    /// A Price the double knows.
    pub fn add_price(&self, price: &str) {
        self.state.prices.lock().unwrap().push(price.to_owned());
    }

    /// Every Price id is known from now on.
    pub fn know_every_price(&self) {
        self.state.any_price.store(true, Ordering::SeqCst);
    }

    /// The next `count` requests answer 500 with Stripe's `api_error`.
    pub fn fail_next(&self, count: usize) {
        self.state.failures_left.store(count, Ordering::SeqCst);
    }

    pub fn received(&self) -> Vec<Received> {
        self.state.received.lock().unwrap().clone()
    }

    /// Every answer from now on comes after `by`.
    pub fn delay_answers(&self, by: std::time::Duration) {
        *self.state.delay.lock().unwrap() = by;
    }

    /// A customer with (or without) a default payment method.
    pub fn add_customer(&self, id: &str, default_payment_method: Option<&str>) {
        self.state
            .customers
            .lock()
            .unwrap()
            .insert(id.to_owned(), default_payment_method.map(str::to_owned));
    }

    /// A processing PaymentIntent's bank debit went through.
    pub fn complete_payment(&self, id: &str) {
        if let Some(intent) = self.state.payment_intents.lock().unwrap().get_mut(id) {
            intent["status"] = json!("succeeded");
        }
    }

    /// The PaymentIntents made (each charge once), as first answered.
    pub fn charges(&self) -> Vec<Value> {
        self.state.charges.lock().unwrap().clone()
    }

    /// The meter events accepted (each identifier once).
    pub fn meter_events(&self) -> Vec<Value> {
        self.state.meter_events.lock().unwrap().clone()
    }

    pub fn session(&self, id: &str) -> Value {
        self.state.sessions.lock().unwrap()[id].clone()
    }

    /// The event Stripe sends when the customer has paid the session: `checkout.session.completed`
    /// with `payment_status: paid`.
    pub fn completed_event(&self, session_id: &str, event_id: &str) -> Value {
        let mut session = self.session(session_id);
        session["payment_status"] = json!("paid");
        session["status"] = json!("complete");
        json!({"id": event_id, "object": "event", "type": "checkout.session.completed",
               "api_version": "2024-06-20", "created": 1_700_000_000,
               "data": {"object": session}})
    }
}

/// The `Stripe-Signature` header Stripe sends for `payload` at `timestamp`, computed here as
/// Stripe documents it (not with the ledger's own code): `t=<timestamp>,v1=<hex HMAC-SHA256 of
/// "<timestamp>.<payload>" keyed by the endpoint secret>`.
pub fn signature(payload: &[u8], secret: &str, timestamp: i64) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{timestamp}.").as_bytes());
    mac.update(payload);
    format!(
        "t={timestamp},v1={}",
        hex::encode(mac.finalize().into_bytes())
    )
}
