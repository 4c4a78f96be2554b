//! Grants an admin makes (a pack, a promotion, an adjustment) and voids.

use chrono::{DateTime, Utc};
use serde_json::Value;
use uuid::Uuid;

use super::alerts;
use super::error::LedgerError;
use super::model::Grant;
use super::pricing::PriceError;
use super::state::{AccountState, EntryRefs, NewGrant};
use super::types::{check_timestamp, EntryKind, GrantKind, InvalidField, PackId, PoolName};
use super::view;

/// What a grant holds: an amount given by the admin, or a pack of the account's plan.
#[derive(Debug, Clone, PartialEq)]
pub enum GrantSource {
    Amount {
        pool: PoolName,
        kind: GrantKind,
        amount: i64,
        expires_at: Option<DateTime<Utc>>,
    },
    /// A `pack` grant with the catalogue's pool, credits and expiry (counted from its
    /// effective time), as the plan's latest version defines them when it is made.
    Pack(PackId),
    /// A pack as it was sold (its credits, pool and expiry fixed at the sale), whatever the
    /// catalogue says now: a paid Checkout Session, a charged auto top-up.
    Sold {
        pack: PackId,
        pool: PoolName,
        credits: i64,
        expires_in_days: Option<i32>,
    },
}

/// A validated grant request.
#[derive(Debug, Clone, PartialEq)]
pub struct GrantRequest {
    pub source: GrantSource,
    pub effective_at: Option<DateTime<Utc>>,
    pub priority: i32,
    pub metadata: Value,
}

pub fn grant(
    state: &mut AccountState,
    request: &GrantRequest,
    now: DateTime<Utc>,
) -> Result<Grant, LedgerError> {
    let effective_at = request.effective_at.unwrap_or(now);
    let (pool, kind, amount, expires_at, pack) = match &request.source {
        GrantSource::Amount {
            pool,
            kind,
            amount,
            expires_at,
        } => (pool.clone(), *kind, *amount, *expires_at, None),
        GrantSource::Pack(id) => {
            let pack = state
                .plan
                .packs
                .get(id)
                .ok_or_else(|| LedgerError::UnknownPack {
                    pack: id.clone(),
                    known: state.plan.packs.keys().cloned().collect(),
                })?;
            (
                pack.pool.clone(),
                GrantKind::Pack,
                pack.credits,
                pack_expiry(effective_at, pack.expires_in_days)?,
                Some(id.clone()),
            )
        }
        GrantSource::Sold {
            pack,
            pool,
            credits,
            expires_in_days,
        } => (
            pool.clone(),
            GrantKind::Pack,
            *credits,
            pack_expiry(effective_at, *expires_in_days)?,
            Some(pack.clone()),
        ),
    };
    if !state.pools.contains_key(&pool) {
        return Err(PriceError::UnknownPool(pool).into());
    }
    grant_resolved(
        state,
        request,
        now,
        effective_at,
        (pool, kind, amount, expires_at, pack),
    )
}

/// A pack's expiry: `days` after `effective_at`, within the year 9999.
fn pack_expiry(
    effective_at: DateTime<Utc>,
    expires_in_days: Option<i32>,
) -> Result<Option<DateTime<Utc>>, LedgerError> {
    expires_in_days
        .map(|days| {
            check_timestamp(
                "effective_at",
                effective_at + chrono::Duration::days(i64::from(days)),
            )
            .map_err(|_| {
                LedgerError::Invalid(InvalidField::new(
                    "effective_at",
                    format!("is too late: the pack's {days} days would end after 9999-12-31"),
                ))
            })
        })
        .transpose()
}

/// What a grant comes to once its source is resolved: pool, kind, credits, expiry, pack.
type Resolved = (
    PoolName,
    GrantKind,
    i64,
    Option<DateTime<Utc>>,
    Option<PackId>,
);

fn grant_resolved(
    state: &mut AccountState,
    request: &GrantRequest,
    now: DateTime<Utc>,
    effective_at: DateTime<Utc>,
    (pool, kind, amount, expires_at, pack): Resolved,
) -> Result<Grant, LedgerError> {
    let pack_id = pack.clone();
    if let Some(expires_at) = expires_at {
        if expires_at <= now || expires_at <= effective_at {
            return Err(LedgerError::Invalid(InvalidField::new(
                "expires_at",
                "must lie in the future and after effective_at",
            )));
        }
    }
    let id = state.add_grant(
        NewGrant {
            pool: pool.clone(),
            kind,
            amount,
            effective_at,
            expires_at,
            priority: request.priority,
            period_start: None,
            metadata: request.metadata.clone(),
            pack,
            entry_kind: EntryKind::Grant,
            refs: EntryRefs::default(),
            balance_at: now,
        },
        now,
    )?;
    let key_id = state.key_id().to_string();
    let record = state
        .grant(id)
        .ok_or_else(|| super::error::corrupt("a new grant vanished"))?;
    let grant = view::grant(&key_id, record, now);
    let payload = serde_json::to_value(&grant).map_err(|e| super::error::corrupt(e.to_string()))?;
    state.emit(alerts::GRANT_CREATED, payload, now);
    alerts::thresholds_resolved(state, &pool, now)?;
    if kind == GrantKind::Pack {
        super::top_up::settle_with_grant(state, &pool, id, pack_id.as_ref(), now)?;
    }
    Ok(grant)
}

/// Voids a grant: what it had left leaves the balance with a `void` entry. Voiding a voided
/// grant changes nothing and answers the grant again.
pub fn void(state: &mut AccountState, id: Uuid, now: DateTime<Utc>) -> Result<Grant, LedgerError> {
    let grant = state.grant(id).ok_or(LedgerError::GrantNotFound(id))?;
    if grant.voided_at.is_none() {
        let left = grant.remaining;
        state.update_grant(id, |g| g.voided_at = Some(now))?;
        if left > 0 {
            state.change_grant(id, -left, EntryKind::Void, EntryRefs::default(), now)?;
        }
    }
    let key_id = state.key_id().to_string();
    let record = state.grant(id).ok_or(LedgerError::GrantNotFound(id))?;
    Ok(view::grant(&key_id, record, now))
}
