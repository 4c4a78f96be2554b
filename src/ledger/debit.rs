//! Rule 1: the weighted debit. It takes all of its cost or nothing: from the pool's grants in
//! consumption order, then from the overage headroom, else it is refused with everything the
//! 402 tells the customer. A dry run answers exactly the same and changes nothing.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::alerts;
use super::error::{Exhausted, LedgerError};
use super::model::{Debit, Drawn};
use super::order::draw;
use super::pricing::{price, DebitSpec};
use super::state::{AccountState, DebitRecord, EntryRefs};
use super::types::{EntryKind, GrantKind, PoolName};
use super::view;

/// A debit request after validation.
#[derive(Debug, Clone, PartialEq)]
pub struct DebitRequest {
    pub spec: DebitSpec,
    pub metadata: Value,
    pub dry_run: bool,
    /// The Unkey keyId that made the debit, when it came through `/v1/verify`.
    pub source_key_id: Option<String>,
}

/// The refusal of a cost the pool cannot cover (a debit may go down to `-overage_limit`; a hold
/// only takes what the grants have, so it passes an overage limit of 0).
pub fn exhausted(
    state: &AccountState,
    pool: &PoolName,
    operation: Option<&str>,
    required: i64,
    available: i64,
    overage_limit: i64,
    now: DateTime<Utc>,
) -> Result<Exhausted, LedgerError> {
    let counters = state.pool(pool)?;
    Ok(Exhausted {
        key_id: state.key_id().clone(),
        pool: pool.clone(),
        operation: operation.map(str::to_owned),
        required,
        available,
        allowed: counters.allowance,
        used: counters.used,
        overage_limit,
        period_start: state.account.period_start,
        reset_at: state.account.period_end,
        grants: view::pool_grants(state, pool, now),
        next_allowance: view::next_allowance(state, pool),
        packs: view::pack_offers(state, pool),
        top_up_url: None,
        key_cap: None,
    })
}

pub fn debit(
    state: &mut AccountState,
    request: &DebitRequest,
    now: DateTime<Utc>,
) -> Result<Debit, LedgerError> {
    let charge = price(&state.plan, &request.spec)?;
    let pool = charge.pool;
    let cost = charge.cost;
    let operation = request.spec.operation.as_ref().map(|o| o.to_string());
    let counters = state.pool(&pool)?.clone();
    let overrides = state
        .account
        .overrides
        .as_ref()
        .and_then(|o| o.applied_to(&pool, request.spec.operation.as_ref()));
    let id = Uuid::now_v7();
    let refs = || EntryRefs {
        operation: operation.clone(),
        debit_id: Some(id),
        source_key_id: request.source_key_id.clone(),
        ..EntryRefs::default()
    };

    let available = state.available(&pool, now)?.unwrap_or(0);
    let refusal = |state: &AccountState| {
        let limit = counters.overage_limit;
        exhausted(
            state,
            &pool,
            operation.as_deref(),
            cost,
            available,
            limit,
            now,
        )
    };
    // A member key's cap is checked first: its refusal says the key, not the pool, is spent.
    let source = request.source_key_id.as_deref();
    super::members::check_cap(state, source, &pool, cost, || refusal(state))?;
    let mut drawn = Vec::new();
    let mut overage = 0;
    if counters.allowance.is_none() {
        // Unlimited: always succeeds, still journaled.
        if !request.dry_run {
            state.journal(&pool, EntryKind::Debit, -cost, refs(), now, now)?;
        }
    } else {
        if available.saturating_sub(cost) < -counters.overage_limit {
            let refusal = refusal(state)?;
            if !request.dry_run {
                alerts::exhausted(state, &refusal, now);
            }
            return Err(LedgerError::CreditsExhausted(Box::new(refusal)));
        }
        let granted = state.drawable(&pool, now);
        let covered: i64 = granted.iter().map(|(_, r)| *r).sum::<i64>().min(cost);
        let taken = draw(&granted, covered)
            .ok_or_else(|| super::error::corrupt("grants cannot cover what they hold"))?;
        overage = cost - covered;
        for (grant_id, take) in taken {
            let kind = state
                .grant(grant_id)
                .map(|g| g.kind)
                .ok_or_else(|| super::error::corrupt("a drawn grant vanished"))?;
            drawn.push(Drawn {
                grant_id,
                kind,
                amount: take,
            });
            if !request.dry_run {
                state.change_grant(grant_id, -take, EntryKind::Debit, refs(), now)?;
            }
        }
        if overage > 0 && !request.dry_run {
            state.pool_mut(&pool)?.overage_used += overage;
            state.journal(&pool, EntryKind::Overage, -overage, refs(), now, now)?;
        }
    }
    let remaining = match state.available(&pool, now)? {
        // A dry run changed nothing: what would be left.
        Some(available) if request.dry_run => Some(available - cost),
        other => other,
    };

    let debit = Debit {
        id: (!request.dry_run).then_some(id),
        key_id: state.key_id().clone(),
        pool: pool.clone(),
        operation: operation.clone(),
        quantity: request.spec.quantity,
        cost,
        remaining,
        reset_at: state.account.period_end,
        drawn: drawn.clone(),
        overage,
        reservation_id: None,
        refunded: 0,
        source_key_id: request.source_key_id.clone(),
        plan_id: state.plan.id.clone(),
        plan_version: state.plan.version,
        overrides: overrides.clone(),
        metadata: request.metadata.clone(),
        dry_run: request.dry_run,
        created_at: now,
    };
    if !request.dry_run {
        book(
            state,
            DebitRecord {
                id,
                pool,
                operation,
                quantity: request.spec.quantity,
                cost,
                plan_id: state.plan.id.clone(),
                plan_version: state.plan.version,
                remaining,
                reset_at: state.account.period_end,
                drawn,
                metadata: request.metadata.clone(),
                created_at: now,
                reservation_id: None,
                refunded: 0,
                overage,
                source_key_id: request.source_key_id.clone(),
                period_start: Some(state.account.period_start),
                overrides,
                member_since: None,
            },
            now,
        )?;
    }
    Ok(debit)
}

/// Books an accepted debit, however it was made (a debit, a committed hold): the debit record,
/// the period's `used`, the thresholds it crossed and the usage rollup.
pub fn book(
    state: &mut AccountState,
    mut record: DebitRecord,
    now: DateTime<Utc>,
) -> Result<(), LedgerError> {
    let pool = record.pool.clone();
    // Only this period's allowance: a hold made before the roll may commit from the last one.
    let from_allowance: i64 = record
        .drawn
        .iter()
        .filter(|d| current_allowance(state, d.grant_id))
        .map(|d| d.amount)
        .sum();
    let counters = state.pool_mut(&pool)?;
    counters.used =
        super::error::checked(counters.used.checked_add(record.cost), "the period's use")?;
    let old_used = counters.allowance_used;
    counters.allowance_used = super::error::checked(
        old_used.checked_add(from_allowance),
        "the period's allowance use",
    )?;
    let new_used = counters.allowance_used;
    alerts::thresholds_reached(state, &pool, old_used, new_used, record.remaining, now)?;
    state.add_usage(
        now,
        &pool,
        record.operation.as_deref(),
        record.source_key_id.as_deref(),
        record.cost,
    )?;
    record.member_since = super::members::add_use(
        state,
        record.source_key_id.as_deref(),
        &pool,
        record.cost,
        now,
    )?;
    state.add_debit(record);
    Ok(())
}

/// Whether a grant is the allowance grant of the account's current period.
pub fn current_allowance(state: &AccountState, grant_id: Uuid) -> bool {
    state.grant(grant_id).is_some_and(|g| {
        g.kind == GrantKind::Allowance && g.period_start == Some(state.account.period_start)
    })
}
