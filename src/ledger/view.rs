//! The records of an account's state as the API shows them, at a given instant.

use chrono::{DateTime, Utc};

use super::error::LedgerError;
use super::model::{
    Account, Balance, Grant, GrantSummary, NextAllowance, PackOffer, PeriodView, PoolBalance,
    Reservation,
};
use super::order::consumption_order;
use super::state::{AccountState, GrantRecord};
use super::types::{GrantStatus, PoolName};

/// A pool's active grants (in effect, not expired, not voided), in consumption order.
pub fn pool_grants(state: &AccountState, pool: &PoolName, now: DateTime<Utc>) -> Vec<GrantSummary> {
    let mut grants: Vec<&GrantRecord> = state
        .grants
        .iter()
        .filter(|g| g.pool == *pool && g.is_active(now))
        .collect();
    grants.sort_by(|a, b| consumption_order(&a.order_key(), &b.order_key()));
    grants
        .into_iter()
        .map(|g| GrantSummary {
            id: g.id,
            kind: g.kind,
            amount: g.amount,
            remaining: g.remaining,
            priority: g.priority,
            effective_at: g.effective_at,
            expires_at: g.expires_at,
        })
        .collect()
}

/// The allowance the plan gives the pool at the end of the current period.
pub fn next_allowance(state: &AccountState, pool: &PoolName) -> Option<NextAllowance> {
    let amount = state.plan.pools.get(pool)?.allowance?;
    Some(NextAllowance {
        amount,
        at: state.account.period_end,
    })
}

/// The packs of the plan's catalogue that fill `pool`, by id.
pub fn pack_offers(state: &AccountState, pool: &PoolName) -> Vec<PackOffer> {
    state
        .plan
        .packs
        .iter()
        .filter(|(_, pack)| pack.pool == *pool)
        .map(|(id, pack)| PackOffer {
            id: id.clone(),
            credits: pack.credits,
            price: pack.price.clone(),
            expires_in_days: pack.expires_in_days,
        })
        .collect()
}

pub fn balance(state: &AccountState, now: DateTime<Utc>) -> Result<Balance, LedgerError> {
    let mut pools = Vec::with_capacity(state.pools.len());
    for (name, counters) in &state.pools {
        pools.push(PoolBalance {
            pool: name.clone(),
            available: state.available(name, now)?,
            reserved: state.reserved(name),
            allowance: counters.allowance,
            used: counters.used,
            allowance_used: counters.allowance_used,
            overage_used: counters.overage_used,
            overage_limit: counters.overage_limit,
            grants: pool_grants(state, name, now),
            next_allowance: next_allowance(state, name),
            forecast: None,
            overrides: state
                .account
                .overrides
                .as_ref()
                .and_then(|o| o.pools.get(name).cloned()),
        });
    }
    Ok(Balance {
        key_id: state.account.key_id.clone(),
        plan: state.account.plan_id.clone(),
        period: PeriodView {
            start: state.account.period_start,
            end: state.account.period_end,
        },
        pools,
    })
}

pub fn account(state: &AccountState, now: DateTime<Utc>) -> Result<Account, LedgerError> {
    let a = &state.account;
    Ok(Account {
        key_id: a.key_id.clone(),
        plan: a.plan_id.clone(),
        billing_anchor: a.billing_anchor,
        current_period: PeriodView {
            start: a.period_start,
            end: a.period_end,
        },
        external_id: a.external_id.clone(),
        shared: a.shared,
        metadata: a.metadata.clone(),
        created_at: a.created_at,
        updated_at: a.updated_at,
        auto_top_up: a.auto_top_up.clone(),
        overrides: a.overrides.clone(),
        balance: balance(state, now)?,
    })
}

pub fn grant_status(g: &GrantRecord, now: DateTime<Utc>) -> GrantStatus {
    if g.voided_at.is_some() {
        GrantStatus::Voided
    } else if g.expires_at.is_some_and(|e| e <= now) {
        GrantStatus::Expired
    } else if g.effective_at > now {
        GrantStatus::Pending
    } else {
        GrantStatus::Active
    }
}

pub fn grant(key_id: &str, g: &GrantRecord, now: DateTime<Utc>) -> Grant {
    Grant {
        id: g.id,
        key_id: key_id.to_owned(),
        pool: g.pool.to_string(),
        kind: g.kind,
        amount: g.amount,
        remaining: g.remaining,
        effective_at: g.effective_at,
        expires_at: g.expires_at,
        priority: g.priority,
        status: grant_status(g, now),
        metadata: g.metadata.clone(),
        created_at: g.created_at,
        voided_at: g.voided_at,
        pack: g.pack.as_ref().map(|p| p.to_string()),
    }
}

pub fn reservation(
    state: &AccountState,
    index: usize,
    now: DateTime<Utc>,
) -> Result<Reservation, LedgerError> {
    let r = &state.reservations[index];
    Ok(Reservation {
        id: r.id,
        key_id: state.account.key_id.to_string(),
        pool: r.pool.to_string(),
        operation: r.operation.clone(),
        quantity: r.quantity,
        amount: r.amount,
        status: r.status,
        expires_at: r.expires_at,
        remaining: state.available(&r.pool, now)?,
        drawn: r.drawn.clone(),
        debit_id: r.debit_id,
        committed_amount: r.committed_amount,
        metadata: r.metadata.clone(),
        created_at: r.created_at,
        updated_at: r.updated_at,
    })
}
