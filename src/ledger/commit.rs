//! Committing a hold: (part of) it becomes a debit drawn from the grants the hold pinned, in the
//! order it drew them; the rest goes back.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::debit::book;
use super::error::LedgerError;
use super::model::{Debit, Drawn};
use super::release::{active, finish, return_holds};
use super::state::{AccountState, DebitRecord, EntryRefs};
use super::types::{EntryKind, ReservationStatus};

pub fn commit(
    state: &mut AccountState,
    id: Uuid,
    amount: Option<i64>,
    now: DateTime<Utc>,
) -> Result<Debit, LedgerError> {
    let index = active(state, id)?;
    let r = state.reservations[index].clone();
    let amount = amount.unwrap_or(r.amount);
    if amount > r.amount {
        return Err(LedgerError::AmountExceedsReservation {
            requested: amount,
            held: r.amount,
        });
    }
    let debit_id = Uuid::now_v7();
    // The committed amount, taken from the hold's parts in the order they were drawn.
    let mut left = amount;
    let mut keep = Vec::with_capacity(r.drawn.len());
    let mut committed = Vec::new();
    for part in &r.drawn {
        let take = left.min(part.amount);
        left -= take;
        keep.push(take);
        if take > 0 {
            committed.push(Drawn {
                grant_id: part.grant_id,
                kind: part.kind,
                amount: take,
            });
        }
    }
    return_holds(state, index, &keep, Some(debit_id), now, now)?;
    if r.drawn.is_empty() {
        // An unlimited pool: nothing was held, the debit is journaled against no grant.
        let refs = EntryRefs {
            operation: r.operation.clone(),
            debit_id: Some(debit_id),
            source_key_id: r.source_key_id.clone(),
            ..EntryRefs::default()
        };
        state.journal(&r.pool, EntryKind::Debit, -amount, refs, now, now)?;
    }
    let remaining = state.available(&r.pool, now)?;
    let record = DebitRecord {
        id: debit_id,
        pool: r.pool.clone(),
        operation: r.operation.clone(),
        quantity: r.quantity,
        cost: amount,
        plan_id: r.plan_id.clone(),
        plan_version: r.plan_version,
        remaining,
        reset_at: state.account.period_end,
        drawn: committed.clone(),
        metadata: r.metadata.clone(),
        created_at: now,
        reservation_id: Some(r.id),
        refunded: 0,
        overage: 0,
        source_key_id: r.source_key_id.clone(),
        period_start: Some(state.account.period_start),
        overrides: r.overrides.clone(),
        member_since: None,
    };
    book(state, record, now)?;
    finish(
        state,
        index,
        ReservationStatus::Committed,
        Some((debit_id, amount)),
        now,
    );
    Ok(Debit {
        id: Some(debit_id),
        key_id: state.key_id().clone(),
        pool: r.pool,
        operation: r.operation,
        quantity: r.quantity,
        cost: amount,
        remaining,
        reset_at: state.account.period_end,
        drawn: committed,
        overage: 0,
        reservation_id: Some(r.id),
        refunded: 0,
        source_key_id: r.source_key_id,
        plan_id: r.plan_id,
        plan_version: r.plan_version,
        overrides: r.overrides,
        metadata: r.metadata,
        dry_run: false,
        created_at: now,
    })
}
