//! Idempotent creating POSTs: the key with the hash of the request as the ledger understood it,
//! and the rendering of a new answer or a replayed one.

use axum::http::{HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::Value;

use super::debits::IDEMPOTENT_REPLAYED;
use super::extract::request_hash;
use crate::error::ApiError;
use crate::ledger::command::Idempotency;
use crate::service::Outcome;

/// Renders an idempotent outcome: the new value, or the stored answer replayed through the same
/// type so that it is the same body.
pub fn render<T: Serialize + DeserializeOwned>(
    outcome: Outcome<T>,
    status: StatusCode,
) -> Result<Response, ApiError> {
    match outcome {
        Outcome::Done(value) => Ok((status, Json(value)).into_response()),
        Outcome::Replayed(body) => {
            let value: T = serde_json::from_value(body).map_err(|e| {
                tracing::error!(error = %e, "stored response does not decode");
                ApiError::internal()
            })?;
            let mut response = (status, Json(value)).into_response();
            response
                .headers_mut()
                .insert(IDEMPOTENT_REPLAYED, HeaderValue::from_static("true"));
            Ok(response)
        }
    }
}

pub(crate) fn idempotency(
    key: Option<String>,
    route: &str,
    request: &Value,
) -> Option<Idempotency> {
    key.map(|key| Idempotency {
        key,
        request_hash: request_hash(route, request),
    })
}
