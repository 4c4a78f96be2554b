//! The gate in front of the ledger for customers' own API keys: verify the key with Unkey, apply
//! the plan's burst limits through Unkey, then debit the key's account (`/v1/verify`), or show a
//! key its own data (`/v1/me/*`). Unkey refusing means the ledger is not touched; Unkey being
//! unreachable, slow or failing means no answer but 503 (fail closed).

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use sha2::{Digest, Sha256};

use crate::ledger::command::Idempotency;
use crate::ledger::debit::DebitRequest;
use crate::ledger::model::Debit;
use crate::ledger::plan::Plan;
use crate::ledger::types::{KeyId, PlanId};
use crate::ledger::LedgerError;
use crate::service::{Ledger, Outcome, ServiceError};
use crate::unkey::{
    Credits, KeyRatelimit, RatelimitRequest, UnkeyClient, UnkeyError, UnkeySettings, VerifyKeyData,
    VerifyKeyRequest, NAMESPACE,
};

/// A key Unkey says is valid, with what the ledger needs from it.
#[derive(Debug, Clone)]
pub struct VerifiedKey {
    pub key_id: KeyId,
    /// The Unkey identity's `externalId`: the customer, whose shared account the key may use.
    pub external_id: Option<String>,
    /// `meta.plan`: the plan an unknown key is provisioned on.
    pub plan: Option<String>,
    /// `meta.billing_cycle_start` (RFC 3339, or epoch milliseconds): the new account's anchor.
    pub billing_cycle_start: Option<DateTime<Utc>>,
    /// The key's own (auto-applied) limits as Unkey reported them.
    pub ratelimits: Vec<KeyRatelimit>,
}

/// Where a rate limit stands after this call: for the `X-RateLimit-*` headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateState {
    pub limit: i64,
    pub remaining: i64,
    /// Epoch milliseconds.
    pub reset_ms: i64,
}

#[derive(Debug)]
pub struct Verified {
    pub key_id: KeyId,
    /// The account debited: the key's own, or its customer's shared account.
    pub account: KeyId,
    pub debit: Outcome<Debit>,
    pub ratelimit: Option<RateState>,
}

#[derive(Debug, thiserror::Error)]
pub enum GateError {
    #[error("UNKEY_ROOT_KEY is not set")]
    NotConfigured,
    #[error("Unkey refused the key: {code}")]
    InvalidKey { code: String },
    #[error("rate limited")]
    RateLimited(Option<RateState>),
    #[error("Unkey reports the key's usage exceeded")]
    UsageExceeded { key_id: Option<String> },
    #[error("key {key_id} has no plan")]
    NoPlan {
        key_id: KeyId,
        named: Option<String>,
    },
    #[error("Unkey is unavailable: {0}")]
    Unavailable(String),
    #[error(transparent)]
    Ledger(#[from] ServiceError),
}

impl From<UnkeyError> for GateError {
    fn from(err: UnkeyError) -> Self {
        GateError::Unavailable(err.to_string())
    }
}

pub struct Gate {
    client: UnkeyClient,
    /// The most one request waits on Unkey (`UNKEY_BUDGET_MS`).
    budget: Duration,
    /// Positive verifications for `/v1/me/*`, by SHA-256 of the key (never the key itself).
    cache: Option<moka::sync::Cache<[u8; 32], Arc<VerifiedKey>>>,
    default_plan: Option<PlanId>,
}

impl std::fmt::Debug for Gate {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gate")
            .field("client", &self.client)
            .field("default_plan", &self.default_plan)
            .finish_non_exhaustive()
    }
}

fn parse_anchor(value: &serde_json::Value) -> Option<DateTime<Utc>> {
    match value {
        serde_json::Value::String(s) => DateTime::parse_from_rfc3339(s)
            .ok()
            .map(|t| t.with_timezone(&Utc)),
        serde_json::Value::Number(n) => n
            .as_i64()
            .and_then(|ms| Utc.timestamp_millis_opt(ms).single()),
        _ => None,
    }
}

/// Unkey's verdict, as the ledger sees it.
fn judge(data: VerifyKeyData) -> Result<VerifiedKey, GateError> {
    if !data.valid || data.code != "VALID" {
        return Err(match data.code.as_str() {
            "RATE_LIMITED" => {
                let exceeded = data
                    .ratelimits
                    .unwrap_or_default()
                    .into_iter()
                    .filter(|r| r.exceeded == Some(true))
                    .max_by_key(|r| r.reset.unwrap_or(0));
                GateError::RateLimited(exceeded.map(|r| RateState {
                    limit: r.limit.unwrap_or(0),
                    remaining: r.remaining.unwrap_or(0),
                    reset_ms: r.reset.unwrap_or(0),
                }))
            }
            "USAGE_EXCEEDED" => GateError::UsageExceeded {
                key_id: data.key_id,
            },
            // NOT_FOUND, DISABLED, EXPIRED, FORBIDDEN, INSUFFICIENT_PERMISSIONS, and any code
            // this version does not know: a refusal.
            code => GateError::InvalidKey {
                code: code.to_owned(),
            },
        });
    }
    let key_id = data
        .key_id
        .ok_or_else(|| GateError::Unavailable("Unkey answered VALID without a keyId".into()))
        .and_then(|k| {
            KeyId::try_from(k).map_err(|e| {
                GateError::Unavailable(format!("Unkey answered a keyId the ledger cannot use: {e}"))
            })
        })?;
    let meta = data.meta.unwrap_or_default();
    Ok(VerifiedKey {
        key_id,
        external_id: data.identity.and_then(|i| i.external_id),
        plan: meta.get("plan").and_then(|p| p.as_str()).map(str::to_owned),
        billing_cycle_start: meta.get("billing_cycle_start").and_then(parse_anchor),
        ratelimits: data.ratelimits.unwrap_or_default(),
    })
}

fn key_hash(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

impl Gate {
    pub fn new(
        settings: &UnkeySettings,
        key_cache: Duration,
        default_plan: Option<PlanId>,
    ) -> Result<Self, reqwest::Error> {
        let cache = (!key_cache.is_zero()).then(|| {
            moka::sync::Cache::builder()
                .max_capacity(100_000)
                .time_to_live(key_cache)
                .build()
        });
        Ok(Gate {
            client: UnkeyClient::new(settings)?,
            budget: settings.budget,
            cache,
            default_plan,
        })
    }

    async fn verify(&self, key: &str) -> Result<VerifiedKey, GateError> {
        let data = self
            .client
            .verify_key(&VerifyKeyRequest {
                key: key.to_owned(),
                credits: Credits { cost: 0 },
                ratelimits: None,
            })
            .await?;
        judge(data)
    }

    /// Runs a step that waits on Unkey within what is left of the request's budget; past it the
    /// answer is 503 `auth_unavailable` (fail closed).
    async fn within_budget<T>(
        &self,
        started: tokio::time::Instant,
        step: impl std::future::Future<Output = Result<T, GateError>>,
    ) -> Result<T, GateError> {
        let left = self.budget.saturating_sub(started.elapsed());
        tokio::time::timeout(left, step).await.unwrap_or_else(|_| {
            Err(GateError::Unavailable(
                "Unkey took longer than UNKEY_BUDGET_MS".into(),
            ))
        })
    }

    /// Verifies a customer's key for reading its own data, spending nothing. Positive answers
    /// are reused for a short while (`LEDGER_KEY_CACHE_SECS`).
    pub async fn identify(&self, key: &str) -> Result<Arc<VerifiedKey>, GateError> {
        let hash = key_hash(key);
        if let Some(hit) = self.cache.as_ref().and_then(|c| c.get(&hash)) {
            return Ok(hit);
        }
        let started = tokio::time::Instant::now();
        let verified = Arc::new(self.within_budget(started, self.verify(key)).await?);
        if let Some(cache) = &self.cache {
            cache.insert(hash, Arc::clone(&verified));
        }
        Ok(verified)
    }

    /// The account a verified key reads or spends: the shared account it is a member of (by
    /// registration, or through its Unkey identity), else its own.
    pub async fn account_of(&self, ledger: &Ledger, key: &VerifiedKey) -> Result<KeyId, GateError> {
        let shared = ledger
            .shared_account_for(&key.key_id, key.external_id.as_deref())
            .await?;
        Ok(shared.unwrap_or_else(|| key.key_id.clone()))
    }

    /// `/v1/verify`: verify, rate-limit, then debit.
    pub async fn verify_and_debit(
        &self,
        ledger: &Ledger,
        key: &str,
        mut request: DebitRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Verified, GateError> {
        let started = tokio::time::Instant::now();
        let verified = self.within_budget(started, self.verify(key)).await?;
        let account = self.account_of(ledger, &verified).await?;

        // The plan decides the burst limits; a new key's plan comes from its Unkey meta.
        let (plan, provision) = match ledger.plan_of(&account).await? {
            Some(plan) => (plan, None),
            None => {
                let plan = self.plan_for_new(ledger, &verified).await?;
                let id = plan.id.clone();
                (plan, Some(id))
            }
        };
        let ratelimit = self
            .within_budget(started, self.apply_ratelimits(&verified, &plan))
            .await?;

        if let Some(plan_id) = provision {
            ledger
                .provision(&account, &plan_id, verified.billing_cycle_start)
                .await
                .map_err(|err| match err {
                    ServiceError::Ledger(LedgerError::PlanNotFound(_)) => GateError::NoPlan {
                        key_id: verified.key_id.clone(),
                        named: Some(plan_id.to_string()),
                    },
                    other => GateError::Ledger(other),
                })?;
            tracing::info!(key_id = %account, plan = %plan_id, "account provisioned");
        }
        request.source_key_id = Some(verified.key_id.to_string());
        let debit = ledger.debit(&account, &request, idempotency).await?;
        Ok(Verified {
            key_id: verified.key_id,
            account,
            debit,
            ratelimit,
        })
    }

    async fn plan_for_new(&self, ledger: &Ledger, key: &VerifiedKey) -> Result<Plan, GateError> {
        let named = key.plan.clone();
        let plan_id = match &named {
            Some(name) => PlanId::parse("meta.plan", name).map_err(|_| GateError::NoPlan {
                key_id: key.key_id.clone(),
                named: named.clone(),
            })?,
            None => self.default_plan.clone().ok_or_else(|| GateError::NoPlan {
                key_id: key.key_id.clone(),
                named: None,
            })?,
        };
        ledger
            .get_plan(&plan_id, None)
            .await
            .map_err(|err| match err {
                ServiceError::Ledger(LedgerError::PlanNotFound(_)) => GateError::NoPlan {
                    key_id: key.key_id.clone(),
                    named: Some(plan_id.to_string()),
                },
                other => GateError::Ledger(other),
            })
    }

    /// The plan's burst limits, counted by Unkey's `ratelimit.limit` per keyId (the same
    /// identifier whichever path a request takes). The tightest limit is reported; without
    /// plan limits, the key's own auto-applied ones from the verification are.
    async fn apply_ratelimits(
        &self,
        key: &VerifiedKey,
        plan: &Plan,
    ) -> Result<Option<RateState>, GateError> {
        let mut tightest: Option<RateState> = None;
        for limit in &plan.ratelimits {
            let answer = self
                .client
                .ratelimit(&RatelimitRequest {
                    namespace: NAMESPACE.to_owned(),
                    identifier: key.key_id.to_string(),
                    limit: limit.limit,
                    duration: limit.duration_ms,
                    cost: 1,
                })
                .await?;
            let state = RateState {
                limit: answer.limit,
                remaining: answer.remaining,
                reset_ms: answer.reset,
            };
            if !answer.success {
                return Err(GateError::RateLimited(Some(state)));
            }
            if tightest.is_none_or(|t| state.remaining < t.remaining) {
                tightest = Some(state);
            }
        }
        if tightest.is_none() {
            tightest = key
                .ratelimits
                .iter()
                .filter_map(|r| {
                    Some(RateState {
                        limit: r.limit?,
                        remaining: r.remaining?,
                        reset_ms: r.reset?,
                    })
                })
                .min_by_key(|r| r.remaining);
        }
        Ok(tightest)
    }
}

/// The debit inside a `/v1/verify` answer, new or replayed.
pub fn debit_of(outcome: &Outcome<Debit>) -> Result<(Debit, bool), serde_json::Error> {
    match outcome {
        Outcome::Done(debit) => Ok((debit.clone(), false)),
        Outcome::Replayed(body) => Ok((serde_json::from_value(body.clone())?, true)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(json: serde_json::Value) -> VerifyKeyData {
        serde_json::from_value(json).unwrap()
    }

    #[test]
    fn a_valid_key_carries_its_plan_anchor_and_customer() {
        let key = judge(data(serde_json::json!({
            "valid": true, "code": "VALID", "keyId": "key_1",
            "meta": {"plan": "pro", "billing_cycle_start": "2026-11-03T00:00:00Z"},
            "identity": {"id": "id_1", "externalId": "org_1"}
        })))
        .unwrap();
        assert_eq!(key.key_id.as_str(), "key_1");
        assert_eq!(key.plan.as_deref(), Some("pro"));
        assert_eq!(key.external_id.as_deref(), Some("org_1"));
        assert_eq!(
            key.billing_cycle_start,
            Some(Utc.with_ymd_and_hms(2026, 11, 3, 0, 0, 0).unwrap())
        );
        let millis = judge(data(serde_json::json!({
            "valid": true, "code": "VALID", "keyId": "key_1",
            "meta": {"billing_cycle_start": 1_767_225_600_000_i64}
        })))
        .unwrap();
        assert_eq!(
            millis.billing_cycle_start,
            Some(Utc.with_ymd_and_hms(2026, 1, 1, 0, 0, 0).unwrap())
        );
    }

    #[test]
    fn every_other_verdict_is_a_refusal() {
        for code in [
            "NOT_FOUND",
            "DISABLED",
            "EXPIRED",
            "FORBIDDEN",
            "INSUFFICIENT_PERMISSIONS",
            "SOMETHING_NEW",
        ] {
            let verdict = judge(data(serde_json::json!({"valid": false, "code": code})));
            assert!(matches!(verdict, Err(GateError::InvalidKey { code: c }) if c == code));
        }
        assert!(matches!(
            judge(data(
                serde_json::json!({"valid": false, "code": "USAGE_EXCEEDED", "keyId": "k"})
            )),
            Err(GateError::UsageExceeded { .. })
        ));
        let limited = judge(data(
            serde_json::json!({"valid": false, "code": "RATE_LIMITED",
            "ratelimits": [{"id": "", "name": "burst", "limit": 10, "duration": 60000,
                            "reset": 1_767_225_600_000_i64, "remaining": 0, "exceeded": true,
                            "autoApply": true}]}),
        ));
        assert!(matches!(
            limited,
            Err(GateError::RateLimited(Some(RateState {
                limit: 10,
                remaining: 0,
                ..
            })))
        ));
        // valid: true with another code, or VALID without a keyId, is not trusted.
        assert!(judge(data(serde_json::json!({"valid": true, "code": "EXPIRED"}))).is_err());
        assert!(matches!(
            judge(data(serde_json::json!({"valid": true, "code": "VALID"}))),
            Err(GateError::Unavailable(_))
        ));
    }
}
