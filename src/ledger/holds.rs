//! Reservations (holds for long work) and refunds.
//!
//! A reservation draws from the grants in consumption order at once (`hold` entries), so
//! `available` drops, and pins the grants it drew from. Commit turns (part of) it into a debit
//! drawn from those same grants; release, or the end of its TTL, returns the credits to them.
//! A part whose grant expired (or was voided) in the meantime expires (or is voided) on return.
//! Holds never go into overage.
//!
//! Across a period roll a hold stays valid. Held allowance is not unused allowance: it does not
//! roll over, and the allowance grant it came from expires with its period. Committed, that part
//! is spent; returned, it expires with its grant.

use chrono::{DateTime, Duration, Utc};
use serde::{Deserialize, Serialize};
use sqlx::PgConnection;
use tracing::instrument;
use uuid::Uuid;

use super::credits::drawable_keys;
use super::events;
use super::lifecycle::current_plan;
use super::model::{Debit, Drawn};
use super::ops::{claim, finish, Idempotency, Ledger, Outcome};
use super::rules::{self, DebitSpec, PriceError};
use super::types::{KeyId, PlanId, PoolName};
use super::{Exhausted, LedgerError};
use crate::db;
use crate::db::grants::{Change, NewGrant};
use crate::db::reservations::{NewReservation, ReservationRow};

/// The TTL of a hold when the request names none, and the longest allowed.
pub const DEFAULT_TTL_SECONDS: i64 = 300;
pub const MAX_TTL_SECONDS: i64 = 86_400;

#[derive(Debug, Clone)]
pub struct ReservationRequest {
    pub spec: DebitSpec,
    pub ttl_seconds: i64,
    pub metadata: serde_json::Value,
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
    /// `active`, `committed`, `released` or `expired`.
    pub status: String,
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

impl Reservation {
    fn from_row(r: ReservationRow, remaining: Option<i64>) -> Self {
        Reservation {
            id: r.id,
            key_id: r.key_id,
            pool: r.pool,
            operation: r.operation,
            quantity: r.quantity,
            amount: r.amount,
            status: r.status,
            expires_at: r.expires_at,
            remaining,
            drawn: r.drawn.0,
            debit_id: r.debit_id,
            committed_amount: r.committed_amount,
            metadata: r.metadata.0,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
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

fn corrupt(what: String) -> LedgerError {
    LedgerError::Database(sqlx::Error::Protocol(what))
}

fn key_of(owner: String) -> Result<KeyId, LedgerError> {
    KeyId::try_from(owner).map_err(|e| corrupt(e.to_string()))
}

/// The pool's available credits at `at`: active grants less overage taken; `None` if unlimited.
async fn pool_available(
    conn: &mut PgConnection,
    key_id: &str,
    pool: &str,
    at: DateTime<Utc>,
) -> Result<Option<i64>, LedgerError> {
    let counters = db::accounts::pool(conn, key_id, pool)
        .await?
        .ok_or_else(|| corrupt(format!("pool {pool} of {key_id} has no counters")))?;
    if counters.allowance.is_none() {
        return Ok(None);
    }
    let granted = db::grants::available(conn, key_id, pool, at).await?;
    Ok(Some(granted - counters.overage_used))
}

/// Whether a grant still takes credits back at `at`: `None` if so, else the entry kind that
/// takes them out again (`expiration` or `void`).
async fn closed_kind(
    conn: &mut PgConnection,
    key_id: &str,
    grant_id: Uuid,
    at: DateTime<Utc>,
) -> Result<Option<&'static str>, LedgerError> {
    let grant = db::grants::get(conn, key_id, grant_id)
        .await?
        .ok_or_else(|| corrupt(format!("grant {grant_id} of {key_id} is gone")))?;
    Ok(if grant.voided_at.is_some() {
        Some("void")
    } else if grant.expires_at.is_some_and(|e| e <= at) {
        Some("expiration")
    } else {
        None
    })
}

/// Returns the held credits of `parts` (minus what `keep` says is committed) to their grants, as
/// `release` entries; a part whose grant has closed by `at` leaves again at once.
#[allow(clippy::too_many_arguments)]
async fn return_holds(
    conn: &mut PgConnection,
    r: &ReservationRow,
    keep: &[i64],
    debit_id: Option<Uuid>,
    at: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<Option<i64>, LedgerError> {
    let empty = serde_json::json!({});
    let mut balance = pool_available(conn, &r.key_id, &r.pool, now).await?;
    for (i, part) in r.drawn.0.iter().enumerate() {
        let committed = keep.get(i).copied().unwrap_or(0);
        let closed = closed_kind(conn, &r.key_id, part.grant_id, at).await?;
        let change = |amount: i64, kind: &'static str, balance_after: Option<i64>| Change {
            key_id: &r.key_id,
            grant_id: part.grant_id,
            pool: &r.pool,
            amount,
            kind,
            balance_after,
            operation: r.operation.as_deref(),
            debit_id: if kind == "debit" { debit_id } else { None },
            reservation_id: Some(r.id),
            adjustment_id: None,
            metadata: &empty,
            now,
        };
        let counts = closed.is_none();
        if counts {
            balance = balance.map(|b| b + part.amount);
        }
        db::grants::apply_change(conn, &change(part.amount, "release", balance)).await?;
        if committed > 0 {
            if counts {
                balance = balance.map(|b| b - committed);
            }
            db::grants::apply_change(conn, &change(-committed, "debit", balance)).await?;
        }
        let rest = part.amount - committed;
        if let (Some(kind), true) = (closed, rest > 0) {
            db::grants::apply_change(conn, &change(-rest, kind, balance)).await?;
        }
    }
    Ok(balance)
}

/// Releases every active hold of a locked account whose TTL ended by `upto` (status `expired`).
/// Each part goes back to its grant if that grant still counted when the hold lapsed.
pub(crate) async fn release_lapsed(
    conn: &mut PgConnection,
    key_id: &str,
    upto: DateTime<Utc>,
    now: DateTime<Utc>,
) -> Result<usize, LedgerError> {
    let lapsed = db::reservations::expired_active(conn, key_id, upto).await?;
    for r in &lapsed {
        return_holds(conn, r, &[], None, r.expires_at, now).await?;
        db::reservations::finish(conn, key_id, r.id, "expired", None, None, now).await?;
        db::events::emit(
            conn,
            key_id,
            events::RESERVATION_EXPIRED,
            &serde_json::json!({"key_id": key_id, "reservation_id": r.id, "pool": r.pool,
                                "amount": r.amount, "expires_at": r.expires_at}),
            now,
        )
        .await?;
        events::check_resolved(conn, key_id, &r.pool, now).await?;
    }
    Ok(lapsed.len())
}

/// Locks the account of a reservation, brings it up to date (a hold past its TTL is released
/// there) and returns the reservation if it is still active, with the instant to run at.
async fn lock_active(
    tx: &mut PgConnection,
    key_id: &KeyId,
    id: Uuid,
    now: DateTime<Utc>,
) -> Result<(ReservationRow, DateTime<Utc>), LedgerError> {
    let (_, now) = super::credits::lock_current(tx, key_id, now).await?;
    let r = db::reservations::get(tx, key_id.as_str(), id)
        .await?
        .ok_or(LedgerError::ReservationNotFound(id))?;
    if r.status != "active" {
        return Err(LedgerError::ReservationNotActive {
            id,
            status: r.status,
        });
    }
    Ok((r, now))
}

async fn reservation_owner(tx: &mut PgConnection, id: Uuid) -> Result<KeyId, LedgerError> {
    let owner = db::reservations::owner(tx, id)
        .await?
        .ok_or(LedgerError::ReservationNotFound(id))?;
    key_of(owner)
}

impl Ledger {
    /// Holds credits for long work: drawn from the grants now, committed or released later.
    #[instrument(skip_all, fields(key_id = %key_id))]
    pub async fn reserve(
        &self,
        key_id: &KeyId,
        request: &ReservationRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Reservation>, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if let Some((status, body)) = claim(&mut tx, key_id.as_str(), idempotency, now).await? {
            return Ok(Outcome::Replayed { status, body });
        }
        let (row, now) = super::credits::lock_current(&mut tx, key_id, now).await?;
        let plan = current_plan(&mut tx, &row.plan_id).await?;
        let charge = rules::price(&plan, &request.spec)?;
        let pool = charge.pool.as_str();
        let counters = db::accounts::pool(&mut tx, key_id.as_str(), pool)
            .await?
            .ok_or_else(|| LedgerError::Price(PriceError::UnknownPool(charge.pool.clone())))?;
        let id = Uuid::now_v7();
        let operation = request.spec.operation.as_ref().map(|o| o.as_str());
        let mut drawn = Vec::new();
        let mut remaining = None;
        if counters.allowance.is_some() {
            let grants = db::grants::drawable(&mut tx, key_id.as_str(), pool, now).await?;
            let keyed = drawable_keys(&grants);
            let granted = grants
                .iter()
                .try_fold(0i64, |sum, g| sum.checked_add(g.remaining))
                .ok_or_else(|| LedgerError::OutOfRange("the pool's credits exceed i64".into()))?;
            let available = granted - counters.overage_used;
            // A hold takes only credits the grants have: never overage.
            let Some(taken) = rules::draw(&keyed, charge.cost).filter(|_| available >= charge.cost)
            else {
                let exhausted = Exhausted {
                    key_id: key_id.clone(),
                    pool: charge.pool.clone(),
                    operation: operation.map(str::to_owned),
                    required: charge.cost,
                    available,
                    allowed: counters.allowance,
                    used: counters.used,
                    overage_limit: 0,
                    reset_at: row.period_end,
                };
                // The refusal changes nothing, but its first of the period is announced, in a
                // transaction of its own.
                tx.rollback().await?;
                let mut tx = self.db().begin().await?;
                // The account lock first, as every writer of the account takes it: without it
                // this insert and a concurrent commit's threshold insert would deadlock.
                db::accounts::lock(&mut tx, key_id.as_str()).await?;
                let details = serde_json::json!({
                    "key_id": key_id, "pool": charge.pool, "operation": operation,
                    "required": charge.cost, "available": available,
                    "allowed": counters.allowance, "used": counters.used, "overage_limit": 0,
                    "period": {"start": row.period_start, "end": row.period_end},
                    "reset_at": row.period_end,
                });
                db::events::announce_exhausted(
                    &mut tx,
                    key_id.as_str(),
                    pool,
                    row.period_start,
                    &details,
                    now,
                )
                .await?;
                tx.commit().await?;
                return Err(LedgerError::CreditsExhausted(Box::new(exhausted)));
            };
            let empty = serde_json::json!({});
            let mut balance = available;
            for (grant_id, take) in taken {
                balance -= take;
                let kind = grants
                    .iter()
                    .find(|g| g.id == grant_id)
                    .map(|g| g.kind.clone())
                    .unwrap_or_default();
                db::grants::apply_change(
                    &mut tx,
                    &Change {
                        key_id: key_id.as_str(),
                        grant_id,
                        pool,
                        amount: -take,
                        kind: "hold",
                        balance_after: Some(balance),
                        operation,
                        debit_id: None,
                        reservation_id: Some(id),
                        adjustment_id: None,
                        metadata: &empty,
                        now,
                    },
                )
                .await?;
                drawn.push(Drawn {
                    grant_id,
                    kind,
                    amount: take,
                });
            }
            remaining = Some(balance);
        }
        let expires_at = now + Duration::seconds(request.ttl_seconds);
        db::reservations::insert(
            &mut tx,
            &NewReservation {
                key_id: key_id.as_str(),
                id,
                pool,
                operation,
                quantity: request.spec.quantity,
                amount: charge.cost,
                expires_at,
                plan_id: plan.id.as_str(),
                plan_version: plan.version,
                drawn: &drawn,
                metadata: &request.metadata,
                now,
            },
        )
        .await?;
        let stored = db::reservations::get(&mut tx, key_id.as_str(), id)
            .await?
            .ok_or_else(|| corrupt(format!("reservation {id} vanished")))?;
        let reservation = Reservation::from_row(stored, remaining);
        finish(&mut tx, key_id.as_str(), idempotency, 201, &reservation).await?;
        tx.commit().await?;
        Ok(Outcome::Done(reservation))
    }

    /// Turns an active hold into a debit of `amount` (default: all of it) drawn from the grants
    /// the hold pinned, in its order; the rest goes back.
    #[instrument(skip_all, fields(reservation_id = %id))]
    pub async fn commit_reservation(
        &self,
        id: Uuid,
        amount: Option<i64>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Debit>, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let key_id = reservation_owner(&mut tx, id).await?;
        if let Some((status, body)) = claim(&mut tx, key_id.as_str(), idempotency, now).await? {
            return Ok(Outcome::Replayed { status, body });
        }
        let (r, now) = lock_active(&mut tx, &key_id, id, now).await?;
        let amount = amount.unwrap_or(r.amount);
        if amount > r.amount {
            return Err(LedgerError::AmountExceedsReservation {
                requested: amount,
                held: r.amount,
            });
        }
        let account = db::accounts::get(&mut tx, &r.key_id)
            .await?
            .ok_or_else(|| corrupt(format!("account {} vanished", r.key_id)))?;
        let counters = db::accounts::pool(&mut tx, &r.key_id, &r.pool)
            .await?
            .ok_or_else(|| corrupt(format!("pool {} of {} has no counters", r.pool, r.key_id)))?;
        let debit_id = Uuid::now_v7();
        // The committed amount, taken from the hold's parts in the order they were drawn.
        let mut left = amount;
        let mut keep = Vec::with_capacity(r.drawn.0.len());
        let mut committed = Vec::new();
        for part in &r.drawn.0 {
            let take = left.min(part.amount);
            left -= take;
            keep.push(take);
            if take > 0 {
                committed.push(Drawn {
                    grant_id: part.grant_id,
                    kind: part.kind.clone(),
                    amount: take,
                });
            }
        }
        let remaining = return_holds(&mut tx, &r, &keep, Some(debit_id), now, now).await?;
        if r.drawn.0.is_empty() {
            // An unlimited pool: nothing was held, the debit is journaled against no grant.
            db::entries::insert(
                &mut tx,
                &db::entries::NewEntry {
                    key_id: &r.key_id,
                    pool: &r.pool,
                    kind: "debit",
                    amount: -amount,
                    balance_after: None,
                    operation: r.operation.as_deref(),
                    debit_id: Some(debit_id),
                    metadata: &serde_json::json!({}),
                    now,
                },
            )
            .await?;
        }
        db::reservations::insert_debit(
            &mut tx,
            &db::reservations::NewDebit {
                key_id: &r.key_id,
                id: debit_id,
                pool: &r.pool,
                operation: r.operation.as_deref(),
                quantity: r.quantity,
                cost: amount,
                plan_id: &r.plan_id,
                plan_version: r.plan_version,
                remaining,
                reset_at: account.period_end,
                drawn: &committed,
                metadata: &r.metadata.0,
                reservation_id: Some(r.id),
                now,
            },
        )
        .await?;
        db::events::announce_thresholds(
            &mut tx,
            &r.key_id,
            &r.pool,
            &r.plan_id,
            r.plan_version,
            (account.period_start, account.period_end),
            counters.allowance,
            (counters.used, counters.used + amount),
            remaining,
            now,
        )
        .await?;
        db::reservations::finish(
            &mut tx,
            &r.key_id,
            r.id,
            "committed",
            Some(debit_id),
            Some(amount),
            now,
        )
        .await?;
        let debit = Debit {
            id: Some(debit_id),
            key_id: key_of(r.key_id)?,
            pool: PoolName::try_from(r.pool).map_err(|e| corrupt(e.to_string()))?,
            operation: r.operation,
            quantity: r.quantity,
            cost: amount,
            remaining,
            reset_at: account.period_end,
            drawn: committed,
            overage: 0,
            reservation_id: Some(r.id),
            refunded: 0,
            source_key_id: None,
            plan_id: PlanId::try_from(r.plan_id).map_err(|e| corrupt(e.to_string()))?,
            plan_version: r.plan_version,
            metadata: r.metadata.0,
            dry_run: false,
            created_at: now,
        };
        finish(&mut tx, key_id.as_str(), idempotency, 200, &debit).await?;
        tx.commit().await?;
        Ok(Outcome::Done(debit))
    }

    /// Returns everything an active hold took.
    #[instrument(skip_all, fields(reservation_id = %id))]
    pub async fn release_reservation(&self, id: Uuid) -> Result<Reservation, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let key_id = reservation_owner(&mut tx, id).await?;
        let (r, now) = lock_active(&mut tx, &key_id, id, now).await?;
        let remaining = return_holds(&mut tx, &r, &[], None, now, now).await?;
        db::reservations::finish(&mut tx, &r.key_id, r.id, "released", None, None, now).await?;
        events::check_resolved(&mut tx, &r.key_id, &r.pool, now).await?;
        let stored = db::reservations::get(&mut tx, &r.key_id, id)
            .await?
            .ok_or(LedgerError::ReservationNotFound(id))?;
        tx.commit().await?;
        Ok(Reservation::from_row(stored, remaining))
    }

    /// A reservation, after releasing it if its TTL has ended.
    pub async fn get_reservation(&self, id: Uuid) -> Result<Reservation, LedgerError> {
        let now = self.now();
        let mut conn = self.db().acquire().await?;
        let owner = db::reservations::owner(&mut conn, id)
            .await?
            .ok_or(LedgerError::ReservationNotFound(id))?;
        drop(conn);
        self.ensure_current(&owner, now).await?;
        let mut conn = self.db().acquire().await?;
        let r = db::reservations::get(&mut conn, &owner, id)
            .await?
            .ok_or(LedgerError::ReservationNotFound(id))?;
        let remaining = pool_available(&mut conn, &owner, &r.pool, now).await?;
        Ok(Reservation::from_row(r, remaining))
    }

    /// Refunds (part of) a debit: the credits go back to the grants it drew from, its overage
    /// part first, then its grants in reverse order of drawing. A grant that has expired or was
    /// voided meanwhile cannot take credits back: that part becomes a new `refund` grant that
    /// expires with the current period. Overage of an earlier period was billed with that
    /// period, so it too comes back as a `refund` grant. Refunds never exceed the debit.
    #[instrument(skip_all, fields(debit_id = %debit_id))]
    pub async fn refund(
        &self,
        debit_id: Uuid,
        amount: Option<i64>,
        reason: Option<String>,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Refund>, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let owner = db::reservations::debit_owner(&mut tx, debit_id)
            .await?
            .ok_or(LedgerError::DebitNotFound(debit_id))?;
        let key_id = key_of(owner)?;
        if let Some((status, body)) = claim(&mut tx, key_id.as_str(), idempotency, now).await? {
            return Ok(Outcome::Replayed { status, body });
        }
        let (account, now) = super::credits::lock_current(&mut tx, &key_id, now).await?;
        let debit = db::reservations::lock_debit(&mut tx, key_id.as_str(), debit_id)
            .await?
            .ok_or(LedgerError::DebitNotFound(debit_id))?;
        let refundable = debit.cost - debit.refunded;
        let amount = amount.unwrap_or(refundable);
        if amount > refundable || amount == 0 {
            return Err(LedgerError::RefundExceedsDebit {
                cost: debit.cost,
                refunded: debit.refunded,
                requested: amount,
            });
        }
        let same_period = debit.reset_at == account.period_end;
        let counters = db::accounts::pool(&mut tx, key_id.as_str(), &debit.pool)
            .await?
            .ok_or_else(|| corrupt(format!("pool {} of {key_id} has no counters", debit.pool)))?;
        let unlimited = counters.allowance.is_none();
        let earlier = db::reservations::refunded_parts(&mut tx, key_id.as_str(), debit_id).await?;
        let already = |grant: Option<Uuid>| -> i64 {
            earlier
                .iter()
                .filter(|(g, _)| *g == grant)
                .map(|(_, n)| *n)
                .sum()
        };
        // The parts a refund can return, in the order it returns them.
        // A debit that drew from no grant and no overage was made while the pool was unlimited.
        let grantless = unlimited || (debit.drawn.0.is_empty() && debit.overage == 0);
        let mut sources: Vec<(Option<Uuid>, i64)> = Vec::new();
        if debit.overage > 0 || grantless {
            let part = if grantless { debit.cost } else { debit.overage };
            sources.push((None, part - already(None)));
        }
        for part in debit.drawn.0.iter().rev() {
            sources.push((
                Some(part.grant_id),
                part.amount - already(Some(part.grant_id)),
            ));
        }

        let empty = serde_json::json!({});
        let refund_id = Uuid::now_v7();
        let mut left = amount;
        let mut parts = Vec::new();
        for (grant, capacity) in sources {
            let give = left.min(capacity.max(0));
            if give == 0 {
                continue;
            }
            left -= give;
            let returned_to = match grant {
                // Nothing was taken from a balance: the refund is recorded, no credits come back.
                None if grantless => {
                    db::entries::insert(
                        &mut tx,
                        &db::entries::NewEntry {
                            key_id: key_id.as_str(),
                            pool: &debit.pool,
                            kind: "refund",
                            amount: give,
                            balance_after: None,
                            operation: None,
                            debit_id: Some(debit_id),
                            metadata: &empty,
                            now,
                        },
                    )
                    .await?;
                    None
                }
                None if same_period => {
                    // Overage still owed this period: the refund pays it back.
                    db::accounts::shift_pool_counters(
                        &mut tx,
                        key_id.as_str(),
                        &debit.pool,
                        0,
                        -give,
                    )
                    .await?;
                    let balance =
                        pool_available(&mut tx, key_id.as_str(), &debit.pool, now).await?;
                    db::entries::insert(
                        &mut tx,
                        &db::entries::NewEntry {
                            key_id: key_id.as_str(),
                            pool: &debit.pool,
                            kind: "overage",
                            amount: give,
                            balance_after: balance,
                            operation: None,
                            debit_id: Some(debit_id),
                            metadata: &serde_json::json!({"refund_id": refund_id}),
                            now,
                        },
                    )
                    .await?;
                    None
                }
                Some(grant_id)
                    if closed_kind(&mut tx, key_id.as_str(), grant_id, now)
                        .await?
                        .is_none() =>
                {
                    let balance = pool_available(&mut tx, key_id.as_str(), &debit.pool, now)
                        .await?
                        .map(|b| b + give);
                    db::grants::apply_change(
                        &mut tx,
                        &Change {
                            key_id: key_id.as_str(),
                            grant_id,
                            pool: &debit.pool,
                            amount: give,
                            kind: "refund",
                            balance_after: balance,
                            operation: None,
                            debit_id: Some(debit_id),
                            reservation_id: None,
                            adjustment_id: None,
                            metadata: &empty,
                            now,
                        },
                    )
                    .await?;
                    Some(grant_id)
                }
                _ => {
                    let new_id = Uuid::now_v7();
                    db::grants::insert(
                        &mut tx,
                        &NewGrant {
                            key_id: key_id.as_str(),
                            id: new_id,
                            pool: &debit.pool,
                            kind: "refund",
                            amount: give,
                            effective_at: now,
                            expires_at: Some(account.period_end),
                            priority: 0,
                            period_start: None,
                            metadata: &serde_json::json!({"debit_id": debit_id}),
                            entry_kind: "refund",
                            adjustment_id: None,
                            balance_at: now,
                            now,
                        },
                    )
                    .await?;
                    Some(new_id)
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
            db::accounts::shift_pool_counters(&mut tx, key_id.as_str(), &debit.pool, -amount, 0)
                .await?;
        }
        let parts_json = serde_json::to_value(&parts).map_err(|e| corrupt(e.to_string()))?;
        db::reservations::insert_refund(
            &mut tx,
            &db::reservations::NewRefund {
                key_id: key_id.as_str(),
                id: refund_id,
                debit_id,
                pool: &debit.pool,
                amount,
                reason: reason.as_deref(),
                parts: &parts_json,
                now,
            },
        )
        .await?;
        events::check_resolved(&mut tx, key_id.as_str(), &debit.pool, now).await?;
        let remaining = pool_available(&mut tx, key_id.as_str(), &debit.pool, now).await?;
        let refund = Refund {
            id: refund_id,
            debit_id,
            key_id: key_id.to_string(),
            pool: debit.pool,
            amount,
            reason,
            parts,
            remaining,
            created_at: now,
        };
        finish(&mut tx, key_id.as_str(), idempotency, 201, &refund).await?;
        tx.commit().await?;
        Ok(Outcome::Done(refund))
    }
}
