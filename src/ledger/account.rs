//! Opening an account (its first period and allowance) and changing its details.

use std::collections::BTreeMap;

use chrono::{DateTime, SubsecRound, Utc};
use serde_json::Value;

use super::error::LedgerError;
use super::overrides::{self, Overrides};
use super::periods::period_containing;
use super::plan::Plan;
use super::plan_change::{self, Proration};
use super::state::{empty_object, AccountRecord, AccountState, Effects, NewGrant, PoolCounters};
use super::top_up::AutoTopUp;
use super::types::{GrantKind, InvalidField, KeyId};

/// What an account PUT asks for. `None` leaves a field as it is on update.
#[derive(Debug, Clone, PartialEq)]
pub struct AccountInput {
    pub plan: super::types::PlanId,
    pub billing_anchor: Option<DateTime<Utc>>,
    /// `Some(None)` clears the external id.
    pub external_id: Option<Option<String>>,
    pub metadata: Option<Value>,
    /// Whether every Unkey key of the customer (`external_id`) draws from this account.
    pub shared: Option<bool>,
    /// `Some(None)` removes the auto top-up policy.
    pub auto_top_up: Option<Option<AutoTopUp>>,
    /// `Some(None)` removes the overrides; `Some(Some(_))` replaces them.
    pub overrides: Option<Option<Overrides>>,
}

/// A new account on `plan`, in the period that contains `now`, with the allowance of every
/// limited pool granted.
pub fn open(
    key_id: &KeyId,
    plan: &Plan,
    input: &AccountInput,
    now: DateTime<Utc>,
) -> Result<AccountState, LedgerError> {
    let account_overrides = match &input.overrides {
        Some(Some(o)) if !o.is_empty() => {
            overrides::check(plan, o)?;
            Some(o.clone())
        }
        _ => None,
    };
    if let Some(Some(policy)) = &input.auto_top_up {
        policy.validate(plan)?;
    }
    let anchor = input.billing_anchor.unwrap_or_else(|| now.trunc_subsecs(0));
    let period = period_containing(anchor, plan.interval, now).ok_or_else(|| {
        InvalidField::new("billing_anchor", "is too far from now to compute periods")
    })?;
    let mut state = AccountState {
        account: AccountRecord {
            key_id: key_id.clone(),
            plan_id: plan.id.clone(),
            billing_anchor: anchor,
            period_start: period.start,
            period_end: period.end,
            external_id: input.external_id.clone().flatten(),
            shared: input.shared.unwrap_or(false),
            metadata: input.metadata.clone().unwrap_or_else(empty_object),
            created_at: now,
            updated_at: now,
            auto_top_up: input.auto_top_up.clone().flatten(),
            overrides: account_overrides,
        },
        plan: plan.clone(),
        base_plan: None,
        pools: BTreeMap::new(),
        grants: Vec::new(),
        reservations: Vec::new(),
        debits: Vec::new(),
        refunds: Vec::new(),
        idempotency: BTreeMap::new(),
        alerts: BTreeMap::new(),
        members: BTreeMap::new(),
        effects: Effects {
            account_created: true,
            ..Effects::default()
        },
    };
    state.set_plan(plan);
    let terms = state.plan.clone();
    for (pool, spec) in &terms.pools {
        state.put_pool(PoolCounters {
            pool: pool.clone(),
            allowance: spec.allowance,
            used: 0,
            allowance_used: 0,
            overage_limit: spec.overage_limit,
            overage_used: 0,
            period_start: period.start,
            top_up_in_flight: None,
            top_ups_requested: 0,
        });
        if let Some(allowance) = spec.allowance {
            state.add_grant(
                NewGrant::periodic(
                    pool,
                    GrantKind::Allowance,
                    allowance,
                    period.start,
                    period.end,
                    now,
                ),
                now,
            )?;
        }
    }
    // A policy whose threshold lies above the first allowance asks at once.
    super::top_up::check(&mut state, now)?;
    Ok(state)
}

/// Changes an account's details. Its plan changes only through a plan change (which says how
/// to prorate), and its billing anchor never.
pub fn update(
    state: &mut AccountState,
    input: &AccountInput,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let key_id = state.key_id().clone();
    if state.account.plan_id != input.plan {
        return Err(LedgerError::Conflict {
            code: "plan_change_requires_proration",
            message: format!(
                "account {key_id} is on plan {}; change its plan with \
                 POST /v1/accounts/{key_id}/plan, which says how to prorate",
                state.account.plan_id
            ),
        });
    }
    if let Some(anchor) = input.billing_anchor {
        if anchor.trunc_subsecs(6) != state.account.billing_anchor {
            return Err(LedgerError::Conflict {
                code: "billing_anchor_immutable",
                message: format!(
                    "account {key_id} bills from {}; its billing_anchor cannot change",
                    state.account.billing_anchor.to_rfc3339()
                ),
            });
        }
    }
    if let Some(external_id) = &input.external_id {
        state.account.external_id = external_id.clone();
    }
    if let Some(metadata) = &input.metadata {
        state.account.metadata = metadata.clone();
    }
    if let Some(shared) = input.shared {
        state.account.shared = shared;
    }
    if let Some(new) = &input.overrides {
        let new = new.clone().filter(|o| !o.is_empty());
        if new != state.account.overrides {
            let written = state.base_plan().clone();
            if let Some(o) = &new {
                overrides::check(&written, o)?;
            }
            let old = std::mem::replace(&mut state.account.overrides, new);
            let terms = overrides::changed_terms(state, &written, old.as_ref());
            // New terms apply now, as a plan change prorated by the difference would: a changed
            // allowance grants (or takes back) the difference in this period, prices and the
            // overage limit change at once, a rollover cap at the next roll. Only what the
            // overrides changed moves: a newer plan version waits for the next period as ever.
            plan_change::change_plan(state, &terms, Proration::Difference, now)?;
            state.set_plan(&written);
        }
    }
    if let Some(policy) = &input.auto_top_up {
        if let Some(policy) = policy {
            policy.validate(&state.plan)?;
        }
        if state.account.auto_top_up != *policy {
            // What the old policy asked for is not what the account wants any more.
            super::top_up::cancel_in_flight(state, "the auto_top_up policy was changed", now)?;
        }
        state.account.auto_top_up = policy.clone();
    }
    state.touch_account(now);
    Ok(())
}
