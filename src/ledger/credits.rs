//! Admin operations on an account's credits: grants (packs, promotions, adjustments), voids,
//! balance adjustments and plan changes. Each is one transaction that locks the account, brings
//! it up to date, applies the change with its journal entries and stores its idempotent answer.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use tracing::instrument;
use uuid::Uuid;

use super::events;
use super::lifecycle::{self, Proration};
use super::model::Account;
use super::ops::{claim, finish, Idempotency, Ledger, Outcome};
use super::rules::{self, OrderKey, PriceError};
use super::types::{InvalidField, KeyId, PlanId, PoolName};
use super::LedgerError;
use crate::db;
use crate::db::grants::{Change, GrantRecord, NewGrant};

/// The kinds of grant an admin may create; allowance and rollover come from periods, refund
/// grants from refunds.
pub const ADMIN_GRANT_KINDS: [&str; 3] = ["pack", "promotional", "adjustment"];

/// A grant as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Grant {
    pub id: Uuid,
    pub key_id: String,
    pub pool: String,
    pub kind: String,
    pub amount: i64,
    pub remaining: i64,
    pub effective_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    /// `active`, `pending` (not yet effective), `expired` or `voided`, at the time of the answer.
    pub status: String,
    pub metadata: serde_json::Value,
    pub created_at: DateTime<Utc>,
    pub voided_at: Option<DateTime<Utc>>,
}

impl Grant {
    pub(crate) fn from_record(g: GrantRecord, now: DateTime<Utc>) -> Grant {
        let status = if g.voided_at.is_some() {
            "voided"
        } else if g.expires_at.is_some_and(|e| e <= now) {
            "expired"
        } else if g.effective_at > now {
            "pending"
        } else {
            "active"
        };
        Grant {
            id: g.id,
            key_id: g.key_id,
            pool: g.pool,
            kind: g.kind,
            amount: g.amount,
            remaining: g.remaining,
            effective_at: g.effective_at,
            expires_at: g.expires_at,
            priority: g.priority,
            status: status.to_owned(),
            metadata: g.metadata.0,
            created_at: g.created_at,
            voided_at: g.voided_at,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct GrantPage {
    pub data: Vec<Grant>,
    pub next_cursor: Option<String>,
}

/// A validated grant request.
#[derive(Debug, Clone)]
pub struct GrantRequest {
    pub pool: PoolName,
    pub kind: &'static str,
    pub amount: i64,
    pub effective_at: Option<DateTime<Utc>>,
    pub expires_at: Option<DateTime<Utc>>,
    pub priority: i32,
    pub metadata: serde_json::Value,
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

#[derive(Debug, Clone)]
pub struct AdjustmentRequest {
    pub pool: PoolName,
    pub op: AdjustmentOp,
    pub amount: i64,
    pub reason: String,
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

/// Drawable grants as consumption order sees them, with what each has left.
pub(crate) fn drawable_keys(grants: &[GrantRecord]) -> Vec<(OrderKey, i64)> {
    grants
        .iter()
        .map(|g| {
            (
                OrderKey {
                    expires_at: g.expires_at,
                    priority: g.priority,
                    created_at: g.created_at,
                    id: g.id,
                },
                g.remaining,
            )
        })
        .collect()
}

/// Locks the account and brings it up to date. Returns it with the instant the operation runs
/// at: `now`, or the start of the current period if another process (with a clock a little
/// ahead, or while this one waited for the lock) already rolled into it.
pub(crate) async fn lock_current(
    tx: &mut sqlx::PgConnection,
    key_id: &KeyId,
    now: DateTime<Utc>,
) -> Result<(db::accounts::AccountRow, DateTime<Utc>), LedgerError> {
    let row = db::accounts::lock(tx, key_id.as_str())
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))?;
    let now = now.max(row.period_start);
    lifecycle::catch_up(tx, &row, now).await?;
    let row = db::accounts::get(tx, key_id.as_str())
        .await?
        .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))?;
    Ok((row, now))
}

async fn pool_allowance(
    tx: &mut sqlx::PgConnection,
    key_id: &KeyId,
    pool: &PoolName,
) -> Result<Option<i64>, LedgerError> {
    let pools = db::accounts::pools_of(tx, &[key_id.to_string()]).await?;
    pools
        .into_iter()
        .find(|p| p.pool == pool.as_str())
        .map(|p| p.allowance)
        .ok_or_else(|| LedgerError::Price(PriceError::UnknownPool(pool.clone())))
}

impl Ledger {
    /// Adds a grant (a pack, a promotion, an adjustment) to a pool of the account.
    #[instrument(skip_all, fields(key_id = %key_id))]
    pub async fn create_grant(
        &self,
        key_id: &KeyId,
        request: &GrantRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Grant>, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if let Some((status, body)) = claim(&mut tx, key_id.as_str(), idempotency, now).await? {
            return Ok(Outcome::Replayed { status, body });
        }
        let (_, now) = lock_current(&mut tx, key_id, now).await?;
        pool_allowance(&mut tx, key_id, &request.pool).await?;
        let effective_at = request.effective_at.unwrap_or(now);
        if let Some(expires_at) = request.expires_at {
            if expires_at <= now || expires_at <= effective_at {
                return Err(LedgerError::Invalid(InvalidField::new(
                    "expires_at",
                    "must lie in the future and after effective_at",
                )));
            }
        }
        let id = Uuid::now_v7();
        db::grants::insert(
            &mut tx,
            &NewGrant {
                key_id: key_id.as_str(),
                id,
                pool: request.pool.as_str(),
                kind: request.kind,
                amount: request.amount,
                effective_at,
                expires_at: request.expires_at,
                priority: request.priority,
                period_start: None,
                metadata: &request.metadata,
                entry_kind: "grant",
                adjustment_id: None,
                balance_at: now,
                now,
            },
        )
        .await?;
        let record = db::grants::get(&mut tx, key_id.as_str(), id)
            .await?
            .ok_or_else(|| LedgerError::Database(sqlx::Error::RowNotFound))?;
        let grant = Grant::from_record(record, now);
        let payload = serde_json::to_value(&grant)
            .map_err(|e| LedgerError::Database(sqlx::Error::Decode(Box::new(e))))?;
        db::events::emit(
            &mut tx,
            key_id.as_str(),
            events::GRANT_CREATED,
            &payload,
            now,
        )
        .await?;
        events::check_resolved(&mut tx, key_id.as_str(), request.pool.as_str(), now).await?;
        finish(&mut tx, key_id.as_str(), idempotency, 201, &grant).await?;
        tx.commit().await?;
        Ok(Outcome::Done(grant))
    }

    /// Grants of an account, newest first.
    pub async fn list_grants(
        &self,
        key_id: &KeyId,
        before: Option<Uuid>,
        limit: i64,
    ) -> Result<GrantPage, LedgerError> {
        let now = self.now();
        self.ensure_current(key_id.as_str(), now).await?;
        let mut conn = self.db().acquire().await?;
        if db::accounts::get(&mut conn, key_id.as_str())
            .await?
            .is_none()
        {
            return Err(LedgerError::AccountNotFound(key_id.clone()));
        }
        let mut records = db::grants::list(&mut conn, key_id.as_str(), before, limit + 1).await?;
        let more = records.len() as i64 > limit;
        records.truncate(limit as usize);
        let data: Vec<Grant> = records
            .into_iter()
            .map(|g| Grant::from_record(g, now))
            .collect();
        let next_cursor = if more {
            data.last().map(|g| g.id.to_string())
        } else {
            None
        };
        Ok(GrantPage { data, next_cursor })
    }

    /// Voids a grant: what it had left leaves the balance with a `void` entry. Voiding a voided
    /// grant changes nothing and answers the grant again.
    #[instrument(skip_all, fields(grant_id = %id))]
    pub async fn void_grant(&self, id: Uuid) -> Result<Grant, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        let owner = db::grants::owner(&mut tx, id)
            .await?
            .ok_or(LedgerError::GrantNotFound(id))?;
        let key_id = KeyId::try_from(owner)
            .map_err(|e| LedgerError::Database(sqlx::Error::Protocol(e.to_string())))?;
        let (_, now) = lock_current(&mut tx, &key_id, now).await?;
        let record = db::grants::get(&mut tx, key_id.as_str(), id)
            .await?
            .ok_or(LedgerError::GrantNotFound(id))?;
        if record.voided_at.is_none() {
            db::grants::void(&mut tx, key_id.as_str(), id, now).await?;
        }
        let record = db::grants::get(&mut tx, key_id.as_str(), id)
            .await?
            .ok_or(LedgerError::GrantNotFound(id))?;
        tx.commit().await?;
        Ok(Grant::from_record(record, now))
    }

    /// Sets, increments or decrements a pool's available credits. An increment is a new
    /// never-expiring `adjustment` grant; a decrement draws from the grants in consumption order;
    /// `set` does whichever reaches the amount. All entries are of kind `adjustment`.
    #[instrument(skip_all, fields(key_id = %key_id))]
    pub async fn adjust(
        &self,
        key_id: &KeyId,
        request: &AdjustmentRequest,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Adjustment>, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if let Some((status, body)) = claim(&mut tx, key_id.as_str(), idempotency, now).await? {
            return Ok(Outcome::Replayed { status, body });
        }
        lock_current(&mut tx, key_id, now).await?;
        if pool_allowance(&mut tx, key_id, &request.pool)
            .await?
            .is_none()
        {
            return Err(LedgerError::Invalid(InvalidField::new(
                "pool",
                format!("{} is unlimited and has no balance to adjust", request.pool),
            )));
        }
        let pool = request.pool.as_str();
        let overage_used = db::accounts::pool(&mut tx, key_id.as_str(), pool)
            .await?
            .map_or(0, |p| p.overage_used);
        let granted = db::grants::available(&mut tx, key_id.as_str(), pool, now).await?;
        // As the balance shows it: credits in grants less overage owed.
        let available = granted - overage_used;
        let delta = match request.op {
            AdjustmentOp::Set => request.amount - available,
            AdjustmentOp::Increment => request.amount,
            AdjustmentOp::Decrement => -request.amount,
        };
        // A decrement takes credits out of grants; it cannot take what they do not have.
        if granted.checked_add(delta).is_none_or(|left| left < 0) {
            return Err(LedgerError::Unprocessable {
                code: "adjustment_exceeds_available",
                message: format!(
                    "pool {pool} has {granted} credits in grants; a decrement of {} would go below zero",
                    -delta
                ),
            });
        }
        let id = Uuid::now_v7();
        let metadata = serde_json::json!({"reason": request.reason});
        if delta > 0 {
            db::grants::insert(
                &mut tx,
                &NewGrant {
                    key_id: key_id.as_str(),
                    id: Uuid::now_v7(),
                    pool,
                    kind: "adjustment",
                    amount: delta,
                    effective_at: now,
                    expires_at: None,
                    priority: 0,
                    period_start: None,
                    metadata: &metadata,
                    entry_kind: "adjustment",
                    adjustment_id: Some(id),
                    balance_at: now,
                    now,
                },
            )
            .await?;
        } else if delta < 0 {
            let grants = db::grants::drawable(&mut tx, key_id.as_str(), pool, now).await?;
            let keyed = drawable_keys(&grants);
            let taken = rules::draw(&keyed, -delta).ok_or_else(|| LedgerError::Unprocessable {
                code: "adjustment_exceeds_available",
                message: format!("pool {pool} cannot cover a decrement of {}", -delta),
            })?;
            let mut balance = available;
            for (grant_id, take) in taken {
                balance -= take;
                db::grants::apply_change(
                    &mut tx,
                    &Change {
                        key_id: key_id.as_str(),
                        grant_id,
                        pool,
                        amount: -take,
                        kind: "adjustment",
                        balance_after: Some(balance),
                        operation: None,
                        debit_id: None,
                        reservation_id: None,
                        adjustment_id: Some(id),
                        metadata: &metadata,
                        now,
                    },
                )
                .await?;
            }
        }
        let adjustment = Adjustment {
            id,
            key_id: key_id.to_string(),
            pool: pool.to_owned(),
            op: request.op,
            amount: request.amount,
            delta,
            reason: request.reason.clone(),
            available: available + delta,
            created_at: now,
        };
        db::adjustments::insert(
            &mut tx,
            &db::adjustments::NewAdjustment {
                key_id: key_id.as_str(),
                id,
                pool,
                op: request.op.as_str(),
                amount: request.amount,
                delta,
                reason: &request.reason,
                available_after: adjustment.available,
                now,
            },
        )
        .await?;
        if delta > 0 {
            events::check_resolved(&mut tx, key_id.as_str(), pool, now).await?;
        }
        finish(&mut tx, key_id.as_str(), idempotency, 201, &adjustment).await?;
        tx.commit().await?;
        Ok(Outcome::Done(adjustment))
    }

    /// Moves the account to another plan (or a newer version of its own) with a proration.
    #[instrument(skip_all, fields(key_id = %key_id))]
    pub async fn change_plan(
        &self,
        key_id: &KeyId,
        plan_id: &PlanId,
        proration: Proration,
        idempotency: Option<&Idempotency>,
    ) -> Result<Outcome<Account>, LedgerError> {
        let now = self.now();
        let mut tx = self.db().begin().await?;
        if let Some((status, body)) = claim(&mut tx, key_id.as_str(), idempotency, now).await? {
            return Ok(Outcome::Replayed { status, body });
        }
        let (row, now) = lock_current(&mut tx, key_id, now).await?;
        let plan = db::plans::get(&mut tx, plan_id, None)
            .await?
            .ok_or_else(|| LedgerError::PlanNotFound(plan_id.clone()))?;
        lifecycle::change_plan(&mut tx, &row, &plan, proration, now).await?;
        let account = super::ops::load_accounts(&mut tx, &[key_id.to_string()], now)
            .await?
            .pop()
            .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))?;
        finish(&mut tx, key_id.as_str(), idempotency, 200, &account).await?;
        tx.commit().await?;
        Ok(Outcome::Done(account))
    }
}
