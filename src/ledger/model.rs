//! The ledger's records as the API shows them.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use uuid::Uuid;

use super::types::{EntryKind, GrantKind, GrantStatus, KeyId, PlanId, PoolName, ReservationStatus};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct PeriodView {
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Account {
    pub key_id: KeyId,
    pub plan: PlanId,
    pub billing_anchor: DateTime<Utc>,
    pub current_period: PeriodView,
    pub external_id: Option<String>,
    /// Every Unkey key whose identity `externalId` equals `external_id` draws from this account.
    #[serde(default)]
    pub shared: bool,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    /// The auto top-up policy; null without one.
    #[serde(default)]
    pub auto_top_up: Option<super::top_up::AutoTopUp>,
    /// What the account changes of its plan; null without overrides.
    #[serde(default)]
    pub overrides: Option<super::overrides::Overrides>,
    pub balance: Balance,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Balance {
    pub key_id: KeyId,
    pub plan: PlanId,
    pub period: PeriodView,
    pub pools: Vec<PoolBalance>,
}

impl Balance {
    pub fn pool(&self, pool: &PoolName) -> Option<&PoolBalance> {
        self.pools.iter().find(|p| p.pool == *pool)
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PoolBalance {
    pub pool: PoolName,
    /// `None` for an unlimited pool.
    pub available: Option<i64>,
    pub reserved: i64,
    pub allowance: Option<i64>,
    /// Every credit this period's accepted debits took, from any grant or the overage.
    pub used: i64,
    /// The part of `used` the period's allowance paid for: what thresholds measure.
    #[serde(default)]
    pub allowance_used: i64,
    pub overage_used: i64,
    pub overage_limit: i64,
    /// Active grants (in effect, not expired, not voided) in consumption order.
    pub grants: Vec<GrantSummary>,
    /// The allowance the next period starts with, and when; `None` for an unlimited pool.
    #[serde(default)]
    pub next_allowance: Option<NextAllowance>,
    /// The recent pace and when it runs the pool out: computed when one account is read
    /// (`None` in lists and in the answers of writes).
    #[serde(default)]
    pub forecast: Option<super::forecast::Forecast>,
    /// The account's own terms for this pool, which `allowance` and `overage_limit` already
    /// show; `None` when the plan's apply.
    #[serde(default)]
    pub overrides: Option<super::overrides::PoolOverride>,
}

/// What the next period brings back into a pool: its allowance, at the period's end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct NextAllowance {
    pub amount: i64,
    pub at: DateTime<Utc>,
}

/// A pack of the plan's catalogue, as a refusal offers it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PackOffer {
    pub id: super::types::PackId,
    pub credits: i64,
    pub price: Option<super::plan::Price>,
    pub expires_in_days: Option<i32>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct GrantSummary {
    pub id: Uuid,
    pub kind: GrantKind,
    pub amount: i64,
    pub remaining: i64,
    pub priority: i32,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Drawn {
    pub grant_id: Uuid,
    pub kind: GrantKind,
    pub amount: i64,
}

/// An accepted (or, with `dry_run`, would-be) debit. The idempotency record stores its JSON, so
/// a replay and the original answer agree.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Debit {
    pub id: Option<Uuid>,
    pub key_id: KeyId,
    pub pool: PoolName,
    pub operation: Option<String>,
    pub quantity: i64,
    pub cost: i64,
    /// The pool's available credits after the debit; `None` for an unlimited pool.
    pub remaining: Option<i64>,
    pub reset_at: DateTime<Utc>,
    pub drawn: Vec<Drawn>,
    /// The part of the cost taken below zero, from the pool's overage.
    #[serde(default)]
    pub overage: i64,
    /// The reservation this debit committed, if any.
    #[serde(default)]
    pub reservation_id: Option<Uuid>,
    /// Credits refunded from this debit so far (at the time of the answer).
    #[serde(default)]
    pub refunded: i64,
    /// The Unkey keyId that made the debit through `/v1/verify` (in a shared account, one of
    /// several keys); `None` for a debit made on the account directly.
    #[serde(default)]
    pub source_key_id: Option<String>,
    pub plan_id: PlanId,
    pub plan_version: i32,
    /// The account's overrides the debit was priced under (`pool`: its pool's terms,
    /// `operation`: its price); `None` when the plan's terms applied.
    #[serde(default)]
    pub overrides: Option<serde_json::Value>,
    pub metadata: serde_json::Value,
    pub dry_run: bool,
    pub created_at: DateTime<Utc>,
}

/// A debit as history shows it: what it took, when, and what has been refunded since.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DebitRecord {
    pub id: Uuid,
    pub key_id: String,
    pub pool: String,
    pub operation: Option<String>,
    pub quantity: i64,
    pub cost: i64,
    /// The part of the cost taken below zero, from the pool's overage.
    pub overage: i64,
    /// Credits refunded from it so far.
    pub refunded: i64,
    /// The pool's available credits just after the debit (`None`: unlimited).
    pub remaining: Option<i64>,
    pub reset_at: DateTime<Utc>,
    pub drawn: Vec<Drawn>,
    pub reservation_id: Option<Uuid>,
    pub source_key_id: Option<String>,
    pub plan_id: String,
    pub plan_version: i32,
    /// The account's overrides the debit was priced under; `None` when the plan's applied.
    pub overrides: Option<serde_json::Value>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    /// Its refunds, oldest first.
    pub refunds: Vec<RefundRecord>,
}

/// A refund as a debit's history shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundRecord {
    pub id: Uuid,
    pub amount: i64,
    pub reason: Option<String>,
    pub parts: Vec<RefundPart>,
    pub created_at: DateTime<Utc>,
}

/// A page of debits, newest first.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DebitPage {
    pub data: Vec<DebitRecord>,
    pub next_cursor: Option<String>,
}

/// A reservation as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reservation {
    pub id: Uuid,
    pub key_id: String,
    pub pool: String,
    pub operation: Option<String>,
    pub quantity: i64,
    /// Credits held.
    pub amount: i64,
    pub status: ReservationStatus,
    pub expires_at: DateTime<Utc>,
    /// The pool's available credits at the time of the answer (`None`: unlimited).
    pub remaining: Option<i64>,
    pub drawn: Vec<Drawn>,
    pub debit_id: Option<Uuid>,
    pub committed_amount: Option<i64>,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

/// Where a refund's part went.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RefundPart {
    /// The grant the debit drew this part from; `None` for its overage (or an unlimited pool).
    pub grant_id: Option<Uuid>,
    pub amount: i64,
    /// The grant the credits went back to: the same one, or a new `refund` grant when that one
    /// had expired or was voided; `None` when the part settled overage or an unlimited pool.
    pub returned_to: Option<Uuid>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Refund {
    pub id: Uuid,
    pub debit_id: Uuid,
    pub key_id: String,
    pub pool: String,
    pub amount: i64,
    pub reason: Option<String>,
    pub parts: Vec<RefundPart>,
    /// The pool's available credits after the refund (`None`: unlimited).
    pub remaining: Option<i64>,
    pub created_at: DateTime<Utc>,
}

/// A grant as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Uuid,
    pub key_id: String,
    pub pool: String,
    pub kind: GrantKind,
    pub amount: i64,
    pub remaining: i64,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    /// At the time of the answer.
    pub status: GrantStatus,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub voided_at: Option<DateTime<Utc>>,
    /// The catalogue pack it was made from; null otherwise.
    #[serde(default)]
    pub pack: Option<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantPage {
    pub data: Vec<Grant>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum AdjustmentOp {
    Set,
    Increment,
    Decrement,
}

impl AdjustmentOp {
    pub fn as_str(self) -> &'static str {
        match self {
            AdjustmentOp::Set => "set",
            AdjustmentOp::Increment => "increment",
            AdjustmentOp::Decrement => "decrement",
        }
    }
}

/// An adjustment as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Adjustment {
    pub id: Uuid,
    pub key_id: String,
    pub pool: String,
    pub op: AdjustmentOp,
    pub amount: i64,
    /// The signed change the adjustment made to the pool's available credits.
    pub delta: i64,
    pub reason: String,
    /// The pool's available credits after the adjustment.
    pub available: i64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Entry {
    pub id: i64,
    pub key_id: String,
    pub pool: String,
    pub kind: EntryKind,
    pub amount: i64,
    pub balance_after: Option<i64>,
    pub grant_id: Option<Uuid>,
    pub operation: Option<String>,
    pub debit_id: Option<Uuid>,
    pub reservation_id: Option<Uuid>,
    pub adjustment_id: Option<Uuid>,
    /// The Unkey keyId whose call wrote this entry, when it came through `/v1/verify`.
    pub source_key_id: Option<String>,
    pub created_at: DateTime<Utc>,
    pub metadata: serde_json::Value,
}

#[derive(Debug, Clone, Serialize)]
pub struct EntryPage {
    pub data: Vec<Entry>,
    pub next_cursor: Option<String>,
}
