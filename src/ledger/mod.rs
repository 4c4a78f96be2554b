//! The domain: the account state machine. `(account state, command, now) → (answer, effects)`,
//! importing neither storage nor HTTP. Every money rule of DESIGN.md lives here once:
//!
//! | rule | file |
//! |---|---|
//! | pricing (rule 1) | `pricing.rs` |
//! | a debit, overage, the 402 (rule 1) | `debit.rs` |
//! | consumption order (rule 2) | `order.rs` |
//! | available credits, the active grant | `state.rs` |
//! | period arithmetic (rule 3) | `periods.rs` |
//! | period roll, catch-up, rollover, expiry (rule 4) | `roll.rs` |
//! | idempotency (rule 5) | `command.rs` |
//! | holds | `reserve.rs`, `commit.rs`, `release.rs` |
//! | refunds | `refund.rs` |
//! | grants and voids, adjustments | `grant.rs`, `adjust.rs` |
//! | plan changes and proration | `plan_change.rs` |
//! | thresholds, exhaustion and other events | `alerts.rs` |

pub mod account;
pub mod adjust;
pub mod alerts;
pub mod command;
pub mod commit;
pub mod debit;
pub mod error;
pub mod forecast;
pub mod grant;
pub mod members;
pub mod model;
pub mod order;
pub mod overrides;
pub mod periods;
pub mod plan;
pub mod plan_change;
pub mod pricing;
pub mod refund;
pub mod release;
pub mod reserve;
pub mod roll;
pub mod state;
pub mod top_up;
pub mod types;
pub mod usage;
pub mod view;

#[cfg(test)]
mod proptests;

use std::sync::Arc;

use chrono::{DateTime, SubsecRound, Utc};

pub use self::error::{Exhausted, LedgerError};

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
