//! Refunds: (part of) a debit's credits come back. Its overage part first, then its grants in
//! reverse order of drawing. A grant that has expired or was voided meanwhile cannot take credits
//! back: that part becomes a new `refund` grant that expires with the current period. Overage of
//! an earlier period was billed with that period, so it too comes back as a `refund` grant.
//! Refunds never exceed the debit.

use chrono::{DateTime, Utc};
use serde_json::json;
use uuid::Uuid;

use super::alerts;
use super::error::{corrupt, LedgerError};
use super::model::{Refund, RefundPart};
use super::release::cap_cut_allowance;
use super::state::{AccountState, EntryRefs, NewGrant, RefundRecord};
use super::types::{EntryKind, GrantKind};

pub fn refund(
    state: &mut AccountState,
    debit_id: Uuid,
    amount: Option<i64>,
    reason: Option<String>,
    now: DateTime<Utc>,
) -> Result<Refund, LedgerError> {
    let index = state
        .debits
        .iter()
        .position(|d| d.id == debit_id)
        .ok_or(LedgerError::DebitNotFound(debit_id))?;
    let debit = state.debits[index].clone();
    let refundable = debit.cost - debit.refunded;
    let amount = amount.unwrap_or(refundable);
    if amount > refundable || amount == 0 {
        return Err(LedgerError::RefundExceedsDebit {
            cost: debit.cost,
            refunded: debit.refunded,
            requested: amount,
        });
    }
    let pool = debit.pool.clone();
    let same_period = debit.in_period(&state.account);
    let unlimited = state.pool(&pool)?.allowance.is_none();
    let already = |grant: Option<Uuid>| -> i64 {
        state
            .refunds
            .iter()
            .filter(|r| r.debit_id == debit_id)
            .flat_map(|r| &r.parts)
            .filter(|p| p.grant_id == grant)
            .map(|p| p.amount)
            .sum()
    };
    // The parts a refund can return, in the order it returns them. A debit that drew from no
    // grant and no overage was made while the pool was unlimited.
    let grantless = unlimited || (debit.drawn.is_empty() && debit.overage == 0);
    let mut sources: Vec<(Option<Uuid>, i64)> = Vec::new();
    if debit.overage > 0 || grantless {
        let part = if grantless { debit.cost } else { debit.overage };
        sources.push((None, part - already(None)));
    }
    for part in debit.drawn.iter().rev() {
        sources.push((
            Some(part.grant_id),
            part.amount - already(Some(part.grant_id)),
        ));
    }

    let refund_id = Uuid::now_v7();
    let refs = |metadata: Option<serde_json::Value>| EntryRefs {
        debit_id: Some(debit_id),
        metadata,
        ..EntryRefs::default()
    };
    let mut left = amount;
    let mut parts = Vec::new();
    for (grant, capacity) in sources {
        let give = left.min(capacity.max(0));
        if give == 0 {
            continue;
        }
        left -= give;
        let open = grant
            .and_then(|id| state.grant(id))
            .is_some_and(|g| g.voided_at.is_none() && g.expires_at.is_none_or(|e| e > now));
        let returned_to = match grant {
            // Nothing was taken from a balance: the refund is recorded, no credits come back.
            None if grantless => {
                state.journal(&pool, EntryKind::Refund, give, refs(None), now, now)?;
                None
            }
            None if same_period => {
                // Overage still owed this period: the refund pays it back.
                state.pool_mut(&pool)?.overage_used -= give;
                let metadata = Some(json!({"refund_id": refund_id}));
                state.journal(&pool, EntryKind::Overage, give, refs(metadata), now, now)?;
                None
            }
            Some(grant_id) if open => {
                state.change_grant(grant_id, give, EntryKind::Refund, refs(None), now)?;
                cap_cut_allowance(state, grant_id, now)?;
                Some(grant_id)
            }
            _ => {
                let id = state.add_grant(
                    NewGrant {
                        pool: pool.clone(),
                        kind: GrantKind::Refund,
                        amount: give,
                        effective_at: now,
                        expires_at: Some(state.account.period_end),
                        priority: 0,
                        period_start: None,
                        metadata: json!({"debit_id": debit_id}),
                        pack: None,
                        entry_kind: EntryKind::Refund,
                        refs: EntryRefs::default(),
                        balance_at: now,
                    },
                    now,
                )?;
                Some(id)
            }
        };
        parts.push(RefundPart {
            grant_id: grant,
            amount: give,
            returned_to,
        });
    }
    if left > 0 {
        return Err(corrupt(format!(
            "debit {debit_id} could not place {left} refunded credits"
        )));
    }
    if same_period {
        // What goes back to this period's allowance grant is allowance no longer used.
        let to_allowance: i64 = parts
            .iter()
            .filter(|p| {
                p.grant_id
                    .is_some_and(|id| super::debit::current_allowance(state, id))
            })
            .map(|p| p.amount)
            .sum();
        let counters = state.pool_mut(&pool)?;
        counters.used -= amount;
        counters.allowance_used = (counters.allowance_used - to_allowance).max(0);
        super::members::refund_use(state, &debit, amount, now)?;
    }
    state.debits[index].refunded += amount;
    state.effects.debits.insert(debit_id);
    let record = RefundRecord {
        id: refund_id,
        debit_id,
        pool: pool.clone(),
        amount,
        reason: reason.clone(),
        parts: parts.clone(),
        created_at: now,
    };
    state.refunds.push(record.clone());
    state.effects.refunds.push(record);
    alerts::thresholds_resolved(state, &pool, now)?;
    Ok(Refund {
        id: refund_id,
        debit_id,
        key_id: state.key_id().to_string(),
        pool: pool.to_string(),
        amount,
        reason,
        parts,
        remaining: state.available(&pool, now)?,
        created_at: now,
    })
}
