//! Bearer-token roles. Tokens are compared as SHA-256 digests in constant time.

use axum::extract::FromRequestParts;
use axum::http::header::AUTHORIZATION;
use axum::http::request::Parts;
use sha2::{Digest, Sha256};
use subtle::ConstantTimeEq;

use crate::app::AppState;
use crate::error::ApiError;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    Admin,
    Service,
}

/// The configured tokens, kept only as digests.
#[derive(Clone, Default)]
pub struct Tokens {
    admin: Vec<[u8; 32]>,
    service: Vec<[u8; 32]>,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

fn contains(set: &[[u8; 32]], candidate: &[u8; 32]) -> bool {
    // Look at every token so the time taken does not tell which one matched.
    set.iter().fold(false, |found, t| {
        found | bool::from(t.as_slice().ct_eq(candidate.as_slice()))
    })
}

impl Tokens {
    pub fn new(admin: &[String], service: &[String]) -> Self {
        Tokens {
            admin: admin.iter().map(|t| digest(t)).collect(),
            service: service.iter().map(|t| digest(t)).collect(),
        }
    }

    pub fn role_of(&self, token: &str) -> Option<Role> {
        let candidate = digest(token);
        if contains(&self.admin, &candidate) {
            Some(Role::Admin)
        } else if contains(&self.service, &candidate) {
            Some(Role::Service)
        } else {
            None
        }
    }
}

/// The bearer token of a request, if it has one.
pub fn bearer(parts: &Parts) -> Option<&str> {
    let value = parts.headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.split_once(' ')?;
    scheme
        .eq_ignore_ascii_case("bearer")
        .then(|| token.trim())
        .filter(|t| !t.is_empty())
}

fn role(parts: &Parts, state: &AppState) -> Result<Role, ApiError> {
    let token = bearer(parts).ok_or_else(|| {
        ApiError::unauthorized("send an admin or service token as 'Authorization: Bearer <token>'")
    })?;
    state.tokens.role_of(token).ok_or_else(|| {
        ApiError::unauthorized("the bearer token is not a known admin or service token")
    })
}

/// An admin token: may do everything.
#[derive(Debug, Clone, Copy)]
pub struct Admin;

impl FromRequestParts<AppState> for Admin {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        match role(parts, state)? {
            Role::Admin => Ok(Admin),
            Role::Service => Err(ApiError::forbidden(
                "this route needs an admin token; a service token may debit and read",
            )),
        }
    }
}

/// A service or admin token: may debit, reserve, commit, release, verify and read.
#[derive(Debug, Clone, Copy)]
pub struct Service(pub Role);

impl FromRequestParts<AppState> for Service {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, ApiError> {
        role(parts, state).map(Service)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn roles_come_from_the_configured_tokens() {
        let tokens = Tokens::new(&["adm".into()], &["svc".into(), "svc2".into()]);
        assert_eq!(tokens.role_of("adm"), Some(Role::Admin));
        assert_eq!(tokens.role_of("svc2"), Some(Role::Service));
        assert_eq!(tokens.role_of("nope"), None);
        assert_eq!(tokens.role_of(""), None);
    }
}
