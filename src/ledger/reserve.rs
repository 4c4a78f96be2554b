//! Reservations: a hold of credits for long work. A hold draws from the grants in consumption
//! order at once (`hold` entries), so `available` drops, and pins the grants it drew from; it
//! never goes into overage. Across a period roll a hold stays valid; held allowance is not unused
//! allowance, so it does not roll over.

use chrono::{DateTime, Duration, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::alerts;
use super::debit::exhausted;
use super::error::LedgerError;
use super::model::{Drawn, Reservation};
use super::order::draw;
use super::pricing::{price, DebitSpec};
use super::state::{AccountState, EntryRefs, ReservationRecord};
use super::types::{EntryKind, ReservationStatus};
use super::view;

/// The TTL of a hold when the request names none, and the longest allowed.
pub const DEFAULT_TTL_SECONDS: i64 = 300;
pub const MAX_TTL_SECONDS: i64 = 86_400;

#[derive(Debug, Clone, PartialEq)]
pub struct ReservationRequest {
    pub spec: DebitSpec,
    pub ttl_seconds: i64,
    pub metadata: Value,
    /// The member key of a shared account the hold is made for.
    pub source_key_id: Option<String>,
}

pub fn reserve(
    state: &mut AccountState,
    request: &ReservationRequest,
    now: DateTime<Utc>,
) -> Result<Reservation, LedgerError> {
    let charge = price(&state.plan, &request.spec)?;
    let pool = charge.pool;
    let overrides = state
        .account
        .overrides
        .as_ref()
        .and_then(|o| o.applied_to(&pool, request.spec.operation.as_ref()));
    let operation = request.spec.operation.as_ref().map(|o| o.to_string());
    let counters = state.pool(&pool)?.clone();
    let id = Uuid::now_v7();
    let available = state.available(&pool, now)?.unwrap_or(0);
    // A hold never goes into overage: it is refused as a pool with no overage limit.
    let refusal = |state: &AccountState| {
        exhausted(
            state,
            &pool,
            operation.as_deref(),
            charge.cost,
            available,
            0,
            now,
        )
    };
    let source = request.source_key_id.as_deref();
    super::members::check_cap(state, source, &pool, charge.cost, || refusal(state))?;
    let mut drawn = Vec::new();
    if counters.allowance.is_some() {
        let granted = state.drawable(&pool, now);
        let Some(taken) = draw(&granted, charge.cost).filter(|_| available >= charge.cost) else {
            let refusal = refusal(state)?;
            alerts::exhausted(state, &refusal, now);
            return Err(LedgerError::CreditsExhausted(Box::new(refusal)));
        };
        for (grant_id, take) in taken {
            let kind = state
                .grant(grant_id)
                .map(|g| g.kind)
                .ok_or_else(|| super::error::corrupt("a drawn grant vanished"))?;
            let refs = EntryRefs {
                operation: operation.clone(),
                reservation_id: Some(id),
                source_key_id: request.source_key_id.clone(),
                ..EntryRefs::default()
            };
            state.change_grant(grant_id, -take, EntryKind::Hold, refs, now)?;
            drawn.push(Drawn {
                grant_id,
                kind,
                amount: take,
            });
        }
    }
    state.reservations.push(ReservationRecord {
        id,
        pool,
        operation,
        quantity: request.spec.quantity,
        amount: charge.cost,
        status: ReservationStatus::Active,
        expires_at: now + Duration::seconds(request.ttl_seconds),
        plan_id: state.plan.id.clone(),
        plan_version: state.plan.version,
        drawn,
        metadata: request.metadata.clone(),
        debit_id: None,
        committed_amount: None,
        created_at: now,
        updated_at: now,
        source_key_id: request.source_key_id.clone(),
        overrides,
    });
    state.effects.reservations.insert(id);
    view::reservation(state, state.reservations.len() - 1, now)
}
