//! Rule 4: the life of an account's credits over time. A period that has ended is rolled, each
//! missed period in order (catch-up); grants that expired are journaled; holds past their TTL go
//! back. Every command runs this first, at its own `now`, so correctness never depends on the
//! scheduler's timing; the scheduler only does it for accounts nobody touches.

use chrono::{DateTime, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::json;
use uuid::Uuid;

use super::alerts;
use super::error::{corrupt, LedgerError};
use super::periods::{self, Period};
use super::plan::Plan;
use super::release;
use super::state::{AccountState, EntryRefs, NewGrant, PoolCounters};
use super::types::{EntryKind, GrantKind, PoolName};

/// What bringing an account up to date did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Maintenance {
    pub rolled: usize,
    pub expired: u64,
    /// Grants announced as expiring soon (`grant.expiring`).
    #[serde(default)]
    pub warned: u64,
}

/// Whether the account has anything to bring up to date at `now`.
pub fn is_due(state: &AccountState, now: DateTime<Utc>) -> bool {
    state.account.period_end <= now
        || state.grants.iter().any(|g| {
            g.remaining > 0 && g.voided_at.is_none() && g.expires_at.is_some_and(|e| e <= now)
        })
        || state
            .reservations
            .iter()
            .any(|r| r.status == super::types::ReservationStatus::Active && r.expires_at <= now)
        || state
            .plan
            .pools
            .keys()
            .any(|p| !state.pools.contains_key(p))
}

/// Brings the account up to date at `now`: rolls every period that has ended, in order, then
/// returns lapsed holds and journals the grants that expired since.
pub fn catch_up(state: &mut AccountState, now: DateTime<Utc>) -> Result<Maintenance, LedgerError> {
    let mut done = Maintenance::default();
    if state.account.period_end <= now {
        let plan = state.plan.clone();
        let account = &state.account;
        let periods = periods::periods_after(
            account.billing_anchor,
            plan.interval,
            account.period_end,
            now,
        )
        .ok_or_else(|| corrupt(format!("periods of {} leave the calendar", account.key_id)))?;
        let anchor = account.billing_anchor;
        for period in periods {
            // Holds that lapsed before the boundary return first, so their allowance counts as
            // unused when the roll looks.
            release::release_lapsed(state, period.start, now)?;
            let old_start = state.account.period_start;
            done.expired += roll_to(state, old_start, &plan, anchor, period, false, now)?;
            done.rolled += 1;
        }
    }
    release::release_lapsed(state, now, now)?;
    done.expired += expire_due(state, now, false, now)?;
    add_missing_pools(state);
    done.warned = alerts::grants_expiring(state, now)?;
    Ok(done)
}

/// Pools a newer version of the account's plan added get counters now (limited ones allow
/// nothing until the next period grants their allowance; unlimited ones are unlimited at once),
/// so debits priced in them work before the next roll.
fn add_missing_pools(state: &mut AccountState) {
    let missing: Vec<(PoolName, Option<i64>, i64)> = state
        .plan
        .pools
        .iter()
        .filter(|(pool, _)| !state.pools.contains_key(*pool))
        .map(|(pool, spec)| (pool.clone(), spec.allowance.map(|_| 0), spec.overage_limit))
        .collect();
    for (pool, allowance, overage_limit) in missing {
        let period_start = state.account.period_start;
        state.put_pool(PoolCounters {
            pool,
            allowance,
            used: 0,
            allowance_used: 0,
            overage_limit,
            overage_used: 0,
            period_start,
            top_up_in_flight: None,
            top_ups_requested: 0,
        });
    }
}

/// One period roll to `new` on `plan`: the unused allowance of the period that started at
/// `old_start` becomes a rollover grant of at most the plan's cap, expiring with the new period;
/// the old allowance and rollover grants (and anything else due by the boundary) expire with
/// expiration entries; the period's overage is settled; the new allowance is granted and the
/// pool's counters restart. `close_early` expires the old period's allowance and rollover even
/// though their expiry lies ahead (a plan change with proration `reset`). Returns how many grants
/// expired.
pub fn roll_to(
    state: &mut AccountState,
    old_start: DateTime<Utc>,
    plan: &Plan,
    anchor: DateTime<Utc>,
    new: Period,
    close_early: bool,
    now: DateTime<Utc>,
) -> Result<u64, LedgerError> {
    let mut pools: Vec<PoolName> = plan.pools.keys().cloned().collect();
    for pool in state.pools.keys() {
        if !pools.contains(pool) {
            pools.push(pool.clone());
        }
    }
    pools.sort();

    // What each pool carries over, read before the old grants expire.
    let mut carried = Vec::with_capacity(pools.len());
    for pool in &pools {
        let cap = plan
            .pools
            .get(pool)
            .filter(|spec| spec.allowance.is_some())
            .and_then(|spec| spec.rollover_cap);
        let unused = allowance_of(state, pool, old_start)
            .filter(|g| g.voided_at.is_none())
            .map_or(0, |g| g.remaining);
        carried.push((pool.clone(), periods::rollover_amount(unused, cap)));
    }

    let expired_before = state.effects.entries.len();
    let expired = expire_due(state, new.start, close_early, now)?;
    let expired_by_pool = |pool: &PoolName, state: &AccountState| -> i64 {
        state.effects.entries[expired_before..]
            .iter()
            .filter(|e| e.kind == EntryKind::Expiration && e.pool == *pool)
            .map(|e| -e.amount)
            .sum()
    };

    // The period's overage is recorded for billing in an entry of its own; the new period
    // starts from zero overage.
    let summary: Vec<serde_json::Value> = carried
        .iter()
        .map(|(pool, rollover)| {
            let overage = state.pools.get(pool).map_or(0, |c| c.overage_used);
            json!({"pool": pool, "carried": rollover, "expired": expired_by_pool(pool, state),
                   "overage": overage})
        })
        .collect();
    let key_id = state.key_id().clone();
    state.emit(
        alerts::PERIOD_ROLLED,
        json!({"key_id": key_id,
               "previous_period": {"start": old_start, "end": new.start},
               "period": {"start": new.start, "end": new.end},
               "pools": summary}),
        now,
    );

    // A pool announced low stays so into the new period, so that the allowance the roll brings
    // is announced as its recovery (and a pool still low is not announced twice).
    let still_low: Vec<(PoolName, DateTime<Utc>)> = state
        .alerts
        .values()
        .filter(|a| a.period_start == old_start)
        .filter_map(|a| a.low_at.map(|at| (a.pool.clone(), at)))
        .collect();

    // The account moves to the new period first, so what follows is journaled in it.
    state.account.plan_id = plan.id.clone();
    state.account.billing_anchor = anchor;
    state.account.period_start = new.start;
    state.account.period_end = new.end;
    state.touch_account(now);
    if state.plan.id != plan.id || state.plan.version != plan.version {
        state.plan = plan.clone();
    }
    for (pool, at) in still_low {
        state.alerts_mut(&pool).low_at = Some(at);
    }

    for (pool, rollover) in carried {
        let spec = plan.pools.get(&pool);
        let settled = state.pools.get(&pool).map_or(0, |c| c.overage_used);
        // A request in flight stays so across the roll; the new period's count starts at 0.
        let in_flight = state.pools.get(&pool).and_then(|c| c.top_up_in_flight);
        // A pool the plan no longer has keeps its packs but gets no allowance.
        let allowance = spec.map_or(Some(0), |s| s.allowance);
        state.put_pool(PoolCounters {
            pool: pool.clone(),
            allowance,
            used: 0,
            allowance_used: 0,
            overage_limit: spec.map_or(0, |s| s.overage_limit),
            overage_used: 0,
            period_start: new.start,
            top_up_in_flight: in_flight,
            top_ups_requested: 0,
        });
        if settled > 0 {
            state.journal(
                &pool,
                EntryKind::Overage,
                settled,
                EntryRefs {
                    metadata: Some(json!({"settled": settled, "period_start": old_start,
                                          "period_end": new.start})),
                    ..EntryRefs::default()
                },
                new.start,
                now,
            )?;
        }
        let grant = |kind: GrantKind, amount: i64| {
            NewGrant::periodic(&pool, kind, amount, new.start, new.end, new.start)
        };
        if rollover > 0 {
            state.add_grant(grant(GrantKind::Rollover, rollover), now)?;
        }
        if let (Some(_), Some(amount)) = (spec, allowance) {
            state.add_grant(grant(GrantKind::Allowance, amount), now)?;
        }
    }
    Ok(expired)
}

/// The allowance grant of a pool for the period starting at `period_start`, if any.
pub fn allowance_of<'a>(
    state: &'a AccountState,
    pool: &PoolName,
    period_start: DateTime<Utc>,
) -> Option<&'a super::state::GrantRecord> {
    state.grants.iter().find(|g| {
        g.pool == *pool && g.kind == GrantKind::Allowance && g.period_start == Some(period_start)
    })
}

/// Journals every grant that expired at or before `upto` with credits left: an `expiration`
/// entry for what was left, and `remaining` 0, each announced as `grant.expired`. With
/// `period_grants`, the allowance and rollover grants expire too whatever their expiry (a period
/// closed early), and their expiry moves to `upto`, spent ones included, so nothing can flow back
/// into them. Returns how many grants expired.
pub fn expire_due(
    state: &mut AccountState,
    upto: DateTime<Utc>,
    period_grants: bool,
    now: DateTime<Utc>,
) -> Result<u64, LedgerError> {
    let mut due: Vec<(PoolName, Uuid)> = state
        .grants
        .iter()
        .filter(|g| {
            g.remaining > 0
                && g.voided_at.is_none()
                && (g.expires_at.is_some_and(|e| e <= upto)
                    || (period_grants && g.kind.is_periodic()))
        })
        .map(|g| (g.pool.clone(), g.id))
        .collect();
    due.sort();
    let closed_at =
        |effective_at: DateTime<Utc>| upto.max(effective_at + TimeDelta::microseconds(1));
    if period_grants {
        let spent: Vec<uuid::Uuid> = state
            .grants
            .iter()
            .filter(|g| {
                g.kind.is_periodic()
                    && g.remaining == 0
                    && g.voided_at.is_none()
                    && g.expires_at.is_some_and(|e| e > upto)
            })
            .map(|g| g.id)
            .collect();
        for id in spent {
            state.update_grant(id, |g| {
                g.expires_at = g.expires_at.map(|e| e.min(closed_at(g.effective_at)));
            })?;
        }
    }
    let key_id = state.key_id().clone();
    for (_, id) in &due {
        state.update_grant(*id, |g| {
            g.expires_at = g.expires_at.map(|e| e.min(closed_at(g.effective_at)));
        })?;
        let (pool, kind, left) = {
            let g = state
                .grant(*id)
                .ok_or_else(|| corrupt("a due grant vanished"))?;
            (g.pool.clone(), g.kind, g.remaining)
        };
        state.change_grant(*id, -left, EntryKind::Expiration, EntryRefs::default(), now)?;
        // The entry's balance is the pool's at the boundary, not at the moment of journaling.
        let balance = state.available(&pool, upto)?;
        if let Some(entry) = state.effects.entries.last_mut() {
            entry.balance_after = balance;
        }
        state.emit(
            alerts::GRANT_EXPIRED,
            json!({"key_id": key_id, "grant_id": id, "pool": pool, "kind": kind,
                   "expired": left}),
            now,
        );
    }
    Ok(due.len() as u64)
}
