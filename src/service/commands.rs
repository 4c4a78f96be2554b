//! Each write the API offers, as one command through the write path, with a typed answer.

use uuid::Uuid;

use super::{Ledger, Outcome, ServiceError, Target};
use crate::ledger::adjust::AdjustmentRequest;
use crate::ledger::command::{Answer, Command, Idempotency, Request};
use crate::ledger::debit::DebitRequest;
use crate::ledger::grant::GrantRequest;
use crate::ledger::model::{Account, Adjustment, Debit, Grant, Refund, Reservation};
use crate::ledger::plan_change::Proration;
use crate::ledger::reserve::ReservationRequest;
use crate::ledger::types::{KeyId, PlanId, PoolName};

/// The typed answer of a command, or the stored one it replays.
fn outcome<T>(
    answer: Answer,
    pick: impl FnOnce(Answer) -> Option<T>,
) -> Result<Outcome<T>, ServiceError> {
    match answer {
        Answer::Replayed(body) => Ok(Outcome::Replayed(body)),
        other => pick(other).map(Outcome::Done).ok_or_else(|| {
            ServiceError::Corrupt("a command answered with the wrong record".into())
        }),
    }
}

fn done<T>(outcome: Outcome<T>) -> Result<T, ServiceError> {
    match outcome {
        Outcome::Done(value) => Ok(value),
        Outcome::Replayed(_) => Err(ServiceError::Corrupt(
            "a command without a key replayed".into(),
        )),
    }
}

impl Ledger {
    async fn command<T>(
        &self,
        target: Target,
        command: Command,
        idempotency: Option<&Idempotency>,
        pick: impl FnOnce(Answer) -> Option<T>,
    ) -> Result<Outcome<T>, ServiceError> {
        let answer = self
            .execute(target, Request::new(command, idempotency.cloned()))
            .await?;
        outcome(answer, pick)
    }

    /// A weighted debit (or, with `dry_run`, what it would be).
    pub async fn debit(
        &self,
        key_id: &KeyId,
        request: &DebitRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Debit>, ServiceError> {
        let command = Command::Debit(request.clone());
        self.command(
            Target::Account(key_id.clone()),
            command,
            idempotency,
            |a| match a {
                Answer::Debit(d) => Some(*d),
                _ => None,
            },
        )
        .await
    }

    /// Holds credits for long work: drawn from the grants now, committed or released later.
    pub async fn reserve(
        &self,
        key_id: &KeyId,
        request: &ReservationRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Reservation>, ServiceError> {
        let command = Command::Reserve(request.clone());
        self.command(
            Target::Account(key_id.clone()),
            command,
            idempotency,
            reservation,
        )
        .await
    }

    /// Turns an active hold into a debit of `amount` (default: all of it).
    pub async fn commit_reservation(
        &self,
        id: Uuid,
        amount: Option<i64>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Debit>, ServiceError> {
        let command = Command::Commit {
            reservation_id: id,
            amount,
        };
        self.command(Target::Reservation(id), command, idempotency, |a| match a {
            Answer::Debit(d) => Some(*d),
            _ => None,
        })
        .await
    }

    /// Returns everything an active hold took.
    pub async fn release_reservation(
        &self,
        id: Uuid,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Reservation>, ServiceError> {
        let command = Command::Release { reservation_id: id };
        self.command(Target::Reservation(id), command, idempotency, reservation)
            .await
    }

    /// Refunds (part of) a debit.
    pub async fn refund(
        &self,
        debit_id: Uuid,
        amount: Option<i64>,
        reason: Option<String>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Refund>, ServiceError> {
        let command = Command::Refund {
            debit_id,
            amount,
            reason,
        };
        self.command(Target::Debit(debit_id), command, idempotency, |a| match a {
            Answer::Refund(r) => Some(*r),
            _ => None,
        })
        .await
    }

    /// Adds a grant (a pack, a promotion, an adjustment) to a pool of the account.
    pub async fn create_grant(
        &self,
        key_id: &KeyId,
        request: &GrantRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Grant>, ServiceError> {
        let command = Command::Grant(request.clone());
        self.command(Target::Account(key_id.clone()), command, idempotency, grant)
            .await
    }

    /// Voids a grant.
    pub async fn void_grant(&self, id: Uuid) -> Result<Grant, ServiceError> {
        let command = Command::Void { grant_id: id };
        done(
            self.command(Target::Grant(id), command, None, grant)
                .await?,
        )
    }

    /// Sets, increments or decrements a pool's available credits.
    pub async fn adjust(
        &self,
        key_id: &KeyId,
        request: &AdjustmentRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Adjustment>, ServiceError> {
        let command = Command::Adjust(request.clone());
        self.command(
            Target::Account(key_id.clone()),
            command,
            idempotency,
            |a| match a {
                Answer::Adjustment(a) => Some(*a),
                _ => None,
            },
        )
        .await
    }

    /// Ends an auto top-up request that could not be paid for.
    pub async fn top_up_failed(
        &self,
        key_id: &KeyId,
        request_id: Uuid,
        pool: PoolName,
        reason: String,
    ) -> Result<(), ServiceError> {
        let command = Command::TopUpFailed {
            request_id,
            pool,
            reason,
        };
        self.command(
            Target::Account(key_id.clone()),
            command,
            None,
            |a| match a {
                Answer::Account(_) => Some(()),
                _ => None,
            },
        )
        .await
        .and_then(done)
    }

    /// Moves the account to another plan (or a newer version of its own) with a proration.
    pub async fn change_plan(
        &self,
        key_id: &KeyId,
        plan_id: &PlanId,
        proration: Proration,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Account>, ServiceError> {
        let plan = self.get_plan(plan_id, None).await?;
        let command = Command::ChangePlan {
            plan: Box::new(plan),
            proration,
        };
        self.command(
            Target::Account(key_id.clone()),
            command,
            idempotency,
            |a| match a {
                Answer::Account(a) => Some(*a),
                _ => None,
            },
        )
        .await
    }
}

fn reservation(answer: Answer) -> Option<Reservation> {
    match answer {
        Answer::Reservation(r) => Some(*r),
        _ => None,
    }
}

fn grant(answer: Answer) -> Option<Grant> {
    match answer {
        Answer::Grant(g) => Some(*g),
        _ => None,
    }
}
