//! Moving an account to another plan (or a newer version of its own), with a proration that
//! says what happens to the period in progress.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::error::{corrupt, LedgerError};
use super::periods::period_containing;
use super::plan::Plan;
use super::roll::{allowance_of, roll_to};
use super::state::{AccountState, EntryRefs, NewGrant, PoolCounters};
use super::types::{EntryKind, GrantKind, InvalidField, PoolName};

/// How a plan change treats the period in progress.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proration {
    /// Keep this period's allowance; the new plan's allowance comes with the next period.
    /// Prices change at once.
    None,
    /// Grant (or remove) the difference between the plans' allowances now.
    Difference,
    /// Close the period now and start a new one on the new plan, anchored now.
    Reset,
}

pub fn change_plan(
    state: &mut AccountState,
    plan: &Plan,
    proration: Proration,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let old_interval = state.plan.interval;
    match proration {
        Proration::None => {
            // Periods follow the new plan's interval from the end of this one.
            if old_interval != plan.interval {
                state.account.billing_anchor = state.account.period_end;
            }
            let period_start = state.account.period_start;
            for pool in plan.pools.keys() {
                if !state.pools.contains_key(pool) {
                    // A pool new to the account allows nothing until the next period.
                    state.put_pool(PoolCounters {
                        pool: pool.clone(),
                        allowance: Some(0),
                        used: 0,
                        allowance_used: 0,
                        overage_limit: 0,
                        overage_used: 0,
                        period_start,
                        top_up_in_flight: None,
                        top_ups_requested: 0,
                    });
                }
            }
        }
        Proration::Difference => {
            if old_interval != plan.interval {
                return Err(LedgerError::Invalid(InvalidField::new(
                    "proration",
                    format!(
                        "difference needs plans with the same interval ({} → {}); use none or reset",
                        old_interval.as_str(),
                        plan.interval.as_str()
                    ),
                )));
            }
            prorate_difference(state, plan, now)?;
        }
        Proration::Reset => {
            // Anchored at this very instant (to the microsecond), so a second reset within the
            // same second still opens a period of its own.
            let anchor = now;
            if anchor <= state.account.period_start {
                return Err(LedgerError::Conflict {
                    code: "period_just_started",
                    message: format!(
                        "the period of account {} started at this very instant; retry the reset",
                        state.key_id()
                    ),
                });
            }
            let period = period_containing(anchor, plan.interval, now)
                .ok_or_else(|| corrupt("a period from now leaves the calendar"))?;
            let old_start = state.account.period_start;
            roll_to(state, old_start, plan, anchor, period, true, now)?;
        }
    }
    state.account.plan_id = plan.id.clone();
    state.plan = plan.clone();
    state.touch_account(now);
    Ok(())
}

fn prorate_difference(
    state: &mut AccountState,
    plan: &Plan,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let mut pools: BTreeSet<PoolName> = state.pools.keys().cloned().collect();
    pools.extend(plan.pools.keys().cloned());
    let (period_start, period_end) = (state.account.period_start, state.account.period_end);
    for pool in pools {
        let spec = plan.pools.get(&pool);
        let old = state.pools.get(&pool).map_or(Some(0), |p| p.allowance);
        let new = spec.map_or(Some(0), |s| s.allowance);
        let (used, allowance_used, overage_used) = state
            .pools
            .get(&pool)
            .map_or((0, 0, 0), |p| (p.used, p.allowance_used, p.overage_used));
        // Overage already taken stays owed; a lower limit cannot make it a breach of the floor
        // (rule 1), so this period's limit never drops below it. The next period starts on the
        // new plan's limit.
        let overage_limit = spec.map_or(0, |s| s.overage_limit).max(overage_used);
        let (top_up_in_flight, top_ups_requested) = state
            .pools
            .get(&pool)
            .map_or((None, 0), |p| (p.top_up_in_flight, p.top_ups_requested));
        // The pool's new terms first: the entries below are journaled against them.
        state.put_pool(PoolCounters {
            pool: pool.clone(),
            allowance: new,
            used,
            allowance_used,
            overage_limit,
            overage_used,
            period_start,
            top_up_in_flight,
            top_ups_requested,
        });
        if let Some(new_allowance) = new {
            let diff = new_allowance - old.unwrap_or(0);
            match allowance_of(state, &pool, period_start).cloned() {
                Some(grant) if grant.voided_at.is_some() => {}
                Some(grant) => {
                    // What the grant already gave (debits, holds) counts against the new
                    // allowance, and stays inside its amount so a refund or a released hold
                    // always fits back in. Computed from the grant, a cut that went below zero
                    // is not forgotten by a later raise.
                    let given = grant.amount - grant.remaining;
                    let remaining = (new_allowance - given).max(0);
                    let amount = new_allowance.max(given);
                    let change = remaining - grant.remaining;
                    // A growing amount moves first, so remaining always stays within it.
                    state.update_grant(grant.id, |g| g.amount = g.amount.max(amount))?;
                    if change != 0 {
                        let refs = EntryRefs::default();
                        state.change_grant(grant.id, change, EntryKind::Adjustment, refs, now)?;
                    }
                    state.update_grant(grant.id, |g| g.amount = amount)?;
                }
                None if diff > 0 => {
                    state.add_grant(
                        NewGrant::periodic(
                            &pool,
                            GrantKind::Allowance,
                            diff,
                            period_start,
                            period_end,
                            now,
                        ),
                        now,
                    )?;
                }
                None => {}
            }
            // A cut may leave the period's use at or past thresholds that no debit will cross
            // now (the allowance grant is spent): announce them (once, as always).
            let allowance_used = state.pool(&pool)?.allowance_used;
            let available = state.available(&pool, now)?;
            super::alerts::thresholds_reached(state, &pool, 0, allowance_used, available, now)?;
        }
    }
    Ok(())
}
