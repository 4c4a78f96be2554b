//! An account's state as the state machine sees it, and the effects a command leaves on it.
//!
//! Storage loads an [`AccountState`] (the account, its plan, its pools, the grants, holds and
//! debits in play, its idempotency records and this period's alerts), the commands change it
//! through the few primitives below, and storage writes back what [`Effects`] lists. Every
//! change of a grant's `remaining` goes through [`AccountState::change_grant`] or
//! [`AccountState::add_grant`], which journal it, so rule 6 (remaining = Σ entries) holds by
//! construction.

use std::collections::{BTreeMap, BTreeSet};

use chrono::{DateTime, DurationRound, TimeDelta, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use uuid::Uuid;

use super::error::{checked, corrupt, LedgerError};
use super::model::{AdjustmentOp, Drawn, RefundPart};
use super::order::OrderKey;
use super::plan::Plan;
use super::types::{EntryKind, GrantKind, KeyId, PackId, PlanId, PoolName, ReservationStatus};

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AccountRecord {
    pub key_id: KeyId,
    pub plan_id: PlanId,
    pub billing_anchor: DateTime<Utc>,
    pub period_start: DateTime<Utc>,
    pub period_end: DateTime<Utc>,
    pub external_id: Option<String>,
    pub shared: bool,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The auto top-up policy, if any.
    #[serde(default)]
    pub auto_top_up: Option<super::top_up::AutoTopUp>,
    /// What the account changes of its plan, if anything.
    #[serde(default)]
    pub overrides: Option<super::overrides::Overrides>,
}

/// One pool's terms and counters in the current period. `allowance: None` is unlimited.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolCounters {
    pub pool: PoolName,
    pub allowance: Option<i64>,
    /// Every credit the period's accepted debits took, whatever grant or overage paid for it.
    pub used: i64,
    /// The part of `used` this period's allowance grant paid for (net of refunds): what the
    /// percentage thresholds measure. At most the allowance.
    #[serde(default)]
    pub allowance_used: i64,
    pub overage_limit: i64,
    pub overage_used: i64,
    pub period_start: DateTime<Utc>,
    /// The auto top-up request waiting for its pack, if any (kept across periods).
    #[serde(default)]
    pub top_up_in_flight: Option<Uuid>,
    /// Auto top-up requests made this period.
    #[serde(default)]
    pub top_ups_requested: i32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct GrantRecord {
    pub id: Uuid,
    pub pool: PoolName,
    pub kind: GrantKind,
    pub amount: i64,
    pub remaining: i64,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    /// The period an allowance or rollover grant belongs to.
    pub period_start: Option<DateTime<Utc>>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub voided_at: Option<DateTime<Utc>>,
    /// The catalogue pack it was made from.
    #[serde(default)]
    pub pack: Option<PackId>,
    /// When `grant.expiring` was announced for it.
    #[serde(default)]
    pub expiry_warned_at: Option<DateTime<Utc>>,
}

impl GrantRecord {
    /// In effect at `at`: effective, not expired, not voided (it may have nothing left).
    pub fn is_active(&self, at: DateTime<Utc>) -> bool {
        self.voided_at.is_none()
            && self.effective_at <= at
            && self.expires_at.is_none_or(|e| e > at)
    }

    pub fn order_key(&self) -> OrderKey {
        OrderKey {
            expires_at: self.expires_at,
            priority: self.priority,
            created_at: self.created_at,
            id: self.id,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReservationRecord {
    pub id: Uuid,
    pub pool: PoolName,
    pub operation: Option<String>,
    pub quantity: i64,
    pub amount: i64,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    pub plan_id: PlanId,
    pub plan_version: i32,
    /// The grants the hold drew from, in consumption order.
    pub drawn: Vec<Drawn>,
    pub metadata: Value,
    pub debit_id: Option<Uuid>,
    pub committed_amount: Option<i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The member key of a shared account the hold was made for.
    #[serde(default)]
    pub source_key_id: Option<String>,
    /// The account's overrides the hold was priced under (its pool's terms, its operation's
    /// price), carried to the debit that commits it.
    #[serde(default)]
    pub overrides: Option<Value>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DebitRecord {
    pub id: Uuid,
    pub pool: PoolName,
    pub operation: Option<String>,
    pub quantity: i64,
    pub cost: i64,
    pub plan_id: PlanId,
    pub plan_version: i32,
    pub remaining: Option<i64>,
    pub reset_at: DateTime<Utc>,
    pub drawn: Vec<Drawn>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
    pub reservation_id: Option<Uuid>,
    pub refunded: i64,
    pub overage: i64,
    pub source_key_id: Option<String>,
    /// The start of the period the debit counts in; `None` for debits stored before it was
    /// recorded.
    pub period_start: Option<DateTime<Utc>>,
    /// The account's overrides the debit was made under; `None` when the plan's terms applied.
    #[serde(default)]
    pub overrides: Option<Value>,
    /// The membership (its `created_at`) whose use the debit counts in, when a member key of
    /// the account made it as a member; a refund gives back that membership's use only.
    #[serde(default)]
    pub member_since: Option<DateTime<Utc>>,
}

impl DebitRecord {
    /// Whether the debit counts in the account's current period (its `used`, its overage).
    pub fn in_period(&self, account: &AccountRecord) -> bool {
        match self.period_start {
            Some(start) => start == account.period_start,
            None => self.created_at >= account.period_start && self.reset_at == account.period_end,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub id: Uuid,
    pub debit_id: Uuid,
    pub pool: PoolName,
    pub amount: i64,
    pub reason: Option<String>,
    pub parts: Vec<RefundPart>,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AdjustmentRecord {
    pub id: Uuid,
    pub pool: PoolName,
    pub op: AdjustmentOp,
    pub amount: i64,
    pub delta: i64,
    pub reason: String,
    pub available_after: i64,
    pub created_at: DateTime<Utc>,
}

/// A journal line. `balance_after` is the pool's available credits after it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EntryRecord {
    pub pool: PoolName,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_after: Option<i64>,
    pub grant_id: Option<Uuid>,
    pub operation: Option<String>,
    pub debit_id: Option<Uuid>,
    pub reservation_id: Option<Uuid>,
    pub adjustment_id: Option<Uuid>,
    pub source_key_id: Option<String>,
    pub metadata: Value,
    pub created_at: DateTime<Utc>,
}

/// What an entry refers to besides its grant.
#[derive(Debug, Clone, Default)]
pub struct EntryRefs {
    pub grant_id: Option<Uuid>,
    pub operation: Option<String>,
    pub debit_id: Option<Uuid>,
    pub reservation_id: Option<Uuid>,
    pub adjustment_id: Option<Uuid>,
    pub source_key_id: Option<String>,
    pub metadata: Option<Value>,
}

/// An outbox event, written with the change it reports.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventRecord {
    pub id: Uuid,
    #[serde(rename = "type")]
    pub event_type: String,
    pub payload: Value,
    pub created_at: DateTime<Utc>,
}

/// One hourly bucket of the usage rollup.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
pub struct UsageBucket {
    pub hour: DateTime<Utc>,
    pub pool: PoolName,
    /// Empty when the debit named no operation.
    pub operation: String,
    /// Empty when the debit did not come through `/v1/verify`.
    pub source_key_id: String,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct UsageCount {
    pub credits: i64,
    pub count: i64,
}

/// The stored answer to a request with an Idempotency-Key (scoped to the account).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdempotencyRecord {
    pub key: String,
    pub request_hash: String,
    pub response: Value,
    pub created_at: DateTime<Utc>,
}

/// What was announced for a pool in a period: thresholds reached (and resolved since), the
/// first refusal, and a low balance not yet recovered.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AlertRecord {
    pub pool: PoolName,
    pub period_start: DateTime<Utc>,
    pub thresholds_reached: Vec<i32>,
    pub thresholds_resolved: Vec<i32>,
    pub exhausted_at: Option<DateTime<Utc>>,
    /// When `credits.balance_low` was announced and the pool has not recovered since.
    #[serde(default)]
    pub low_at: Option<DateTime<Utc>>,
}

/// A member key of a shared account: its per-period caps, and what it used in the period that
/// started at `period_start` (accepted debits and committed holds, less refunds), per pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MemberRecord {
    pub member_key_id: String,
    #[serde(default)]
    pub caps: BTreeMap<PoolName, i64>,
    pub period_start: Option<DateTime<Utc>>,
    #[serde(default)]
    pub used: BTreeMap<PoolName, i64>,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// What the commands applied so far changed: rows to write back (by key) and rows to append.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Effects {
    /// The account row is new (insert) rather than changed (update).
    pub account_created: bool,
    pub account_changed: bool,
    pub pools: BTreeSet<PoolName>,
    pub grants: BTreeSet<Uuid>,
    pub reservations: BTreeSet<Uuid>,
    pub debits: BTreeSet<Uuid>,
    pub alerts: BTreeSet<(PoolName, DateTime<Utc>)>,
    pub idempotency: BTreeSet<String>,
    pub entries: Vec<EntryRecord>,
    pub refunds: Vec<RefundRecord>,
    pub adjustments: Vec<AdjustmentRecord>,
    pub events: Vec<EventRecord>,
    pub usage: BTreeMap<UsageBucket, UsageCount>,
    pub top_up_requests: Vec<super::top_up::TopUpRequest>,
    pub top_up_settlements: Vec<super::top_up::TopUpSettlement>,
    /// Members whose use this period changed.
    pub members: BTreeSet<String>,
}

impl Effects {
    pub fn is_empty(&self) -> bool {
        *self == Effects::default()
    }
}

/// A new grant, before it is journaled.
#[derive(Debug, Clone)]
pub struct NewGrant {
    pub pool: PoolName,
    pub kind: GrantKind,
    pub amount: i64,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    pub period_start: Option<DateTime<Utc>>,
    pub metadata: Value,
    /// The catalogue pack it is made from.
    pub pack: Option<PackId>,
    /// The journal entry's kind: `grant`, or the kind of the operation that made it.
    pub entry_kind: EntryKind,
    pub refs: EntryRefs,
    /// The instant the entry's `balance_after` is taken at (a roll uses the boundary).
    pub balance_at: DateTime<Utc>,
}

impl NewGrant {
    /// An allowance or rollover grant of the period `[start, end)`.
    pub fn periodic(
        pool: &PoolName,
        kind: GrantKind,
        amount: i64,
        start: DateTime<Utc>,
        end: DateTime<Utc>,
        balance_at: DateTime<Utc>,
    ) -> Self {
        NewGrant {
            pool: pool.clone(),
            kind,
            amount,
            effective_at: start,
            expires_at: Some(end),
            priority: 0,
            period_start: Some(start),
            metadata: empty_object(),
            pack: None,
            entry_kind: EntryKind::Grant,
            refs: EntryRefs::default(),
            balance_at,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub struct AccountState {
    pub account: AccountRecord,
    /// The latest version of the account's plan, with the account's overrides applied: the
    /// terms every rule reads.
    pub plan: Plan,
    /// The plan as written, when the account has overrides (else `plan` is it).
    pub base_plan: Option<Plan>,
    pub pools: BTreeMap<PoolName, PoolCounters>,
    /// The grants in play: every one that is active or may still change, and those that holds
    /// and debits in play name.
    pub grants: Vec<GrantRecord>,
    /// Active holds, and any reservation a command names.
    pub reservations: Vec<ReservationRecord>,
    /// The debits commands name, and those made since the state was loaded.
    pub debits: Vec<DebitRecord>,
    /// The refunds of those debits.
    pub refunds: Vec<RefundRecord>,
    pub idempotency: BTreeMap<String, IdempotencyRecord>,
    pub alerts: BTreeMap<(PoolName, DateTime<Utc>), AlertRecord>,
    /// The members of a shared account that the commands speak for, by member key.
    pub members: BTreeMap<String, MemberRecord>,
    pub effects: Effects,
}

impl AccountState {
    pub fn key_id(&self) -> &KeyId {
        &self.account.key_id
    }

    /// The account's plan as written, without its overrides.
    pub fn base_plan(&self) -> &Plan {
        self.base_plan.as_ref().unwrap_or(&self.plan)
    }

    /// Puts the account on `plan` (as written) with its overrides applied.
    pub fn set_plan(&mut self, plan: &Plan) {
        match self.account.overrides.as_ref().filter(|o| !o.is_empty()) {
            Some(overrides) => {
                self.plan = super::overrides::effective(plan, overrides);
                self.base_plan = Some(plan.clone());
            }
            None => {
                self.plan = plan.clone();
                self.base_plan = None;
            }
        }
    }

    pub fn pool(&self, pool: &PoolName) -> Result<&PoolCounters, LedgerError> {
        self.pools
            .get(pool)
            .ok_or_else(|| corrupt(format!("pool {pool} of {} has no counters", self.key_id())))
    }

    pub fn pool_mut(&mut self, pool: &PoolName) -> Result<&mut PoolCounters, LedgerError> {
        self.effects.pools.insert(pool.clone());
        let key_id = self.account.key_id.clone();
        self.pools
            .get_mut(pool)
            .ok_or_else(|| corrupt(format!("pool {pool} of {key_id} has no counters")))
    }

    /// Sets a pool's counters, creating them if the pool is new to the account.
    pub fn put_pool(&mut self, counters: PoolCounters) {
        self.effects.pools.insert(counters.pool.clone());
        self.pools.insert(counters.pool.clone(), counters);
    }

    pub fn touch_account(&mut self, now: DateTime<Utc>) {
        self.account.updated_at = now;
        self.effects.account_changed = true;
    }

    pub fn grant(&self, id: Uuid) -> Option<&GrantRecord> {
        self.grants.iter().find(|g| g.id == id)
    }

    fn grant_index(&self, id: Uuid) -> Result<usize, LedgerError> {
        self.grants
            .iter()
            .position(|g| g.id == id)
            .ok_or_else(|| corrupt(format!("grant {id} of {} is not loaded", self.key_id())))
    }

    /// Changes a grant's expiry or voids it (no credits move).
    pub fn update_grant(
        &mut self,
        id: Uuid,
        f: impl FnOnce(&mut GrantRecord),
    ) -> Result<(), LedgerError> {
        let i = self.grant_index(id)?;
        f(&mut self.grants[i]);
        self.effects.grants.insert(id);
        Ok(())
    }

    /// Credits in the pool's grants active at `at`. The one definition of "granted".
    pub fn granted(&self, pool: &PoolName, at: DateTime<Utc>) -> Result<i64, LedgerError> {
        let sum = self
            .grants
            .iter()
            .filter(|g| g.pool == *pool && g.is_active(at))
            .try_fold(0i64, |sum, g| sum.checked_add(g.remaining));
        checked(sum, "the pool's credits")
    }

    /// The pool's available credits at `at`: active grants less the overage taken (holds are
    /// already out of their grants). `None` for an unlimited pool. The one definition of
    /// "available" (DESIGN.md section 2).
    pub fn available(
        &self,
        pool: &PoolName,
        at: DateTime<Utc>,
    ) -> Result<Option<i64>, LedgerError> {
        let counters = self.pool(pool)?;
        if counters.allowance.is_none() {
            return Ok(None);
        }
        let granted = self.granted(pool, at)?;
        Ok(Some(checked(
            granted.checked_sub(counters.overage_used),
            "the pool's balance",
        )?))
    }

    /// The drawable grants of a pool at `at` with what each has left, for `order::draw`.
    pub fn drawable(&self, pool: &PoolName, at: DateTime<Utc>) -> Vec<(OrderKey, i64)> {
        self.grants
            .iter()
            .filter(|g| g.pool == *pool && g.remaining > 0 && g.is_active(at))
            .map(|g| (g.order_key(), g.remaining))
            .collect()
    }

    /// Credits held by the pool's active reservations.
    pub fn reserved(&self, pool: &PoolName) -> i64 {
        self.reservations
            .iter()
            .filter(|r| r.pool == *pool && r.status == ReservationStatus::Active)
            .map(|r| r.amount)
            .sum()
    }

    /// Writes a journal line; its `balance_after` is the pool's available credits at `at`.
    pub fn journal(
        &mut self,
        pool: &PoolName,
        kind: EntryKind,
        amount: i64,
        refs: EntryRefs,
        at: DateTime<Utc>,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let balance_after = self.available(pool, at)?;
        self.effects.entries.push(EntryRecord {
            pool: pool.clone(),
            kind,
            amount,
            balance_after,
            grant_id: refs.grant_id,
            operation: refs.operation,
            debit_id: refs.debit_id,
            reservation_id: refs.reservation_id,
            adjustment_id: refs.adjustment_id,
            source_key_id: refs.source_key_id,
            metadata: refs.metadata.unwrap_or_else(empty_object),
            created_at: now,
        });
        Ok(())
    }

    /// Moves `amount` credits into (positive) or out of (negative) a grant, with its entry.
    pub fn change_grant(
        &mut self,
        id: Uuid,
        amount: i64,
        kind: EntryKind,
        refs: EntryRefs,
        now: DateTime<Utc>,
    ) -> Result<(), LedgerError> {
        let i = self.grant_index(id)?;
        let grant = &mut self.grants[i];
        let remaining = grant
            .remaining
            .checked_add(amount)
            .filter(|r| (0..=grant.amount).contains(r))
            .ok_or_else(|| {
                corrupt(format!(
                    "grant {id} has {} of {}; a change of {amount} leaves its range",
                    grant.remaining, grant.amount
                ))
            })?;
        grant.remaining = remaining;
        let pool = grant.pool.clone();
        self.effects.grants.insert(id);
        let refs = EntryRefs {
            grant_id: Some(id),
            ..refs
        };
        self.journal(&pool, kind, amount, refs, now, now)
    }

    /// Makes a grant and journals its credits. Returns its id.
    pub fn add_grant(&mut self, new: NewGrant, now: DateTime<Utc>) -> Result<Uuid, LedgerError> {
        let id = Uuid::now_v7();
        self.grants.push(GrantRecord {
            id,
            pool: new.pool.clone(),
            kind: new.kind,
            amount: new.amount,
            remaining: new.amount,
            effective_at: new.effective_at,
            expires_at: new.expires_at,
            priority: new.priority,
            period_start: new.period_start,
            metadata: new.metadata,
            created_at: now,
            voided_at: None,
            pack: new.pack,
            expiry_warned_at: None,
        });
        self.effects.grants.insert(id);
        self.journal(
            &new.pool,
            new.entry_kind,
            new.amount,
            EntryRefs {
                grant_id: Some(id),
                ..new.refs
            },
            new.balance_at,
            now,
        )?;
        Ok(id)
    }

    pub fn reservation_index(&self, id: Uuid) -> Option<usize> {
        self.reservations.iter().position(|r| r.id == id)
    }

    pub fn add_debit(&mut self, debit: DebitRecord) {
        self.effects.debits.insert(debit.id);
        self.debits.push(debit);
    }

    /// Adds a debit to the hourly usage rollup.
    pub fn add_usage(
        &mut self,
        at: DateTime<Utc>,
        pool: &PoolName,
        operation: Option<&str>,
        source_key_id: Option<&str>,
        cost: i64,
    ) -> Result<(), LedgerError> {
        let hour = at
            .duration_trunc(TimeDelta::hours(1))
            .map_err(|e| corrupt(format!("cannot truncate {at} to the hour: {e}")))?;
        let bucket = UsageBucket {
            hour,
            pool: pool.clone(),
            operation: operation.unwrap_or_default().to_owned(),
            source_key_id: source_key_id.unwrap_or_default().to_owned(),
        };
        let count = self.effects.usage.entry(bucket).or_default();
        count.credits = checked(count.credits.checked_add(cost), "usage")?;
        count.count += 1;
        Ok(())
    }

    /// Writes an event to the outbox, in the transaction of the change it reports.
    pub fn emit(&mut self, event_type: &str, payload: Value, now: DateTime<Utc>) {
        self.effects.events.push(EventRecord {
            id: Uuid::new_v4(),
            event_type: event_type.to_owned(),
            payload,
            created_at: now,
        });
    }

    /// This period's alert record of a pool, created empty if there is none.
    pub fn alerts_mut(&mut self, pool: &PoolName) -> &mut AlertRecord {
        let key = (pool.clone(), self.account.period_start);
        self.effects.alerts.insert(key.clone());
        self.alerts.entry(key).or_insert_with(|| AlertRecord {
            pool: pool.clone(),
            period_start: self.account.period_start,
            thresholds_reached: Vec::new(),
            thresholds_resolved: Vec::new(),
            exhausted_at: None,
            low_at: None,
        })
    }

    pub fn alerts(&self, pool: &PoolName) -> Option<&AlertRecord> {
        self.alerts.get(&(pool.clone(), self.account.period_start))
    }
}

pub fn empty_object() -> Value {
    Value::Object(Default::default())
}
