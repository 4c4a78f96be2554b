//! Members of shared accounts: registering keys with per-period caps, listing and removing them.
//! A member key has no account of its own and belongs to one account; each change holds the
//! member key's lock and the account's row lock, so it is ordered with the account's debits.

use std::collections::BTreeMap;

use super::{Ledger, ServiceError};
use crate::db;
use crate::db::members::MemberRow;
use crate::ledger::types::{InvalidField, KeyId, PoolName};
use crate::ledger::LedgerError;

/// The most members one page lists.
pub const PAGE_MAX: i64 = 500;

impl Ledger {
    /// Makes `member` a member of the account `key_id` with `caps`, or replaces its caps.
    /// Returns the member and whether it is new.
    pub async fn put_member(
        &self,
        key_id: &KeyId,
        member: &KeyId,
        caps: BTreeMap<PoolName, i64>,
    ) -> Result<(MemberRow, bool), ServiceError> {
        if key_id == member {
            return Err(LedgerError::Invalid(InvalidField::new(
                "member_key_id",
                "is the account's own key; a member is another key that draws from it",
            ))
            .into());
        }
        let mut tx = self.db().begin().await?;
        db::members::lock_key(&mut tx, member.as_str()).await?;
        if !db::members::lock_account(&mut tx, key_id.as_str()).await? {
            return Err(LedgerError::AccountNotFound(key_id.clone()).into());
        }
        // Taken under the account's lock, after any debit that held it.
        let now = self.now();
        if db::accounts::exists(&mut tx, member.as_str()).await? {
            return Err(LedgerError::Conflict {
                code: "member_has_account",
                message: format!(
                    "key {member} has an account of its own; a member key draws only from the \
                     shared account"
                ),
            }
            .into());
        }
        if let Some(other) = db::members::account_of(&mut tx, member.as_str()).await? {
            if other != key_id.as_str() {
                return Err(LedgerError::Conflict {
                    code: "member_of_another_account",
                    message: format!(
                        "key {member} is a member of account {other}; remove it there first \
                         (DELETE /v1/accounts/{other}/members/{member})"
                    ),
                }
                .into());
            }
        }
        let plan = db::plans::of_account(&mut tx, key_id.as_str())
            .await?
            .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))?;
        if let Some(pool) = caps.keys().find(|p| !plan.pools.contains_key(*p)) {
            return Err(LedgerError::Invalid(InvalidField::new(
                format!("caps.{pool}"),
                format!("names pool {pool}, which plan {} does not define", plan.id),
            ))
            .into());
        }
        let (row, created) =
            db::members::put(&mut tx, key_id.as_str(), member.as_str(), &caps, now).await?;
        tx.commit().await?;
        Ok((row, created))
    }

    pub async fn get_member(
        &self,
        key_id: &KeyId,
        member: &KeyId,
    ) -> Result<MemberRow, ServiceError> {
        let mut conn = self.db().acquire().await?;
        match db::members::get(&mut conn, key_id.as_str(), member.as_str()).await? {
            Some(row) => Ok(row),
            None => Err(not_a_member(&mut conn, key_id, member).await),
        }
    }

    pub async fn list_members(
        &self,
        key_id: &KeyId,
        after: Option<&str>,
        limit: i64,
    ) -> Result<Vec<MemberRow>, ServiceError> {
        let mut conn = self.db().acquire().await?;
        if !db::accounts::exists(&mut conn, key_id.as_str()).await? {
            return Err(LedgerError::AccountNotFound(key_id.clone()).into());
        }
        Ok(db::members::list(&mut conn, key_id.as_str(), after, limit).await?)
    }

    /// Ends a membership: the key's debits no longer land on the account (those made stay).
    pub async fn remove_member(&self, key_id: &KeyId, member: &KeyId) -> Result<(), ServiceError> {
        let mut tx = self.db().begin().await?;
        db::members::lock_key(&mut tx, member.as_str()).await?;
        if !db::members::lock_account(&mut tx, key_id.as_str()).await? {
            return Err(LedgerError::AccountNotFound(key_id.clone()).into());
        }
        if !db::members::remove(&mut tx, key_id.as_str(), member.as_str()).await? {
            return Err(not_a_member(&mut tx, key_id, member).await);
        }
        tx.commit().await?;
        Ok(())
    }
}

/// The refusal for a key that is not a member of the account (or no such account).
async fn not_a_member(
    conn: &mut sqlx::PgConnection,
    key_id: &KeyId,
    member: &KeyId,
) -> ServiceError {
    match db::accounts::exists(conn, key_id.as_str()).await {
        Ok(false) => LedgerError::AccountNotFound(key_id.clone()).into(),
        Ok(true) => LedgerError::MemberNotFound {
            key_id: key_id.clone(),
            member_key_id: member.clone(),
        }
        .into(),
        Err(err) => err.into(),
    }
}
