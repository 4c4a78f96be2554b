//! Per-key caps in a shared account. A member key's debits and holds land on the shared
//! account; a member with a cap on a pool may use at most that many of its credits per period.
//! Its use is counted with the account's state, under the account's lock, so the cap is enforced
//! atomically with the debit however many requests race.

use chrono::{DateTime, Utc};

use super::error::{checked, Exhausted, KeyCap, LedgerError};
use super::state::{AccountState, DebitRecord};
use super::types::{PoolName, ReservationStatus};

/// What `member_key_id` used of `pool` in the current period: accepted debits and committed
/// holds less refunds, plus the credits its active holds take.
pub fn key_used(state: &AccountState, member_key_id: &str, pool: &PoolName) -> i64 {
    let counted = state
        .members
        .get(member_key_id)
        .filter(|m| m.period_start == Some(state.account.period_start))
        .and_then(|m| m.used.get(pool).copied())
        .unwrap_or(0);
    let held: i64 = state
        .reservations
        .iter()
        .filter(|r| {
            r.status == ReservationStatus::Active
                && r.pool == *pool
                && r.source_key_id.as_deref() == Some(member_key_id)
        })
        .map(|r| r.amount)
        .sum();
    counted.saturating_add(held)
}

/// Refuses a cost that would take a member key past its cap on `pool` this period: the 402 of
/// the pool, with `key_cap` saying why. `refusal` builds the pool's refusal.
pub fn check_cap(
    state: &AccountState,
    source_key_id: Option<&str>,
    pool: &PoolName,
    cost: i64,
    refusal: impl FnOnce() -> Result<Exhausted, LedgerError>,
) -> Result<(), LedgerError> {
    let Some(member) = source_key_id else {
        return Ok(());
    };
    let Some(cap) = state
        .members
        .get(member)
        .and_then(|m| m.caps.get(pool).copied())
    else {
        return Ok(());
    };
    let used = key_used(state, member, pool);
    if used.saturating_add(cost) <= cap {
        return Ok(());
    }
    let mut refused = refusal()?;
    refused.key_cap = Some(KeyCap {
        member_key_id: member.to_owned(),
        cap,
        key_used: used,
    });
    Err(LedgerError::CreditsExhausted(Box::new(refused)))
}

/// A refund of `amount` of a debit of this period gives its member key that much use back, if
/// the debit was made while the key was a member (one made before counted nothing).
pub fn refund_use(
    state: &mut AccountState,
    debit: &DebitRecord,
    amount: i64,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(member) = debit.source_key_id.as_deref() else {
        return Ok(());
    };
    let counted = state
        .members
        .get(member)
        .is_some_and(|m| m.created_at <= debit.created_at);
    if !counted {
        return Ok(());
    }
    add_use(state, Some(member), &debit.pool, -amount, now)
}

/// Counts `delta` credits (negative for a refund) as used by a member key this period. Keys
/// that are not registered members count nothing.
pub fn add_use(
    state: &mut AccountState,
    source_key_id: Option<&str>,
    pool: &PoolName,
    delta: i64,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(member_key_id) = source_key_id else {
        return Ok(());
    };
    let period_start = state.account.period_start;
    let Some(member) = state.members.get_mut(member_key_id) else {
        return Ok(());
    };
    if member.period_start != Some(period_start) {
        member.period_start = Some(period_start);
        member.used.clear();
    }
    let used = member.used.entry(pool.clone()).or_insert(0);
    *used = checked(used.checked_add(delta), "a member's use")?.max(0);
    member.updated_at = now;
    state.effects.members.insert(member_key_id.to_owned());
    Ok(())
}
