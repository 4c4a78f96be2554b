//! Selling packs through Stripe: `POST /v1/accounts/{key_id}/checkout-sessions` and
//! `POST /v1/stripe/webhook` (DESIGN section 5). Both are optional: without their settings they
//! answer `503 billing_unavailable` naming the setting, and nothing else changes.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};

use super::accounts::key_id;
use super::auth::Service;
use super::extract::{AppJson, AppPath, IdempotencyKey};
use super::idempotency::idempotency;
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::error::LedgerError;
use crate::ledger::grant::{GrantRequest, GrantSource};
use crate::ledger::types::{InvalidField, KeyId, PackId, PoolName};
use crate::service::Outcome;
use crate::stripe::{signature, CheckoutRequest, StripeError, METADATA_KEY_ID, METADATA_PACK};

fn unavailable(setting: &'static str, what: &str) -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "billing_unavailable",
        format!("{what}: {setting} is not set on this ledger"),
    )
    .with_details(json!({"setting": setting}))
}

fn field(name: &str, reason: impl Into<String>) -> ApiError {
    ApiError::invalid_field("invalid_request", &InvalidField::new(name, reason))
}

fn stripe_error(err: StripeError) -> ApiError {
    match err {
        // Stripe holds the request's Idempotency-Key with the first request's parameters: the
        // ledger's own contract for that is a 409.
        StripeError::Refused { body, .. } if body.kind.as_deref() == Some("idempotency_error") => {
            LedgerError::IdempotencyKeyReused.into()
        }
        StripeError::Refused { status, body } => ApiError::new(
            StatusCode::BAD_GATEWAY,
            "stripe_error",
            format!(
                "Stripe refused: {}",
                body.message.as_deref().unwrap_or("no message")
            ),
        )
        .with_details(json!({"stripe_status": status, "stripe_error": body})),
        StripeError::Unavailable(reason) => {
            tracing::warn!(%reason, "answering billing_unavailable");
            ApiError::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "billing_unavailable",
                "Stripe could not be reached; retry shortly with the same Idempotency-Key",
            )
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CheckoutBody {
    pack: String,
    success_url: String,
    cancel_url: String,
}

fn redirect_url(name: &str, raw: &str) -> Result<(), ApiError> {
    reqwest::Url::parse(raw)
        .ok()
        .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
        .filter(|_| raw.len() <= 2048)
        .map(|_| ())
        .ok_or_else(|| {
            field(
                name,
                "must be an absolute http(s) URL of at most 2048 characters",
            )
        })
}

/// POST /v1/accounts/{key_id}/checkout-sessions: 201 `{id, url}`, a Stripe Checkout Session
/// selling a pack of the account's plan. The grant comes with the webhook once Stripe is paid.
pub async fn checkout(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body, _): AppJson<CheckoutBody>,
) -> Result<Response, ApiError> {
    let account = key_id(&raw_key)?;
    let pack_id = PackId::parse("pack", &body.pack)
        .map_err(|f| ApiError::invalid_field("invalid_request", &f))?;
    redirect_url("success_url", &body.success_url)?;
    redirect_url("cancel_url", &body.cancel_url)?;
    sell_pack(
        &state,
        &account,
        &pack_id,
        (&body.success_url, &body.cancel_url),
        key,
    )
    .await
}

/// 201 `{id, url}`: a Stripe Checkout Session selling one of the account's plan's packs, with
/// Stripe's customer back at `success_url` or `cancel_url`. With the caller's Idempotency-Key,
/// Stripe is given one derived from it and the account.
pub(crate) async fn sell_pack(
    state: &AppState,
    account: &KeyId,
    pack_id: &PackId,
    (success_url, cancel_url): (&str, &str),
    idempotency_key: Option<String>,
) -> Result<Response, ApiError> {
    let stripe = state
        .stripe
        .as_ref()
        .ok_or_else(|| unavailable("STRIPE_SECRET_KEY", "packs cannot be sold through Stripe"))?;
    let found = state.ledger.get_account(account).await?;
    let plan = state
        .ledger
        .plan_of(account)
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(account.clone()))?;
    let pack = plan
        .packs
        .get(pack_id)
        .ok_or_else(|| LedgerError::UnknownPack {
            pack: pack_id.clone(),
            known: plan.packs.keys().cloned().collect(),
        })?;
    let stripe_price = pack.stripe_price.as_deref().ok_or_else(|| {
        field(
            "pack",
            format!(
                "{pack_id} has no stripe_price in plan {}: it cannot be sold through Stripe",
                plan.id
            ),
        )
    })?;
    let customer = found
        .metadata
        .get("stripe_customer_id")
        .and_then(Value::as_str);
    // Stripe keeps idempotency keys per secret key, so ours are namespaced by account.
    let stripe_key = idempotency_key.map(|k| format!("credit-ledger:checkout:{account}:{k}"));
    let session = stripe
        .create_checkout_session(&CheckoutRequest {
            key_id: account.as_str(),
            pack: pack_id.as_str(),
            pool: pack.pool.as_str(),
            credits: pack.credits,
            expires_in_days: pack.expires_in_days,
            stripe_price,
            success_url,
            cancel_url,
            customer,
            idempotency_key: stripe_key.as_deref(),
        })
        .await
        .map_err(stripe_error)?;
    Ok((
        StatusCode::CREATED,
        Json(json!({"id": session.id, "url": session.url})),
    )
        .into_response())
}

/// The parts of a Stripe event this route reads.
#[derive(Debug, Deserialize)]
struct Event {
    id: String,
    #[serde(rename = "type")]
    kind: String,
    data: EventData,
}

#[derive(Debug, Deserialize)]
struct EventData {
    object: Value,
}

/// POST /v1/stripe/webhook: Stripe's events, verified by `Stripe-Signature`. A paid Checkout
/// Session made by the ledger grants its pack, once per session however often and however
/// concurrently Stripe delivers it; other events are acknowledged and ignored.
pub async fn stripe_webhook(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, ApiError> {
    let secret = state
        .stripe_webhook_secret
        .clone()
        .ok_or_else(|| unavailable("STRIPE_WEBHOOK_SECRET", "Stripe events cannot be verified"))?;
    let header = headers
        .get("stripe-signature")
        .and_then(|v| v.to_str().ok());
    signature::verify(&body, header, &secret, state.ledger.now().timestamp())
        .map_err(|e| ApiError::new(StatusCode::BAD_REQUEST, "invalid_signature", e.to_string()))?;
    let event: Event = serde_json::from_slice(&body).map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_event",
            format!("the signed body is not a Stripe event: {e}"),
        )
    })?;
    let session = &event.data.object;
    let paid = matches!(
        event.kind.as_str(),
        "checkout.session.completed" | "checkout.session.async_payment_succeeded"
    ) && session["payment_status"] == "paid";
    let metadata = &session["metadata"];
    let (Some(session_id), Some(raw_key), Some(raw_pack)) = (
        session["id"].as_str(),
        metadata[METADATA_KEY_ID].as_str(),
        metadata[METADATA_PACK].as_str(),
    ) else {
        return Ok(ignored(
            &event,
            "not a Checkout Session made by credit-ledger",
        ));
    };
    if !paid {
        return Ok(ignored(&event, "not a paid Checkout Session"));
    }
    let account = KeyId::try_from(raw_key.to_owned())
        .map_err(|f| ApiError::invalid_field("invalid_event", &f))?;
    let pack = PackId::parse("pack", raw_pack)
        .map_err(|f| ApiError::invalid_field("invalid_event", &f))?;
    // The pack as sold (pinned in the metadata at checkout); sessions made before the ledger
    // pinned it take the catalogue's.
    let sold = metadata["credit_ledger_credits"]
        .as_str()
        .and_then(|c| c.parse::<i64>().ok())
        .filter(|c| *c > 0)
        .zip(metadata["credit_ledger_pool"].as_str());
    let source = match sold {
        Some((credits, pool)) => GrantSource::Sold {
            pack: pack.clone(),
            pool: PoolName::parse("pool", pool)
                .map_err(|f| ApiError::invalid_field("invalid_event", &f))?,
            credits,
            expires_in_days: metadata["credit_ledger_expires_in_days"]
                .as_str()
                .and_then(|d| d.parse::<i32>().ok()),
        },
        None => GrantSource::Pack(pack.clone()),
    };
    let request = GrantRequest {
        source,
        effective_at: None,
        priority: 0,
        metadata: json!({"stripe_checkout_session": session_id}),
    };
    // One grant per session: the session id is the Idempotency-Key, claimed in the grant's own
    // transaction under the account's lock, so a second or concurrent delivery replays it.
    let idem = idempotency(
        Some(format!("stripe:checkout:{session_id}")),
        "POST /v1/stripe/webhook",
        &json!({"pack": pack, "session": session_id}),
    );
    let grant = match state
        .ledger
        .create_grant(&account, &request, idem.as_ref())
        .await?
    {
        Outcome::Done(grant) => serde_json::to_value(grant).map_err(|_| ApiError::internal())?,
        Outcome::Replayed(body) => body,
    };
    tracing::info!(event = %event.id, session = session_id, key_id = %account, %pack, "pack sold through Stripe granted");
    Ok((
        StatusCode::OK,
        Json(json!({"received": true, "event": event.id, "grant": grant})),
    )
        .into_response())
}

fn ignored(event: &Event, why: &str) -> Response {
    (
        StatusCode::OK,
        Json(json!({"received": true, "event": event.id, "ignored": why})),
    )
        .into_response()
}
