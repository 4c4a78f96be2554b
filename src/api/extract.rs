//! Extractors whose rejections are our error shape, so that bad input always gets a 4xx that
//! names the problem.

use axum::body::Bytes;
use axum::extract::{FromRequest, FromRequestParts, Request};
use axum::http::request::Parts;
use axum::http::StatusCode;
use serde::de::DeserializeOwned;
use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use super::strict::{Checked, ShapeError, Source, Strict};
use crate::error::ApiError;

/// The largest request body the API reads.
pub const BODY_LIMIT: usize = 64 * 1024;

/// A JSON body: `.0` the typed value, `.1` the raw JSON it came from (for idempotency hashes).
/// Malformed JSON is a 400 `invalid_json`; a well-formed body of the wrong shape (unknown field,
/// wrong type, missing field) is a 422 `invalid_request` naming the field.
#[derive(Debug)]
pub struct AppJson<T>(pub T, pub Value);

impl<S, T> FromRequest<S> for AppJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                "the request body is empty; send a JSON object",
            ));
        }
        json?;
        parse_body(&bytes)
    }
}

/// A JSON body that may be left out: an empty body is `T::default()`.
#[derive(Debug)]
pub struct OptionalJson<T>(pub T);

impl<S, T> FromRequest<S> for OptionalJson<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Default,
{
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &S) -> Result<Self, ApiError> {
        let json = is_json(&req);
        let bytes = read_body(req, state).await?;
        if bytes.iter().all(u8::is_ascii_whitespace) {
            return Ok(OptionalJson(T::default()));
        }
        json?;
        parse_body(&bytes).map(|AppJson(value, _)| OptionalJson(value))
    }
}

/// A body is read only if its `Content-Type` says JSON (`application/json`, or any `+json`
/// type), with any parameters: anything else is a 415.
fn is_json(req: &Request) -> Result<(), ApiError> {
    let media_type = req
        .headers()
        .get(axum::http::header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .map(|v| v.trim().to_ascii_lowercase());
    match media_type {
        Some(t) if t == "application/json" || (t.starts_with("application/") && t.ends_with("+json")) => {
            Ok(())
        }
        other => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            match other {
                Some(t) => format!("the request body is {t}; send JSON with Content-Type: application/json"),
                None => "the request body has no Content-Type; send JSON with Content-Type: application/json".to_owned(),
            },
        )),
    }
}

async fn read_body<S: Send + Sync>(req: Request, state: &S) -> Result<Bytes, ApiError> {
    Bytes::from_request(req, state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::for_status(StatusCode::PAYLOAD_TOO_LARGE)
                .with_details(json!({"limit_bytes": BODY_LIMIT}))
        } else {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_body",
                format!("the request body could not be read: {rejection}"),
            )
        }
    })
}

fn parse_body<T: DeserializeOwned>(bytes: &[u8]) -> Result<AppJson<T>, ApiError> {
    let mut reader = serde_json::Deserializer::from_slice(bytes);
    let raw = match serde_path_to_error::deserialize(&mut reader) {
        Ok(Checked(raw)) => raw,
        // Well-formed JSON holding something no request may: a NUL, a key given twice.
        Err(err) if err.inner().is_data() => return Err(checked_error(err)),
        Err(err) => {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_json",
                format!("the request body is not valid JSON: {}", err.inner()),
            ))
        }
    };
    reader.end().map_err(|e| {
        ApiError::new(
            StatusCode::BAD_REQUEST,
            "invalid_json",
            format!("the request body is not valid JSON: {e}"),
        )
    })?;
    let typed = parse_value(&raw)?;
    Ok(AppJson(typed, raw))
}

/// Deserializes a JSON value into `T`, naming the field that did not fit. A struct is read only
/// from an object, and an integer also from a whole float (`652.0`).
pub fn parse_value<T: DeserializeOwned>(raw: &Value) -> Result<T, ApiError> {
    serde_path_to_error::deserialize(Strict::json(raw)).map_err(|err| {
        shape_error(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_request",
            Source::Body,
            err,
        )
    })
}

/// A 4xx naming the field (or parameter) where `err` happened and saying what it must be:
/// `{"field": "quantity", "reason": "must be a whole number, got 1.5"}`.
fn shape_error(
    status: StatusCode,
    code: &'static str,
    source: Source,
    err: serde_path_to_error::Error<ShapeError>,
) -> ApiError {
    let field = err.inner().field(&err.path().to_string());
    let reason = err.inner().reason(source);
    invalid(status, code, field, reason)
}

fn invalid(status: StatusCode, code: &'static str, field: String, reason: String) -> ApiError {
    let message = if field == "." {
        format!("the body {reason}")
    } else {
        format!("{field} {reason}")
    };
    ApiError::new(status, code, message).with_details(json!({"field": field, "reason": reason}))
}

/// A 422 for what `Checked` refuses in the text (a NUL, a key given twice), naming the field.
fn checked_error(err: serde_path_to_error::Error<serde_json::Error>) -> ApiError {
    let position = format!(
        " at line {} column {}",
        err.inner().line(),
        err.inner().column()
    );
    let inner = err.inner().to_string();
    // The field is named; where it sits in the text adds nothing.
    let reason = inner.strip_suffix(&position).unwrap_or(&inner).to_owned();
    invalid(
        StatusCode::UNPROCESSABLE_ENTITY,
        "invalid_request",
        err.path().to_string(),
        reason,
    )
}

/// Path parameters with our error shape.
#[derive(Debug)]
pub struct AppPath<T>(pub T);

impl<S, T> FromRequestParts<S> for AppPath<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &S) -> Result<Self, ApiError> {
        axum::extract::Path::<T>::from_request_parts(parts, state)
            .await
            .map(|axum::extract::Path(value)| AppPath(value))
            .map_err(|rejection| {
                ApiError::new(
                    StatusCode::BAD_REQUEST,
                    "invalid_path",
                    format!("the URL path is not valid: {rejection}"),
                )
            })
    }
}

/// Query parameters with our error shape.
#[derive(Debug)]
pub struct AppQuery<T>(pub T);

impl<S, T> FromRequestParts<S> for AppQuery<T>
where
    S: Send + Sync,
    T: DeserializeOwned + Send,
{
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        parse_query(parts.uri.query().unwrap_or_default()).map(AppQuery)
    }
}

/// Reads a query string into `T`: a `400 invalid_query` naming the parameter otherwise.
pub fn parse_query<T: DeserializeOwned>(query: &str) -> Result<T, ApiError> {
    let refuse = |field: &str, reason: &str| {
        invalid(
            StatusCode::BAD_REQUEST,
            "invalid_query",
            field.to_owned(),
            reason.to_owned(),
        )
    };
    let mut params = serde_json::Map::new();
    for (name, value) in url::form_urlencoded::parse(query.as_bytes()) {
        if params.contains_key(name.as_ref()) {
            return Err(refuse(&name, "is given twice; give each parameter once"));
        }
        if name.contains('\0') || value.contains('\0') {
            return Err(refuse(&name, "contains a NUL character (%00)"));
        }
        params.insert(name.into_owned(), Value::String(value.into_owned()));
    }
    let params = Value::Object(params);
    serde_path_to_error::deserialize(Strict::text(&params))
        .map_err(|err| shape_error(StatusCode::BAD_REQUEST, "invalid_query", Source::Query, err))
}

/// The `Idempotency-Key` header, if sent: 1 to 255 visible ASCII characters.
#[derive(Debug, Clone)]
pub struct IdempotencyKey(pub Option<String>);

pub const IDEMPOTENCY_KEY_MAX: usize = 255;

impl<S: Send + Sync> FromRequestParts<S> for IdempotencyKey {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, _state: &S) -> Result<Self, ApiError> {
        let Some(value) = parts.headers.get("idempotency-key") else {
            return Ok(IdempotencyKey(None));
        };
        let invalid = || {
            ApiError::new(
                StatusCode::BAD_REQUEST,
                "invalid_idempotency_key",
                format!(
                    "Idempotency-Key must be 1 to {IDEMPOTENCY_KEY_MAX} visible ASCII characters"
                ),
            )
        };
        let key = value.to_str().map_err(|_| invalid())?;
        if key.is_empty()
            || key.len() > IDEMPOTENCY_KEY_MAX
            || !key.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid());
        }
        Ok(IdempotencyKey(Some(key.to_owned())))
    }
}

/// The hash that ties an idempotency key to its request: the route and the body with object keys
/// in a canonical order, so that reordered fields are the same request.
pub fn request_hash(route: &str, body: &Value) -> String {
    let mut canonical = String::new();
    write_canonical(body, &mut canonical);
    let mut hasher = Sha256::new();
    hasher.update(route.as_bytes());
    hasher.update([0]);
    hasher.update(canonical.as_bytes());
    hex::encode(hasher.finalize())
}

fn write_canonical(value: &Value, out: &mut String) {
    match value {
        Value::Object(map) => {
            let mut keys: Vec<&String> = map.keys().collect();
            keys.sort();
            out.push('{');
            for (i, key) in keys.into_iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push_str(&Value::String(key.clone()).to_string());
                out.push(':');
                write_canonical(&map[key], out);
            }
            out.push('}');
        }
        Value::Array(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_canonical(item, out);
            }
            out.push(']');
        }
        other => out.push_str(&other.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_hash_ignores_key_order_but_not_values_or_routes() {
        let a = json!({"operation": "search", "quantity": 2, "metadata": {"x": 1, "y": 2}});
        let b = json!({"metadata": {"y": 2, "x": 1}, "quantity": 2, "operation": "search"});
        let c = json!({"operation": "search", "quantity": 3, "metadata": {"x": 1, "y": 2}});
        assert_eq!(request_hash("debit", &a), request_hash("debit", &b));
        assert_ne!(request_hash("debit", &a), request_hash("debit", &c));
        assert_ne!(request_hash("debit", &a), request_hash("grant", &a));
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        quantity: i64,
    }

    #[derive(Debug, serde::Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        inner: Inner,
    }

    #[test]
    fn shape_errors_name_the_field() {
        let err = parse_value::<Outer>(&json!({"inner": {"quantity": "x"}})).unwrap_err();
        assert_eq!(err.details["field"], "inner.quantity");
        let err = parse_value::<Outer>(&json!({"inner": {"quantity": 1, "extra": 2}})).unwrap_err();
        assert_eq!(err.details["field"], "inner.extra");
        let err = parse_value::<Outer>(&json!({})).unwrap_err();
        assert_eq!(err.details["field"], "inner");
    }
}
