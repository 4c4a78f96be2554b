//! Returning held credits: a release, a hold past its TTL, and the part of a commit that is not
//! spent. Each part goes back to the grant it came from; a part whose grant expired (or was
//! voided) meanwhile leaves again at once, as an `expiration` (or `void`) entry.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::alerts;
use super::error::{corrupt, LedgerError};
use super::model::Reservation;
use super::state::{AccountState, EntryRefs};
use super::types::{EntryKind, GrantKind, ReservationStatus};
use super::view;

/// Returns the held credits of reservation `index` (less what `keep` commits, part by part, as
/// `debit` entries of `debit_id`) to their grants. A part counts as returned only if its grant
/// still takes credits at `at`.
pub fn return_holds(
    state: &mut AccountState,
    index: usize,
    keep: &[i64],
    debit_id: Option<Uuid>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let r = state.reservations[index].clone();
    for (i, part) in r.drawn.iter().enumerate() {
        let committed = keep.get(i).copied().unwrap_or(0);
        let grant = state
            .grant(part.grant_id)
            .ok_or_else(|| corrupt(format!("grant {} of a hold is not loaded", part.grant_id)))?;
        let closed = if grant.voided_at.is_some() {
            Some(EntryKind::Void)
        } else if grant.expires_at.is_some_and(|e| e <= at) {
            Some(EntryKind::Expiration)
        } else {
            None
        };
        let refs = |debit: bool| EntryRefs {
            operation: r.operation.clone(),
            debit_id: if debit { debit_id } else { None },
            reservation_id: Some(r.id),
            ..EntryRefs::default()
        };
        state.change_grant(
            part.grant_id,
            part.amount,
            EntryKind::Release,
            refs(false),
            now,
        )?;
        if committed > 0 {
            state.change_grant(part.grant_id, -committed, EntryKind::Debit, refs(true), now)?;
        }
        let rest = part.amount - committed;
        if let (Some(kind), true) = (closed, rest > 0) {
            state.change_grant(part.grant_id, -rest, kind, refs(false), now)?;
        }
        cap_cut_allowance(state, part.grant_id, now)?;
    }
    Ok(())
}

/// After credits came back to a grant (a released hold, a refund). A `difference` plan change
/// that cut the period's allowance below what it had already given keeps the grant's amount at
/// what it gave, so that returns still fit in; but what comes back never lifts the grant above
/// what the cut allowance still allows this period: the rest leaves again at once, as an
/// `adjustment` entry, and the amount shrinks with what was given back, down to the allowance.
pub fn cap_cut_allowance(
    state: &mut AccountState,
    grant_id: Uuid,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let Some(grant) = state.grant(grant_id) else {
        return Ok(());
    };
    if grant.kind != GrantKind::Allowance || grant.period_start != Some(state.account.period_start)
    {
        return Ok(());
    }
    let Some(allowance) = state.pools.get(&grant.pool).and_then(|p| p.allowance) else {
        return Ok(());
    };
    if grant.amount <= allowance {
        return Ok(());
    }
    let given = grant.amount - grant.remaining;
    let allowed = (allowance - given).max(0);
    let excess = grant.remaining - allowed;
    if excess > 0 {
        let refs = EntryRefs {
            metadata: Some(json!({"reason": "the period's allowance was cut by a plan change"})),
            ..EntryRefs::default()
        };
        state.change_grant(grant_id, -excess, EntryKind::Adjustment, refs, now)?;
    }
    state.update_grant(grant_id, |g| g.amount = allowance.max(given))?;
    Ok(())
}

/// Marks reservation `index` finished.
pub fn finish(
    state: &mut AccountState,
    index: usize,
    status: ReservationStatus,
    debit: Option<(Uuid, i64)>,
    now: DateTime<Utc>,
) {
    let r = &mut state.reservations[index];
    r.status = status;
    r.debit_id = debit.map(|d| d.0);
    r.committed_amount = debit.map(|d| d.1);
    r.updated_at = now;
    state.effects.reservations.insert(r.id);
}

/// The active hold `id`, or why it cannot be settled.
pub fn active(state: &AccountState, id: Uuid) -> Result<usize, LedgerError> {
    let index = state
        .reservation_index(id)
        .ok_or(LedgerError::ReservationNotFound(id))?;
    let status = state.reservations[index].status;
    if status != ReservationStatus::Active {
        return Err(LedgerError::ReservationNotActive { id, status });
    }
    Ok(index)
}

/// Releases every active hold whose TTL ended by `upto` (status `expired`), oldest first. Each
/// part goes back to its grant if that grant still counted when the hold lapsed.
pub fn release_lapsed(
    state: &mut AccountState,
    upto: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, LedgerError> {
    let mut lapsed: Vec<(DateTime<Utc>, Uuid, usize)> = state
        .reservations
        .iter()
        .enumerate()
        .filter(|(_, r)| r.status == ReservationStatus::Active && r.expires_at <= upto)
        .map(|(i, r)| (r.expires_at, r.id, i))
        .collect();
    lapsed.sort();
    let key_id = state.key_id().clone();
    for (expires_at, id, index) in &lapsed {
        return_holds(state, *index, &[], None, *expires_at, now)?;
        finish(state, *index, ReservationStatus::Expired, None, now);
        let r = &state.reservations[*index];
        let (pool, amount) = (r.pool.clone(), r.amount);
        state.emit(
            alerts::RESERVATION_EXPIRED,
            json!({"key_id": key_id, "reservation_id": id, "pool": pool, "amount": amount,
                   "expires_at": expires_at}),
            now,
        );
        alerts::thresholds_resolved(state, &pool, now)?;
    }
    Ok(lapsed.len())
}

/// Returns everything an active hold took.
pub fn release(
    state: &mut AccountState,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<Reservation, LedgerError> {
    let index = active(state, id)?;
    return_holds(state, index, &[], None, now, now)?;
    finish(state, index, ReservationStatus::Released, None, now);
    let pool = state.reservations[index].pool.clone();
    alerts::thresholds_resolved(state, &pool, now)?;
    view::reservation(state, index, now)
}
