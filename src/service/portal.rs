//! Customer portal links: a short-lived bearer token for a read-only view of one account.
//!
//! A token is `pt_<account key, base64url>.<32 random bytes, base64url>`. It names its account
//! so that a lookup goes to that account's rows (and shard); only its SHA-256 digest is stored.

use aes_gcm::aead::rand_core::RngCore;
use aes_gcm::aead::OsRng;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Duration, Utc};
use serde::Serialize;
use sha2::{Digest, Sha256};

use super::{Ledger, ServiceError};
use crate::db;
use crate::db::entries::EntryFilter;
use crate::ledger::model::{Balance, Entry};
use crate::ledger::plan::Price;
use crate::ledger::types::{KeyId, PackId, PoolName};
use crate::ledger::usage::{Usage, UsageGroup, UsageInterval, UsageQuery};
use crate::ledger::LedgerError;

const TOKEN_PREFIX: &str = "pt_";
/// How many recent entries the portal shows.
pub const PORTAL_ENTRIES: i64 = 20;

/// A new link's token, shown once.
#[derive(Debug, Clone)]
pub struct OpenedPortal {
    pub token: String,
    pub expires_at: DateTime<Utc>,
}

/// Why a portal token opens nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PortalRefusal {
    Unknown,
    Expired(DateTime<Utc>),
}

/// A portal link that opens: whose it is and until when.
#[derive(Debug, Clone)]
pub struct PortalAccess {
    pub key_id: KeyId,
    pub return_url: Option<String>,
    pub expires_at: DateTime<Utc>,
}

/// What the portal shows the customer.
#[derive(Debug, Clone, Serialize)]
pub struct PortalView {
    pub key_id: KeyId,
    pub plan: PortalPlan,
    pub expires_at: DateTime<Utc>,
    pub return_url: Option<String>,
    pub balance: Balance,
    pub usage: Usage,
    pub entries: Vec<Entry>,
    pub packs: Vec<PortalPack>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortalPlan {
    pub id: String,
    pub name: String,
}

#[derive(Debug, Clone, Serialize)]
pub struct PortalPack {
    pub id: PackId,
    pub pool: PoolName,
    pub credits: i64,
    pub expires_in_days: Option<i32>,
    pub price: Option<Price>,
    /// Whether the portal can sell it: it has a Stripe price, the link a `return_url`, and
    /// the ledger Stripe settings.
    pub buyable: bool,
}

fn digest(token: &str) -> [u8; 32] {
    Sha256::digest(token.as_bytes()).into()
}

/// The account a token names, if it is shaped like one of ours.
fn account_of(token: &str) -> Option<KeyId> {
    let (named, secret) = token.strip_prefix(TOKEN_PREFIX)?.split_once('.')?;
    if secret.len() != 43 {
        return None;
    }
    let key = String::from_utf8(URL_SAFE_NO_PAD.decode(named).ok()?).ok()?;
    KeyId::parse("key_id", &key).ok()
}

impl Ledger {
    /// Makes a link to the account's portal, valid for `ttl`.
    pub async fn open_portal(
        &self,
        key_id: &KeyId,
        return_url: Option<&str>,
        ttl: Duration,
    ) -> Result<OpenedPortal, ServiceError> {
        let mut secret = [0u8; 32];
        OsRng.fill_bytes(&mut secret);
        let token = format!(
            "{TOKEN_PREFIX}{}.{}",
            URL_SAFE_NO_PAD.encode(key_id.as_str()),
            URL_SAFE_NO_PAD.encode(secret)
        );
        let now = self.now();
        let expires_at = now + ttl;
        let mut conn = self.db.acquire().await?;
        let stored = db::portal::insert(
            &mut conn,
            key_id.as_str(),
            &digest(&token),
            return_url,
            now,
            expires_at,
        )
        .await?;
        if !stored {
            return Err(LedgerError::AccountNotFound(key_id.clone()).into());
        }
        Ok(OpenedPortal { token, expires_at })
    }

    /// The account a portal token opens, or why it opens none.
    pub async fn portal_access(
        &self,
        token: &str,
    ) -> Result<Result<PortalAccess, PortalRefusal>, ServiceError> {
        let Some(key_id) = account_of(token) else {
            return Ok(Err(PortalRefusal::Unknown));
        };
        let mut conn = self.db.acquire().await?;
        let Some(found) = db::portal::find(&mut conn, key_id.as_str(), &digest(token)).await?
        else {
            return Ok(Err(PortalRefusal::Unknown));
        };
        if found.expires_at <= self.now() {
            return Ok(Err(PortalRefusal::Expired(found.expires_at)));
        }
        Ok(Ok(PortalAccess {
            key_id,
            return_url: found.return_url,
            expires_at: found.expires_at,
        }))
    }

    /// Everything the portal shows: balance, this period's usage by day and operation, recent
    /// entries and the packs the plan sells.
    pub async fn portal_view(&self, access: &PortalAccess) -> Result<PortalView, ServiceError> {
        let key_id = &access.key_id;
        let balance = self.balance(key_id).await?;
        let usage = self
            .usage(
                key_id,
                &UsageQuery {
                    from: balance.period.start,
                    // Another replica's clock may be a little ahead and have begun the period.
                    to: self.now().max(balance.period.start) + Duration::seconds(1),
                    interval: UsageInterval::Day,
                    group_by: UsageGroup::Operation,
                    source_key_id: None,
                },
            )
            .await?;
        let entries = self
            .entries(key_id, &EntryFilter::default(), PORTAL_ENTRIES)
            .await?
            .data;
        let plan = self
            .plan_of(key_id)
            .await?
            .ok_or_else(|| LedgerError::AccountNotFound(key_id.clone()))?;
        let packs = plan
            .packs
            .iter()
            .map(|(id, pack)| PortalPack {
                id: id.clone(),
                pool: pack.pool.clone(),
                credits: pack.credits,
                expires_in_days: pack.expires_in_days,
                price: pack.price.clone(),
                buyable: pack.stripe_price.is_some() && access.return_url.is_some(),
            })
            .collect();
        Ok(PortalView {
            key_id: key_id.clone(),
            plan: PortalPlan {
                id: plan.id.to_string(),
                name: plan.name.clone(),
            },
            expires_at: access.expires_at,
            return_url: access.return_url.clone(),
            balance,
            usage,
            entries,
            packs,
        })
    }

    /// Forgets portal links that expired more than a day ago.
    pub async fn purge_portal_sessions(&self) -> Result<u64, ServiceError> {
        let mut conn = self.db.acquire().await?;
        Ok(db::portal::purge_expired_before(&mut conn, self.now() - Duration::days(1)).await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_token_names_its_account_and_nothing_else_parses() {
        let key = URL_SAFE_NO_PAD.encode("key_123");
        let secret = URL_SAFE_NO_PAD.encode([7u8; 32]);
        let token = format!("pt_{key}.{secret}");
        assert_eq!(account_of(&token).unwrap().as_str(), "key_123");
        for bad in [
            String::new(),
            format!("pt_{key}"),
            format!("xx_{key}.{secret}"),
            format!("pt_{key}.short"),
            format!("pt_!!.{secret}"),
            format!("pt_{}.{secret}", URL_SAFE_NO_PAD.encode("")),
        ] {
            assert!(account_of(&bad).is_none(), "{bad}");
        }
    }
}
