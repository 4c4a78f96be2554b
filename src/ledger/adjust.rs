//! Admin adjustments of a pool's balance: `set`, `increment` or `decrement` the available
//! credits. An increment is a new never-expiring `adjustment` grant; a decrement draws from the
//! grants in consumption order; `set` does whichever reaches the amount.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::alerts;
use super::error::{checked, LedgerError};
use super::model::{Adjustment, AdjustmentOp};
use super::order::draw;
use super::pricing::PriceError;
use super::state::{AccountState, AdjustmentRecord, EntryRefs, NewGrant};
use super::types::{EntryKind, GrantKind, InvalidField, PoolName};

#[derive(Debug, Clone, PartialEq)]
pub struct AdjustmentRequest {
    pub pool: PoolName,
    pub op: AdjustmentOp,
    pub amount: i64,
    pub reason: String,
}

pub fn adjust(
    state: &mut AccountState,
    request: &AdjustmentRequest,
    now: DateTime<Utc>,
) -> Result<Adjustment, LedgerError> {
    let pool = request.pool.clone();
    let Some(counters) = state.pools.get(&pool) else {
        return Err(PriceError::UnknownPool(pool).into());
    };
    if counters.allowance.is_none() {
        return Err(LedgerError::Invalid(InvalidField::new(
            "pool",
            format!("{pool} is unlimited and has no balance to adjust"),
        )));
    }
    let granted = state.granted(&pool, now)?;
    let available = state.available(&pool, now)?.unwrap_or(0);
    let delta = match request.op {
        AdjustmentOp::Set => checked(request.amount.checked_sub(available), "the change")?,
        AdjustmentOp::Increment => request.amount,
        AdjustmentOp::Decrement => -request.amount,
    };
    // An increment cannot take the pool past what a credit amount can hold; a decrement takes
    // credits out of grants, and cannot take what they do not have.
    let left = checked(
        granted.checked_add(delta),
        &format!("pool {pool} after this adjustment"),
    )?;
    checked(
        available.checked_add(delta),
        &format!("pool {pool} after this adjustment"),
    )?;
    if left < 0 {
        return Err(LedgerError::Unprocessable {
            code: "adjustment_exceeds_available",
            message: format!(
                "pool {pool} has {granted} credits in grants; a decrement of {} would go below zero",
                -delta
            ),
        });
    }
    let id = Uuid::now_v7();
    let metadata = json!({"reason": request.reason});
    let refs = || EntryRefs {
        adjustment_id: Some(id),
        metadata: Some(metadata.clone()),
        ..EntryRefs::default()
    };
    if delta > 0 {
        state.add_grant(
            NewGrant {
                pool: pool.clone(),
                kind: GrantKind::Adjustment,
                amount: delta,
                effective_at: now,
                expires_at: None,
                priority: 0,
                period_start: None,
                metadata: metadata.clone(),
                pack: None,
                entry_kind: EntryKind::Adjustment,
                refs: EntryRefs {
                    adjustment_id: Some(id),
                    ..EntryRefs::default()
                },
                balance_at: now,
            },
            now,
        )?;
    } else if delta < 0 {
        let taken = draw(&state.drawable(&pool, now), -delta).ok_or_else(|| {
            LedgerError::Unprocessable {
                code: "adjustment_exceeds_available",
                message: format!("pool {pool} cannot cover a decrement of {}", -delta),
            }
        })?;
        for (grant_id, take) in taken {
            state.change_grant(grant_id, -take, EntryKind::Adjustment, refs(), now)?;
        }
    }
    let after = available + delta;
    state.effects.adjustments.push(AdjustmentRecord {
        id,
        pool: pool.clone(),
        op: request.op,
        amount: request.amount,
        delta,
        reason: request.reason.clone(),
        available_after: after,
        created_at: now,
    });
    if delta > 0 {
        alerts::thresholds_resolved(state, &pool, now)?;
    }
    Ok(Adjustment {
        id,
        key_id: state.key_id().to_string(),
        pool: pool.to_string(),
        op: request.op,
        amount: request.amount,
        delta,
        reason: request.reason.clone(),
        available: after,
        created_at: now,
    })
}
