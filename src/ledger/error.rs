//! Why the ledger refuses a command: every answer that is not a success, in the domain's words.
//! The API maps each to a status and code; nothing here knows HTTP.

use chrono::{DateTime, Utc};
use uuid::Uuid;

use super::pricing::PriceError;
use super::types::{InvalidField, KeyId, PackId, PlanId, PoolName, ReservationStatus};

/// Why a debit or hold was refused: everything the 402 tells the customer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Exhausted {
    pub key_id: KeyId,
    pub pool: PoolName,
    pub operation: Option<String>,
    pub required: i64,
    pub available: i64,
    pub allowed: Option<i64>,
    pub used: i64,
    /// How far below zero the pool may go; `available` may already be negative by up to this.
    pub overage_limit: i64,
    pub period_start: DateTime<Utc>,
    pub reset_at: DateTime<Utc>,
    /// The pool's active grants, in consumption order.
    pub grants: Vec<super::model::GrantSummary>,
    /// What the next period brings back; `None` for a pool without an allowance.
    pub next_allowance: Option<super::model::NextAllowance>,
    /// The plan's packs for the pool.
    pub packs: Vec<super::model::PackOffer>,
    /// `LEDGER_TOP_UP_URL` for this account, when set (the service fills it in).
    pub top_up_url: Option<String>,
    /// Set when the refusal is a member key's per-period cap, not the pool's balance.
    pub key_cap: Option<KeyCap>,
}

/// A member key of a shared account at its cap for the period.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyCap {
    pub member_key_id: String,
    pub cap: i64,
    /// What the key used this period: accepted debits less refunds, plus its active holds.
    pub key_used: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LedgerError {
    #[error("plan {0} does not exist")]
    PlanNotFound(PlanId),
    #[error("account {0} does not exist")]
    AccountNotFound(KeyId),
    #[error("key {member_key_id} is not a member of account {key_id}")]
    MemberNotFound { key_id: KeyId, member_key_id: KeyId },
    #[error("grant {0} does not exist")]
    GrantNotFound(Uuid),
    #[error("debit {0} does not exist")]
    DebitNotFound(Uuid),
    #[error("reservation {0} does not exist")]
    ReservationNotFound(Uuid),
    #[error("reservation {id} is {status}, not active")]
    ReservationNotActive { id: Uuid, status: ReservationStatus },
    #[error("commit of {requested} exceeds the {held} credits held")]
    AmountExceedsReservation { requested: i64, held: i64 },
    #[error("refund of {requested} exceeds what is left of the debit")]
    RefundExceedsDebit {
        cost: i64,
        refunded: i64,
        requested: i64,
    },
    #[error("pack {pack} is not in the catalogue of the account's plan")]
    UnknownPack { pack: PackId, known: Vec<PackId> },
    #[error("invalid plan: {0}")]
    InvalidPlan(InvalidField),
    #[error("{0}")]
    Invalid(InvalidField),
    #[error(transparent)]
    Price(#[from] PriceError),
    #[error("credits exhausted")]
    CreditsExhausted(Box<Exhausted>),
    #[error("the idempotency key was already used with other parameters")]
    IdempotencyKeyReused,
    #[error("{message}")]
    Conflict { code: &'static str, message: String },
    /// A well-formed request the ledger's state cannot honour (422).
    #[error("{message}")]
    Unprocessable { code: &'static str, message: String },
    #[error("a number is out of range: {0}")]
    OutOfRange(String),
    /// The stored state breaks an invariant the ledger relies on: a bug or a manual edit.
    #[error("the ledger's state is inconsistent: {0}")]
    Corrupt(String),
}

impl From<InvalidField> for LedgerError {
    fn from(value: InvalidField) -> Self {
        LedgerError::Invalid(value)
    }
}

pub(crate) fn corrupt(what: impl Into<String>) -> LedgerError {
    LedgerError::Corrupt(what.into())
}

/// A sum that must stay in `i64`; leaving it refuses the command and changes nothing.
pub(crate) fn checked(value: Option<i64>, what: &str) -> Result<i64, LedgerError> {
    value.ok_or_else(|| {
        LedgerError::OutOfRange(format!("{what} leaves the range of a credit amount"))
    })
}
