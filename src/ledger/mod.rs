//! The domain: types, pure rules and the operations that apply them in one transaction each.

pub mod credits;
pub mod events;
pub mod holds;
pub mod lifecycle;
pub mod model;
pub mod ops;
pub mod plan;
pub mod rules;
pub mod types;
pub mod usage;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

use self::rules::PriceError;
use self::types::{InvalidField, KeyId, PlanId, PoolName};

/// The ledger's notion of now. Production uses the system clock; tests inject their own so that
/// period boundaries can be reached without sleeping. No HTTP caller can move it.
#[derive(Clone)]
pub struct Clock(Arc<dyn Fn() -> DateTime<Utc> + Send + Sync>);

impl Clock {
    pub fn system() -> Self {
        Clock(Arc::new(Utc::now))
    }

    pub fn from_fn(f: impl Fn() -> DateTime<Utc> + Send + Sync + 'static) -> Self {
        Clock(Arc::new(f))
    }

    /// Now, truncated to the microsecond PostgreSQL stores, so what is written reads back equal.
    pub fn now(&self) -> DateTime<Utc> {
        (self.0)().trunc_subsecs(6)
    }
}

impl std::fmt::Debug for Clock {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Clock")
    }
}

/// Why a debit was refused: everything the 402 tells the customer.
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
    pub reset_at: DateTime<Utc>,
}

#[derive(Debug, thiserror::Error)]
pub enum LedgerError {
    #[error("plan {0} does not exist")]
    PlanNotFound(PlanId),
    #[error("account {0} does not exist")]
    AccountNotFound(KeyId),
    #[error("grant {0} does not exist")]
    GrantNotFound(uuid::Uuid),
    #[error("debit {0} does not exist")]
    DebitNotFound(uuid::Uuid),
    #[error("reservation {0} does not exist")]
    ReservationNotFound(uuid::Uuid),
    #[error("reservation {id} is {status}, not active")]
    ReservationNotActive { id: uuid::Uuid, status: String },
    #[error("commit of {requested} exceeds the {held} credits held")]
    AmountExceedsReservation { requested: i64, held: i64 },
    #[error("refund of {requested} exceeds what is left of the debit")]
    RefundExceedsDebit {
        cost: i64,
        refunded: i64,
        requested: i64,
    },
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
    #[error("database error: {0}")]
    Database(sqlx::Error),
}

impl From<InvalidField> for LedgerError {
    fn from(value: InvalidField) -> Self {
        LedgerError::Invalid(value)
    }
}

impl From<sqlx::Error> for LedgerError {
    fn from(err: sqlx::Error) -> Self {
        // 22003 numeric_value_out_of_range: a sum left bigint. Refuse the request, change nothing.
        if let sqlx::Error::Database(db) = &err {
            if db.code().as_deref() == Some("22003") {
                return LedgerError::OutOfRange(db.message().to_owned());
            }
        }
        LedgerError::Database(err)
    }
}
