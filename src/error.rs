//! The API's one error type and its rendering: `{"error": {"code", "message", "details"}}`.

use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use chrono::SecondsFormat;
use serde_json::{json, Value};

use crate::ledger::pricing::PriceError;
use crate::ledger::types::{InvalidField, DEFAULT_POOL};
use crate::ledger::{Exhausted, LedgerError};
use crate::service::ServiceError;

#[derive(Debug, Clone)]
pub struct ApiError {
    pub status: StatusCode,
    pub code: &'static str,
    pub message: String,
    pub details: Value,
    /// Headers the error carries (`Retry-After`, `X-RateLimit-*`).
    pub headers: Vec<(&'static str, HeaderValue)>,
}

impl ApiError {
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self {
            status,
            code,
            message: message.into(),
            details: json!({}),
            headers: Vec::new(),
        }
    }

    pub fn with_header(mut self, name: &'static str, value: HeaderValue) -> Self {
        self.headers.push((name, value));
        self
    }

    pub fn with_details(mut self, details: Value) -> Self {
        self.details = details;
        self
    }

    /// Adds `details.top_up_url` when there is one (`LEDGER_TOP_UP_URL`).
    fn with_top_up_url(mut self, url: Option<&str>) -> Self {
        if let (Some(url), Some(details)) = (url, self.details.as_object_mut()) {
            details.insert("top_up_url".into(), Value::String(url.to_owned()));
        }
        self
    }

    /// A field that failed validation: 422 naming the field.
    pub fn invalid_field(code: &'static str, field: &InvalidField) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, field.to_string())
            .with_details(json!({"field": field.field, "reason": field.reason}))
    }

    pub fn unauthorized(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthorized", message)
    }

    pub fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }

    pub fn internal() -> Self {
        Self::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the ledger hit an unexpected error; the error was logged",
        )
    }

    /// The error a bare status (from a layer or the router) stands for, in our shape.
    pub fn for_status(status: StatusCode) -> Self {
        let (code, message) = match status {
            StatusCode::NOT_FOUND => ("not_found", "no such route"),
            StatusCode::METHOD_NOT_ALLOWED => (
                "method_not_allowed",
                "this route does not accept that method",
            ),
            StatusCode::PAYLOAD_TOO_LARGE => (
                "payload_too_large",
                "the request body is larger than 64 KiB",
            ),
            StatusCode::REQUEST_TIMEOUT | StatusCode::SERVICE_UNAVAILABLE => (
                "unavailable",
                "the request did not finish in time and its effect is unknown; \
                 retry it with the same Idempotency-Key",
            ),
            StatusCode::UNSUPPORTED_MEDIA_TYPE => {
                ("unsupported_media_type", "the request body must be JSON")
            }
            s if s.is_server_error() => ("internal_error", "the ledger hit an unexpected error"),
            _ => ("bad_request", "the request could not be understood"),
        };
        Self::new(status, code, message)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let body =
            json!({"error": {"code": self.code, "message": self.message, "details": self.details}});
        let mut response = (self.status, axum::Json(body)).into_response();
        for (name, value) in self.headers {
            response.headers_mut().insert(name, value);
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response
                .headers_mut()
                .insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

/// "1 credit", "30 credits".
fn credits(n: i64) -> String {
    if n == 1 {
        "1 credit".to_owned()
    } else {
        format!("{n} credits")
    }
}

fn exhausted_message(e: &Exhausted) -> String {
    let what = match &e.operation {
        Some(op) => format!(" for {op}"),
        None => String::new(),
    };
    let noun = if e.required == 1 { "credit" } else { "credits" };
    let unit = if e.pool.as_str() == DEFAULT_POOL {
        noun.to_owned()
    } else {
        format!("{} {noun}", e.pool)
    };
    // What the customer can still spend: the balance plus any overage headroom left.
    let spendable = e.available.saturating_add(e.overage_limit);
    let left = match (spendable > 0, e.overage_limit > 0) {
        (true, false) => format!("has {spendable} left"),
        (true, true) => format!("has {spendable} left including overage"),
        (false, _) => "has none left".to_owned(),
    };
    let at = e.reset_at.to_rfc3339_opts(SecondsFormat::AutoSi, true);
    if let Some(cap) = &e.key_cap {
        return format!(
            "Key {} needs {} {unit}{what} but has used {} of its {} cap this period in shared \
             account {}; its cap resets at {at}.",
            cap.member_key_id, e.required, cap.key_used, cap.cap, e.key_id
        );
    }
    // What comes back, and what can be bought now: the two ways out.
    let back = match &e.next_allowance {
        Some(next) if next.amount > 0 => format!("{} come back at {at}", next.amount),
        _ => format!("credits reset at {at}"),
    };
    let mut sizes: Vec<i64> = e.packs.iter().map(|p| p.credits).collect();
    sizes.sort_unstable();
    sizes.dedup();
    let packs = match sizes.as_slice() {
        [] => String::new(),
        [one] => format!("; a {one}-credit pack is available"),
        many => {
            let listed: Vec<String> = many.iter().map(i64::to_string).collect();
            format!("; packs of {} credits are available", listed.join(", "))
        }
    };
    format!(
        "Key {} needs {} {unit}{what} but {left}; {back}{packs}.",
        e.key_id, e.required
    )
}

impl From<LedgerError> for ApiError {
    fn from(err: LedgerError) -> Self {
        match err {
            LedgerError::PlanNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "plan_not_found",
                format!("plan {id} does not exist"),
            )
            .with_details(json!({"plan_id": id})),
            LedgerError::AccountNotFound(key_id) => Self::new(
                StatusCode::NOT_FOUND,
                "account_not_found",
                format!("no account for key {key_id}; create it with PUT /v1/accounts/{key_id}"),
            )
            .with_details(json!({"key_id": key_id})),
            LedgerError::MemberNotFound {
                key_id,
                member_key_id,
            } => Self::new(
                StatusCode::NOT_FOUND,
                "member_not_found",
                format!(
                    "key {member_key_id} is not a member of account {key_id}; add it with \
                     PUT /v1/accounts/{key_id}/members/{member_key_id}"
                ),
            )
            .with_details(json!({"key_id": key_id, "member_key_id": member_key_id})),
            LedgerError::GrantNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "grant_not_found",
                format!("grant {id} does not exist"),
            )
            .with_details(json!({"grant_id": id})),
            LedgerError::DebitNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "debit_not_found",
                format!("debit {id} does not exist"),
            )
            .with_details(json!({"debit_id": id})),
            LedgerError::ReservationNotFound(id) => Self::new(
                StatusCode::NOT_FOUND,
                "reservation_not_found",
                format!("reservation {id} does not exist"),
            )
            .with_details(json!({"reservation_id": id})),
            LedgerError::ReservationNotActive { id, status } => Self::new(
                StatusCode::CONFLICT,
                "reservation_not_active",
                format!("reservation {id} is {status}; only an active reservation can be committed or released"),
            )
            .with_details(json!({"reservation_id": id, "status": status})),
            LedgerError::AmountExceedsReservation { requested, held } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "amount_exceeds_reservation",
                format!(
                    "cannot commit {}: the reservation holds {held}",
                    credits(requested)
                ),
            )
            .with_details(json!({"field": "amount", "requested": requested, "held": held})),
            LedgerError::RefundExceedsDebit {
                cost,
                refunded,
                requested,
            } => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "refund_exceeds_debit",
                format!(
                    "cannot refund {}: the debit cost {cost} and {refunded} \
                     were refunded already, so {} can still be refunded",
                    credits(requested),
                    cost - refunded
                ),
            )
            .with_details(json!({"field": "amount", "cost": cost, "refunded": refunded,
                                 "requested": requested, "refundable": cost - refunded})),
            LedgerError::Unprocessable { code, message } => {
                Self::new(StatusCode::UNPROCESSABLE_ENTITY, code, message)
            }
            LedgerError::UnknownPack { pack, known } => {
                let known: Vec<&str> = known.iter().map(|p| p.as_str()).collect();
                let offer = if known.is_empty() {
                    "the plan sells no packs".to_owned()
                } else {
                    format!("the plan sells {}", known.join(", "))
                };
                Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_pack",
                    format!("pack {pack} is not in the catalogue of the account's plan; {offer}"),
                )
                .with_details(json!({"field": "pack", "pack": pack, "known": known}))
            }
            LedgerError::InvalidPlan(field) => Self::invalid_field("invalid_plan", &field),
            LedgerError::Invalid(field) => Self::invalid_field("invalid_request", &field),
            LedgerError::Price(price) => match &price {
                PriceError::UnknownOperation { operation, known } => Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_operation",
                    price.to_string(),
                )
                .with_details(json!({"field": "operation", "operation": operation,
                                     "known": known})),
                PriceError::UnknownPool(pool) => Self::new(
                    StatusCode::UNPROCESSABLE_ENTITY,
                    "unknown_pool",
                    price.to_string(),
                )
                .with_details(json!({"field": "pool", "pool": pool})),
                PriceError::PoolMismatch { .. } => Self::invalid_field(
                    "invalid_request",
                    &InvalidField::new("pool", price.to_string()),
                ),
                PriceError::CostTooLarge { .. } => Self::invalid_field(
                    "invalid_request",
                    &InvalidField::new("quantity", price.to_string()),
                ),
                PriceError::NothingToPrice => Self::invalid_field(
                    "invalid_request",
                    &InvalidField::new("operation", "is required unless cost is given"),
                ),
            },
            LedgerError::CreditsExhausted(e) => Self::new(
                StatusCode::PAYMENT_REQUIRED,
                "credits_exhausted",
                exhausted_message(&e),
            )
            .with_details(json!({
                "key_id": e.key_id,
                "pool": e.pool,
                "operation": e.operation,
                "required": e.required,
                "available": e.available,
                "allowed": e.allowed,
                "used": e.used,
                "overage_limit": e.overage_limit,
                "reset_at": e.reset_at,
                "grants": e.grants,
                "next_allowance": e.next_allowance,
                "packs": e.packs,
                "reason": if e.key_cap.is_some() { "key_cap" } else { "balance" },
                "cap": e.key_cap.as_ref().map(|c| c.cap),
                "key_used": e.key_cap.as_ref().map(|c| c.key_used),
            }))
            .with_top_up_url(e.top_up_url.as_deref()),
            LedgerError::IdempotencyKeyReused => Self::new(
                StatusCode::CONFLICT,
                "idempotency_key_reused",
                "this Idempotency-Key was already used with different parameters; \
                 use a new key for a new request",
            ),
            LedgerError::Conflict { code, message } => {
                Self::new(StatusCode::CONFLICT, code, message)
            }
            LedgerError::OutOfRange(message) => Self::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "amount_out_of_range",
                "the amounts in this request would exceed the ledger's numeric range",
            )
            .with_details(json!({"reason": message})),
            LedgerError::Corrupt(what) => {
                tracing::error!(error = %what, "the ledger's state is inconsistent");
                Self::internal()
            }
        }
    }
}

impl From<ServiceError> for ApiError {
    fn from(err: ServiceError) -> Self {
        match err {
            ServiceError::Ledger(err) => err.into(),
            other => Self::from_storage(&other),
        }
    }
}

impl ApiError {
    /// Storage failing: 503 when the database is out of reach (retry with the same
    /// Idempotency-Key), else 500 with the details logged, not sent.
    fn from_storage(err: &ServiceError) -> Self {
        let unavailable = || {
            Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_unavailable",
                "the ledger's database is unavailable; retry shortly with the same Idempotency-Key",
            )
        };
        match err {
            ServiceError::Expired => Self::new(
                StatusCode::SERVICE_UNAVAILABLE,
                "database_timeout",
                "the ledger was too busy to begin this write in time; nothing was applied; retry with the same Idempotency-Key",
            ),
            err if err.is_timeout() => {
                tracing::warn!(error = %err, "database timeout");
                Self::new(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "database_timeout",
                    "the database did not finish in time (an account stayed locked, or a statement ran too long); nothing was applied; retry with the same Idempotency-Key",
                )
            }
            ServiceError::Database(db) if is_unavailable(db) => {
                tracing::warn!(error = %db, "database unavailable");
                unavailable()
            }
            ServiceError::Unavailable(what) => {
                tracing::warn!(error = %what, "ledger unavailable");
                unavailable()
            }
            ServiceError::Batch(inner) => Self::from_storage(inner),
            ServiceError::Ledger(LedgerError::Corrupt(what)) | ServiceError::Corrupt(what) => {
                tracing::error!(error = %what, "stored data is inconsistent");
                Self::internal()
            }
            other => {
                tracing::error!(error = %other, "storage error");
                Self::internal()
            }
        }
    }
}

fn is_unavailable(err: &sqlx::Error) -> bool {
    matches!(
        err,
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_)
    ) || matches!(err, sqlx::Error::Database(db)
        if db.code().is_some_and(|c| c.starts_with("57P") || c.starts_with("08")))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::types::{KeyId, PoolName};
    use chrono::{TimeZone, Utc};

    #[test]
    fn the_exhausted_message_tells_the_customer_what_and_when() {
        let e = Exhausted {
            key_id: KeyId::parse("key_id", "key_123").unwrap(),
            pool: PoolName::default_pool(),
            operation: Some("image.generate".into()),
            required: 30,
            available: 12,
            allowed: Some(10000),
            used: 9988,
            overage_limit: 0,
            period_start: Utc.with_ymd_and_hms(2026, 11, 1, 0, 0, 0).unwrap(),
            reset_at: Utc.with_ymd_and_hms(2026, 12, 1, 0, 0, 0).unwrap(),
            grants: Vec::new(),
            next_allowance: None,
            packs: Vec::new(),
            top_up_url: None,
            key_cap: None,
        };
        assert_eq!(
            exhausted_message(&e),
            "Key key_123 needs 30 credits for image.generate but has 12 left; \
             credits reset at 2026-12-01T00:00:00Z."
        );
        let with_allowance = Exhausted {
            next_allowance: Some(crate::ledger::model::NextAllowance {
                amount: 10000,
                at: e.reset_at,
            }),
            ..e.clone()
        };
        assert_eq!(
            exhausted_message(&with_allowance),
            "Key key_123 needs 30 credits for image.generate but has 12 left; \
             10000 come back at 2026-12-01T00:00:00Z."
        );
        let pack = |credits| crate::ledger::model::PackOffer {
            id: crate::ledger::types::PackId::parse("pack", &format!("p{credits}")).unwrap(),
            credits,
            price: None,
            expires_in_days: None,
        };
        let one_pack = Exhausted {
            packs: vec![pack(5000)],
            ..with_allowance.clone()
        };
        assert_eq!(
            exhausted_message(&one_pack),
            "Key key_123 needs 30 credits for image.generate but has 12 left; \
             10000 come back at 2026-12-01T00:00:00Z; a 5000-credit pack is available."
        );
        let two_packs = Exhausted {
            packs: vec![pack(5000), pack(500)],
            ..with_allowance
        };
        assert!(
            exhausted_message(&two_packs).ends_with("; packs of 500, 5000 credits are available.")
        );
    }
}
