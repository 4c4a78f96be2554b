//! The customer portal: `POST /v1/accounts/{key_id}/portal-sessions` makes a short-lived link,
//! and `GET /v1/portal` answers the portal page (or a product's own dashboard) with the
//! customer's numbers for the link's token.

use axum::extract::{FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use chrono::{DateTime, Duration, SecondsFormat, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;

use super::accounts::key_id;
use super::auth::{bearer, Service};
use super::extract::{AppJson, AppPath, IdempotencyKey, OptionalJson};
use crate::app::AppState;
use crate::error::ApiError;
use crate::ledger::types::{InvalidField, PackId};
use crate::service::portal::{PortalAccess, PortalRefusal, PortalView};

/// How long a link lives unless the caller says otherwise, and the bounds it may say.
pub const TTL_DEFAULT_SECONDS: i64 = 3600;
pub const TTL_MIN_SECONDS: i64 = 60;
pub const TTL_MAX_SECONDS: i64 = 86_400;
const RETURN_URL_MAX: usize = 2048;

fn invalid(field: &str, reason: impl Into<String>) -> ApiError {
    ApiError::invalid_field("invalid_request", &InvalidField::new(field, reason))
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalSessionBody {
    return_url: Option<String>,
    ttl_seconds: Option<i64>,
}

#[derive(Debug, Serialize)]
pub struct PortalLink {
    url: String,
    expires_at: DateTime<Utc>,
}

/// POST /v1/accounts/{key_id}/portal-sessions: 201 with the link, shown this once.
pub async fn create(
    _: Service,
    State(state): State<AppState>,
    AppPath(raw_key): AppPath<String>,
    OptionalJson(body): OptionalJson<PortalSessionBody>,
) -> Result<Response, ApiError> {
    let account = key_id(&raw_key)?;
    let ttl = body.ttl_seconds.unwrap_or(TTL_DEFAULT_SECONDS);
    if !(TTL_MIN_SECONDS..=TTL_MAX_SECONDS).contains(&ttl) {
        return Err(invalid(
            "ttl_seconds",
            format!("must be between {TTL_MIN_SECONDS} and {TTL_MAX_SECONDS} seconds"),
        ));
    }
    let return_url = body
        .return_url
        .as_deref()
        .map(|raw| {
            // The length that counts is the normalized URL's (encoded, punycode), as stored
            // and as sent to Stripe.
            reqwest::Url::parse(raw)
                .ok()
                .filter(|u| matches!(u.scheme(), "http" | "https") && u.host().is_some())
                .map(|u| u.to_string())
                .filter(|u| u.len() <= RETURN_URL_MAX)
                .ok_or_else(|| {
                    invalid(
                        "return_url",
                        "must be an absolute http(s) URL of at most 2048 characters",
                    )
                })
        })
        .transpose()?;
    let opened = state
        .ledger
        .open_portal(&account, return_url.as_deref(), Duration::seconds(ttl))
        .await?;
    let link = PortalLink {
        url: format!("{}/portal#token={}", state.public_url, opened.token),
        expires_at: opened.expires_at,
    };
    Ok((StatusCode::CREATED, Json(link)).into_response())
}

/// A portal link's token, from `Authorization: Bearer <token>`, that still opens.
pub struct PortalToken(PortalAccess);

impl FromRequestParts<AppState> for PortalToken {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        let token = bearer(parts).ok_or_else(|| {
            ApiError::unauthorized(
                "send the portal link's token as 'Authorization: Bearer <token>'",
            )
        })?;
        match state.ledger.portal_access(token).await? {
            Ok(access) => Ok(PortalToken(access)),
            Err(PortalRefusal::Unknown) => Err(ApiError::unauthorized(
                "this portal link is not known; ask for a new link",
            )),
            Err(PortalRefusal::Expired(at)) => Err(ApiError::unauthorized(format!(
                "this portal link expired at {}; ask for a new link",
                at.to_rfc3339_opts(SecondsFormat::Secs, true)
            ))
            .with_details(json!({"expired_at": at}))),
        }
    }
}

/// GET /v1/portal: what the portal shows, for the link's token.
pub async fn view(
    State(state): State<AppState>,
    PortalToken(access): PortalToken,
) -> Result<Json<PortalView>, ApiError> {
    let mut view = state.ledger.portal_view(&access).await?;
    // A pack is for sale here only when Stripe can sell it and the customer has a way back.
    let can_sell = state.stripe.is_some() && access.return_url.is_some();
    for pack in &mut view.packs {
        pack.buyable &= can_sell;
    }
    Ok(Json(view))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PortalCheckoutBody {
    pack: String,
}

/// POST /v1/portal/checkout-sessions: 201 `{id, url}`, a Stripe Checkout Session selling a pack
/// to the link's customer, who comes back to the link's `return_url`. Nothing in the ledger
/// changes until Stripe reports the payment.
pub async fn checkout(
    State(state): State<AppState>,
    PortalToken(access): PortalToken,
    IdempotencyKey(key): IdempotencyKey,
    AppJson(body, _): AppJson<PortalCheckoutBody>,
) -> Result<Response, ApiError> {
    let pack = PackId::parse("pack", &body.pack)
        .map_err(|f| ApiError::invalid_field("invalid_request", &f))?;
    let back = access.return_url.as_deref().ok_or_else(|| {
        invalid(
            "return_url",
            "this portal link has no return_url for Stripe to send the customer back to; ask for a link with one",
        )
    })?;
    // Keys of the portal's checkouts are apart from the service route's.
    let key = key.map(|k| format!("portal:{k}"));
    super::billing::sell_pack(&state, &access.key_id, &pack, (back, back), key).await
}
