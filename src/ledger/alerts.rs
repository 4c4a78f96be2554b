//! What the ledger announces about a pool's balance: thresholds of the period's allowance
//! reached and resolved, and the first refusal of a period. Each is announced once per period,
//! through the outbox, in the transaction of the change that causes it.

use chrono::{DateTime, Utc};
use serde_json::json;

use super::error::{Exhausted, LedgerError};
use super::state::AccountState;
use super::types::{GrantKind, PoolName};

pub const THRESHOLD_REACHED: &str = "credits.threshold_reached";
pub const THRESHOLD_RESOLVED: &str = "credits.threshold_resolved";
pub const EXHAUSTED: &str = "credits.exhausted";
pub const PERIOD_ROLLED: &str = "period.rolled";
pub const GRANT_CREATED: &str = "grant.created";
pub const GRANT_EXPIRED: &str = "grant.expired";
pub const RESERVATION_EXPIRED: &str = "reservation.expired";
pub const BALANCE_LOW: &str = "credits.balance_low";
pub const BALANCE_RECOVERED: &str = "credits.balance_recovered";
pub const GRANT_EXPIRING: &str = "grant.expiring";

/// Every event type, for webhook endpoint subscriptions.
pub const ALL: [&str; 13] = [
    THRESHOLD_REACHED,
    THRESHOLD_RESOLVED,
    EXHAUSTED,
    PERIOD_ROLLED,
    GRANT_CREATED,
    GRANT_EXPIRED,
    RESERVATION_EXPIRED,
    super::top_up::REQUESTED,
    super::top_up::SUCCEEDED,
    super::top_up::FAILED,
    BALANCE_LOW,
    BALANCE_RECOVERED,
    GRANT_EXPIRING,
];

/// Announces `grant.expiring` once for each pack, promotional, adjustment or refund grant with
/// credits left that expires within the plan's `expiry_warning_days` of `now` (allowance and
/// rollover grants end with every period, which `next_allowance` already tells). Returns how
/// many were announced.
pub fn grants_expiring(state: &mut AccountState, now: DateTime<Utc>) -> Result<u64, LedgerError> {
    let days = state.plan.expiry_warning_days;
    if days <= 0 {
        return Ok(0);
    }
    let horizon = now + chrono::TimeDelta::days(i64::from(days));
    let due: Vec<uuid::Uuid> = state
        .grants
        .iter()
        .filter(|g| {
            matches!(
                g.kind,
                GrantKind::Pack
                    | GrantKind::Promotional
                    | GrantKind::Adjustment
                    | GrantKind::Refund
            ) && g.remaining > 0
                && g.expiry_warned_at.is_none()
                && g.is_active(now)
                && g.expires_at.is_some_and(|e| e <= horizon)
        })
        .map(|g| g.id)
        .collect();
    let key_id = state.key_id().clone();
    for id in &due {
        state.update_grant(*id, |g| g.expiry_warned_at = Some(now))?;
        let Some(grant) = state.grant(*id).cloned() else {
            continue;
        };
        state.emit(
            GRANT_EXPIRING,
            json!({"key_id": key_id, "grant_id": grant.id, "pool": grant.pool,
                   "kind": grant.kind, "pack": grant.pack, "remaining": grant.remaining,
                   "expires_at": grant.expires_at, "warning_days": days}),
            now,
        );
    }
    Ok(due.len() as u64)
}

/// After a change: each pool with a `low_balance` whose available credits (every grant counted)
/// are now below it is announced as low, once until it recovers; one announced low that is back
/// at or above it is announced as recovered. Scoped to the period, like the other alerts: a pool
/// still low after its period rolled is announced again.
pub fn balance_low(state: &mut AccountState, now: DateTime<Utc>) -> Result<(), LedgerError> {
    let watched: Vec<(PoolName, i64)> = state
        .plan
        .pools
        .iter()
        .filter_map(|(pool, spec)| spec.low_balance.map(|line| (pool.clone(), line)))
        .filter(|(pool, _)| state.pools.contains_key(pool))
        .collect();
    let period = json!({"start": state.account.period_start, "end": state.account.period_end});
    let key_id = state.key_id().clone();
    for (pool, line) in watched {
        let Some(available) = state.available(&pool, now)? else {
            continue;
        };
        let announced = state.alerts(&pool).and_then(|a| a.low_at).is_some();
        let event = match (available < line, announced) {
            (true, false) => {
                state.alerts_mut(&pool).low_at = Some(now);
                BALANCE_LOW
            }
            (false, true) => {
                state.alerts_mut(&pool).low_at = None;
                BALANCE_RECOVERED
            }
            _ => continue,
        };
        state.emit(
            event,
            json!({"key_id": key_id, "pool": pool, "available": available,
                   "low_balance": line, "period": period}),
            now,
        );
    }
    Ok(())
}

/// After `allowance_used` went from `old_used` to `new_used`: announces each of the plan's
/// thresholds (a percentage of the period's allowance) that it crossed, once per period. Credits
/// paid for by rollover, packs or other grants, or by overage, are not allowance used.
pub fn thresholds_reached(
    state: &mut AccountState,
    pool: &PoolName,
    old_used: i64,
    new_used: i64,
    available: Option<i64>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(allowance) = state.pool(pool)?.allowance.filter(|a| *a > 0) else {
        return Ok(());
    };
    let crossed = |t: i32| {
        let line = i128::from(t) * i128::from(allowance);
        i128::from(old_used) * 100 < line && i128::from(new_used) * 100 >= line
    };
    let thresholds: Vec<i32> = state
        .plan
        .thresholds
        .iter()
        .copied()
        .filter(|t| crossed(*t))
        .collect();
    let period = json!({"start": state.account.period_start, "end": state.account.period_end});
    let key_id = state.key_id().clone();
    let used = state.pool(pool)?.used;
    for threshold in thresholds {
        if state
            .alerts(pool)
            .is_some_and(|a| a.thresholds_reached.contains(&threshold))
        {
            continue;
        }
        state.alerts_mut(pool).thresholds_reached.push(threshold);
        state.emit(
            THRESHOLD_REACHED,
            json!({"key_id": key_id, "pool": pool, "threshold": threshold,
                   "allowance_used": new_used, "used": used, "allowance": allowance,
                   "available": available, "period": period}),
            now,
        );
    }
    Ok(())
}

/// After credits came back (a top-up, a refund, a released hold): every threshold of the period
/// the pool had reached and that its balance is now back above is announced as resolved, once.
/// A threshold of t% is resolved when more than (100 − t)% of the allowance is available again.
pub fn thresholds_resolved(
    state: &mut AccountState,
    pool: &PoolName,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(allowance) = state.pool(pool)?.allowance.filter(|a| *a > 0) else {
        return Ok(());
    };
    let Some(alerts) = state.alerts(pool) else {
        return Ok(());
    };
    let mut open: Vec<i32> = alerts
        .thresholds_reached
        .iter()
        .copied()
        .filter(|t| !alerts.thresholds_resolved.contains(t))
        .collect();
    if open.is_empty() {
        return Ok(());
    }
    open.sort_unstable();
    let available = state.available(pool, now)?.unwrap_or(0);
    let period = json!({"start": state.account.period_start, "end": state.account.period_end});
    let key_id = state.key_id().clone();
    for threshold in open {
        let lifted =
            i128::from(available) * 100 > i128::from(100 - threshold) * i128::from(allowance);
        if !lifted {
            continue;
        }
        state.alerts_mut(pool).thresholds_resolved.push(threshold);
        state.emit(
            THRESHOLD_RESOLVED,
            json!({"key_id": key_id, "pool": pool, "threshold": threshold,
                   "available": available, "allowance": allowance, "period": period}),
            now,
        );
    }
    Ok(())
}

/// Announces the first refusal of the period in a pool (not a ledger change).
pub fn exhausted(state: &mut AccountState, refusal: &Exhausted, now: DateTime<Utc>) {
    if state
        .alerts(&refusal.pool)
        .is_some_and(|a| a.exhausted_at.is_some())
    {
        return;
    }
    state.alerts_mut(&refusal.pool).exhausted_at = Some(now);
    state.emit(
        EXHAUSTED,
        json!({"key_id": refusal.key_id, "pool": refusal.pool, "operation": refusal.operation,
               "required": refusal.required, "available": refusal.available,
               "allowed": refusal.allowed, "used": refusal.used,
               "overage_limit": refusal.overage_limit,
               "period": {"start": refusal.period_start, "end": refusal.reset_at},
               "reset_at": refusal.reset_at}),
        now,
    );
}
