//! Auto top-up: an account's policy asks for a pack of its plan when a change leaves the pack's
//! pool below `below`. The request is made in the transaction of that change, at most one in
//! flight per account and pool and at most `max_per_period` per period; a pack grant into the
//! pool settles it. Who pays (Stripe, or the user's own billing acting on the event) is outside
//! the state machine.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::error::LedgerError;
use super::plan::Plan;
use super::state::AccountState;
use super::types::{check_positive, InvalidField, PackId, PoolName};

pub const REQUESTED: &str = "credits.auto_top_up_requested";
pub const SUCCEEDED: &str = "credits.auto_top_up_succeeded";
pub const FAILED: &str = "credits.auto_top_up_failed";

/// The most requests a policy may allow per period.
pub const MAX_PER_PERIOD: i32 = 100;

/// An account's auto top-up policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AutoTopUp {
    pub pack: PackId,
    /// Ask for the pack when the pool's available credits fall below this.
    pub below: i64,
    pub max_per_period: i32,
}

impl AutoTopUp {
    /// Checks the policy's numbers and that the plan sells the pack.
    pub fn validate(&self, plan: &Plan) -> Result<(), LedgerError> {
        check_positive("auto_top_up.below", self.below)?;
        if !(1..=MAX_PER_PERIOD).contains(&self.max_per_period) {
            return Err(InvalidField::new(
                "auto_top_up.max_per_period",
                format!("must be from 1 to {MAX_PER_PERIOD}"),
            )
            .into());
        }
        if !plan.packs.contains_key(&self.pack) {
            return Err(LedgerError::UnknownPack {
                pack: self.pack.clone(),
                known: plan.packs.keys().cloned().collect(),
            });
        }
        Ok(())
    }
}

/// A request for a pack, as stored (`auto_top_ups`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpRequest {
    pub id: Uuid,
    pub pool: PoolName,
    pub pack: PackId,
    pub credits: i64,
    pub expires_in_days: Option<i32>,
    pub price_amount: Option<i64>,
    pub price_currency: Option<String>,
    pub period_start: DateTime<Utc>,
    pub available: i64,
    pub created_at: DateTime<Utc>,
    /// `requested`, or how it ended when it is settled in the transaction that made it.
    pub status: String,
    pub settled_at: Option<DateTime<Utc>>,
    pub grant_id: Option<Uuid>,
    pub failure: Option<String>,
}

/// The end of a request.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct TopUpSettlement {
    pub id: Uuid,
    pub status: String,
    pub settled_at: DateTime<Utc>,
    pub grant_id: Option<Uuid>,
    pub failure: Option<String>,
}

/// After a change: requests the policy's pack if its pool is now below the threshold, none is
/// in flight for the pool, and the period's requests are not used up.
pub fn check(state: &mut AccountState, now: DateTime<Utc>) -> Result<(), LedgerError> {
    let Some(policy) = state.account.auto_top_up.clone() else {
        return cancel_in_flight(state, "the auto_top_up policy was removed", now);
    };
    // A plan that stopped selling the pack asks for nothing, and what it asked for is off.
    let Some(pack) = state.plan.packs.get(&policy.pack).cloned() else {
        return cancel_in_flight(
            state,
            "the account's plan no longer sells the auto_top_up pack",
            now,
        );
    };
    let Some(counters) = state.pools.get(&pack.pool) else {
        return Ok(());
    };
    if counters.top_up_in_flight.is_some() || counters.top_ups_requested >= policy.max_per_period {
        return Ok(());
    }
    let Some(available) = state.available(&pack.pool, now)? else {
        return Ok(()); // unlimited
    };
    if available >= policy.below {
        return Ok(());
    }
    let request = TopUpRequest {
        id: Uuid::now_v7(),
        pool: pack.pool.clone(),
        pack: policy.pack.clone(),
        credits: pack.credits,
        expires_in_days: pack.expires_in_days,
        price_amount: pack.price.as_ref().map(|p| p.amount),
        price_currency: pack.price.as_ref().map(|p| p.currency.clone()),
        period_start: state.account.period_start,
        available,
        created_at: now,
        status: "requested".into(),
        settled_at: None,
        grant_id: None,
        failure: None,
    };
    let counters = state.pool_mut(&pack.pool)?;
    counters.top_up_in_flight = Some(request.id);
    counters.top_ups_requested += 1;
    let requested = counters.top_ups_requested;
    let key_id = state.key_id().to_string();
    state.emit(
        REQUESTED,
        json!({"key_id": key_id, "request_id": request.id, "pool": request.pool,
               "pack": request.pack, "credits": request.credits, "available": available,
               "below": policy.below, "price": pack.price,
               "requested_this_period": requested, "max_per_period": policy.max_per_period}),
        now,
    );
    state.effects.top_up_requests.push(request);
    Ok(())
}

/// A pack grant into `pool` settles the request in flight there, if any.
pub fn settle_with_grant(
    state: &mut AccountState,
    pool: &PoolName,
    grant_id: Uuid,
    pack: Option<&PackId>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(id) = state.pools.get(pool).and_then(|c| c.top_up_in_flight) else {
        return Ok(());
    };
    state.pool_mut(pool)?.top_up_in_flight = None;
    record_settlement(
        state,
        TopUpSettlement {
            id,
            status: "succeeded".into(),
            settled_at: now,
            grant_id: Some(grant_id),
            failure: None,
        },
    );
    let key_id = state.key_id().to_string();
    state.emit(
        SUCCEEDED,
        json!({"key_id": key_id, "request_id": id, "pool": pool, "pack": pack,
               "grant_id": grant_id}),
        now,
    );
    Ok(())
}

/// The request in flight in `pool` could not be paid for: it ends `failed`, with the event
/// `credits.auto_top_up_failed`. A request no longer in flight (settled meanwhile) is left as it
/// is.
pub fn fail(
    state: &mut AccountState,
    id: Uuid,
    pool: &PoolName,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    if state.pools.get(pool).and_then(|c| c.top_up_in_flight) != Some(id) {
        return Ok(());
    }
    state.pool_mut(pool)?.top_up_in_flight = None;
    record_settlement(
        state,
        TopUpSettlement {
            id,
            status: "failed".into(),
            settled_at: now,
            grant_id: None,
            failure: Some(reason.to_owned()),
        },
    );
    let key_id = state.key_id().to_string();
    state.emit(
        FAILED,
        json!({"key_id": key_id, "request_id": id, "pool": pool, "reason": reason}),
        now,
    );
    Ok(())
}

/// Ends every request in flight as `failed` with `reason` (the policy behind it changed).
pub fn cancel_in_flight(
    state: &mut AccountState,
    reason: &str,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let in_flight: Vec<(PoolName, Uuid)> = state
        .pools
        .values()
        .filter_map(|c| c.top_up_in_flight.map(|id| (c.pool.clone(), id)))
        .collect();
    for (pool, id) in in_flight {
        fail(state, id, &pool, reason, now)?;
    }
    Ok(())
}

/// Records how a request ended: on the request itself when it was made in this same
/// transaction (so that it is written once, already settled), else as a settlement of a stored
/// request.
fn record_settlement(state: &mut AccountState, settlement: TopUpSettlement) {
    if let Some(request) = state
        .effects
        .top_up_requests
        .iter_mut()
        .find(|r| r.id == settlement.id)
    {
        request.status = settlement.status;
        request.settled_at = Some(settlement.settled_at);
        request.grant_id = settlement.grant_id;
        request.failure = settlement.failure;
    } else {
        state.effects.top_up_settlements.push(settlement);
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use chrono::TimeZone;

    use super::*;
    use crate::ledger::account::{self, AccountInput};
    use crate::ledger::command::{self, Command, Request};
    use crate::ledger::grant::{GrantRequest, GrantSource};
    use crate::ledger::plan::{Pack, PoolSpec};
    use crate::ledger::types::KeyId;

    #[test]
    fn a_request_made_and_settled_in_one_batch_is_written_once_already_settled() {
        let pool = PoolName::default_pool();
        let mut plan = Plan::for_tests(
            BTreeMap::from([(pool.clone(), PoolSpec::limited(100))]),
            BTreeMap::new(),
        );
        let tiny = PackId::parse("pack", "tiny").unwrap();
        plan.definition.packs.insert(
            tiny.clone(),
            Pack {
                pool: pool.clone(),
                credits: 5,
                expires_in_days: None,
                price: None,
                stripe_price: None,
            },
        );
        let now = Utc.with_ymd_and_hms(2026, 12, 2, 12, 0, 0).unwrap();
        let input = AccountInput {
            plan: plan.id.clone(),
            billing_anchor: None,
            external_id: None,
            metadata: None,
            shared: None,
            auto_top_up: Some(Some(AutoTopUp {
                pack: tiny.clone(),
                below: 500,
                max_per_period: 3,
            })),
            overrides: None,
        };
        let key = KeyId::parse("key_id", "key_1").unwrap();
        // Opening asks at once (100 < 500); a pack grant in the same batch settles that request
        // and, still below, makes the next.
        let mut state = account::open(&key, &plan, &input, now).unwrap();
        let grant = Request::new(
            Command::Grant(GrantRequest {
                source: GrantSource::Pack(tiny),
                effective_at: None,
                priority: 0,
                metadata: serde_json::json!({}),
            }),
            None,
        );
        command::apply(&mut state, &grant, now).unwrap();
        let requests = &state.effects.top_up_requests;
        assert_eq!(requests.len(), 2);
        assert_eq!(requests[0].status, "succeeded");
        assert!(requests[0].grant_id.is_some());
        assert_eq!(requests[1].status, "requested");
        assert!(state.effects.top_up_settlements.is_empty());
        assert_eq!(state.pools[&pool].top_up_in_flight, Some(requests[1].id));
        assert_eq!(state.pools[&pool].top_ups_requested, 2);
    }
}
