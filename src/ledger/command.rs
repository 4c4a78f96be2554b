//! The account state machine's one entry point: `(state, request, now) → answer`, with the
//! effects left on the state. Every command first brings the account up to date (rule 4), and
//! every command with an Idempotency-Key is answered once (rule 5).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use uuid::Uuid;

use super::account::{self, AccountInput};
use super::adjust::{self, AdjustmentRequest};
use super::commit;
use super::debit::{self, DebitRequest};
use super::error::{corrupt, LedgerError};
use super::grant::{self, GrantRequest};
use super::model::{Account, Adjustment, Debit, Grant, Refund, Reservation};
use super::plan::Plan;
use super::plan_change::{self, Proration};
use super::refund;
use super::release;
use super::reserve::{self, ReservationRequest};
use super::roll::{self, Maintenance};
use super::state::{AccountState, IdempotencyRecord};
use super::view;

/// What a command asks of one account.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    /// Bring the account up to date and show it.
    Inspect,
    /// Bring the account up to date.
    Maintain,
    UpdateAccount(AccountInput),
    Debit(DebitRequest),
    Reserve(ReservationRequest),
    Commit {
        reservation_id: Uuid,
        amount: Option<i64>,
    },
    Release {
        reservation_id: Uuid,
    },
    Refund {
        debit_id: Uuid,
        amount: Option<i64>,
        reason: Option<String>,
    },
    Grant(GrantRequest),
    Void {
        grant_id: Uuid,
    },
    Adjust(AdjustmentRequest),
    ChangePlan {
        plan: Box<Plan>,
        proration: Proration,
    },
    /// An auto top-up request could not be paid for: it ends `failed`.
    TopUpFailed {
        request_id: Uuid,
        pool: super::types::PoolName,
        reason: String,
    },
}

/// An Idempotency-Key with the hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Idempotency {
    pub key: String,
    pub request_hash: String,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Request {
    pub command: Command,
    pub idempotency: Option<Idempotency>,
}

impl Request {
    pub fn new(command: Command, idempotency: Option<Idempotency>) -> Self {
        Request {
            command,
            idempotency,
        }
    }
}

/// A command's answer.
#[derive(Debug, Clone)]
pub enum Answer {
    Account(Box<Account>),
    Maintained(Maintenance),
    Debit(Box<Debit>),
    Reservation(Box<Reservation>),
    Refund(Box<Refund>),
    Grant(Box<Grant>),
    Adjustment(Box<Adjustment>),
    /// The stored answer of an earlier request with the same Idempotency-Key and parameters.
    Replayed(Value),
}

impl Answer {
    fn to_json(&self) -> Result<Value, LedgerError> {
        fn json<T: Serialize>(value: &T) -> Result<Value, LedgerError> {
            serde_json::to_value(value).map_err(|e| corrupt(e.to_string()))
        }
        match self {
            Answer::Account(a) => json(a),
            Answer::Maintained(m) => json(m),
            Answer::Debit(d) => json(d),
            Answer::Reservation(r) => json(r),
            Answer::Refund(r) => json(r),
            Answer::Grant(g) => json(g),
            Answer::Adjustment(a) => json(a),
            Answer::Replayed(v) => Ok(v.clone()),
        }
    }
}

/// Applies one request to an account's state at `now`. On success the state holds the
/// command's effects; on refusal it holds only what the refusal itself records (the catch-up
/// before it, and the announcement of a first refusal).
pub fn apply(
    state: &mut AccountState,
    request: &Request,
    now: DateTime<Utc>,
) -> Result<Answer, LedgerError> {
    // Nothing happens in an account before its current period started: another process with a
    // clock a little ahead may have rolled it already.
    let now = now.max(state.account.period_start);
    let idempotency = request
        .idempotency
        .as_ref()
        .filter(|_| !matches!(&request.command, Command::Debit(d) if d.dry_run));
    if let Some(idem) = idempotency {
        if let Some(stored) = state.idempotency.get(&idem.key) {
            if stored.request_hash != idem.request_hash {
                return Err(LedgerError::IdempotencyKeyReused);
            }
            return Ok(Answer::Replayed(stored.response.clone()));
        }
    }
    let before = state.clone();
    // A command that may move credits is followed by the auto top-up and low-balance checks,
    // in its transaction.
    let may_move_credits = !matches!(
        &request.command,
        Command::Inspect
            | Command::Debit(DebitRequest { dry_run: true, .. })
            // A failed top-up is not asked for again at once: the next change may ask.
            | Command::TopUpFailed { .. }
    );
    let answer = match roll::catch_up(state, now)
        .and_then(|maintenance| run(state, &request.command, maintenance, now))
        .and_then(|answer| {
            if may_move_credits {
                super::top_up::check(state, now)?;
                super::alerts::balance_low(state, now)?;
            }
            Ok(answer)
        }) {
        Ok(answer) => answer,
        Err(err) => {
            // A refused debit or hold keeps what it did: the catch-up before it, and the
            // announcement of the period's first refusal. Any other refusal changes nothing.
            if !matches!(err, LedgerError::CreditsExhausted(_)) {
                *state = before;
            }
            return Err(err);
        }
    };
    if let Some(idem) = idempotency {
        state.idempotency.insert(
            idem.key.clone(),
            IdempotencyRecord {
                key: idem.key.clone(),
                request_hash: idem.request_hash.clone(),
                response: answer.to_json()?,
                created_at: now,
            },
        );
        state.effects.idempotency.insert(idem.key.clone());
    }
    Ok(answer)
}

fn run(
    state: &mut AccountState,
    command: &Command,
    maintenance: Maintenance,
    now: DateTime<Utc>,
) -> Result<Answer, LedgerError> {
    Ok(match command {
        Command::Inspect => Answer::Account(Box::new(view::account(state, now)?)),
        Command::Maintain => Answer::Maintained(maintenance),
        Command::UpdateAccount(input) => {
            account::update(state, input, now)?;
            Answer::Account(Box::new(view::account(state, now)?))
        }
        Command::Debit(request) => Answer::Debit(Box::new(debit::debit(state, request, now)?)),
        Command::Reserve(request) => {
            Answer::Reservation(Box::new(reserve::reserve(state, request, now)?))
        }
        Command::Commit {
            reservation_id,
            amount,
        } => Answer::Debit(Box::new(commit::commit(
            state,
            *reservation_id,
            *amount,
            now,
        )?)),
        Command::Release { reservation_id } => {
            Answer::Reservation(Box::new(release::release(state, *reservation_id, now)?))
        }
        Command::Refund {
            debit_id,
            amount,
            reason,
        } => Answer::Refund(Box::new(refund::refund(
            state,
            *debit_id,
            *amount,
            reason.clone(),
            now,
        )?)),
        Command::Grant(request) => Answer::Grant(Box::new(grant::grant(state, request, now)?)),
        Command::Void { grant_id } => Answer::Grant(Box::new(grant::void(state, *grant_id, now)?)),
        Command::Adjust(request) => {
            Answer::Adjustment(Box::new(adjust::adjust(state, request, now)?))
        }
        Command::ChangePlan { plan, proration } => {
            // The account keeps its overrides on the new plan, so they must fit it.
            let terms = match &state.account.overrides {
                Some(overrides) => {
                    super::overrides::check(plan, overrides).map_err(|f| {
                        LedgerError::Conflict {
                            code: "overrides_conflict",
                            message: format!(
                                "account {} has overrides that plan {} cannot take: {} {}; \
                                 change or remove them with PUT /v1/accounts/{} first",
                                state.key_id(),
                                plan.id,
                                f.field,
                                f.reason,
                                state.key_id()
                            ),
                        }
                    })?;
                    super::overrides::effective(plan, overrides)
                }
                None => (**plan).clone(),
            };
            plan_change::change_plan(state, &terms, *proration, now)?;
            state.set_plan(plan);
            Answer::Account(Box::new(view::account(state, now)?))
        }
        Command::TopUpFailed {
            request_id,
            pool,
            reason,
        } => {
            super::top_up::fail(state, *request_id, pool, reason, now)?;
            Answer::Account(Box::new(view::account(state, now)?))
        }
    })
}
