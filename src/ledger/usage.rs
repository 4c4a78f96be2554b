//! Usage for dashboards: credits debited and debits counted, per time bucket.

use chrono::{DateTime, DurationRound, Utc};
use serde::{Deserialize, Serialize};

use super::ops::Ledger;
use super::types::{InvalidField, KeyId};
use super::LedgerError;
use crate::db;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageInterval {
    Hour,
    Day,
    Month,
}

impl UsageInterval {
    pub fn as_str(self) -> &'static str {
        match self {
            UsageInterval::Hour => "hour",
            UsageInterval::Day => "day",
            UsageInterval::Month => "month",
        }
    }

    fn seconds(self) -> i64 {
        match self {
            UsageInterval::Hour => 3_600,
            UsageInterval::Day => 86_400,
            UsageInterval::Month => 28 * 86_400,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum UsageGroup {
    /// Per pool and operation.
    Operation,
    /// Per pool.
    Pool,
    /// Per pool and the Unkey key that made the debits (the keys of a shared account).
    Key,
}

#[derive(Debug, Clone)]
pub struct UsageQuery {
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
    pub interval: UsageInterval,
    pub group_by: UsageGroup,
    /// Only the debits this Unkey key made.
    pub source_key_id: Option<String>,
}

/// The most buckets one answer may hold.
pub const MAX_BUCKETS: i64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, sqlx::FromRow)]
pub struct UsageRow {
    pub start: DateTime<Utc>,
    pub pool: String,
    pub operation: Option<String>,
    pub key_id: Option<String>,
    /// Credits debited (refunds are not subtracted: they are separate entries).
    pub credits: i64,
    pub count: i64,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Usage {
    pub data: Vec<UsageRow>,
}

impl UsageQuery {
    pub fn check(&self) -> Result<(), InvalidField> {
        if self.from >= self.to {
            return Err(InvalidField::new("from", "must be before to"));
        }
        let span = (self.to - self.from).num_seconds();
        if span / self.interval.seconds() > MAX_BUCKETS {
            return Err(InvalidField::new(
                "interval",
                format!(
                    "gives more than {MAX_BUCKETS} buckets between from and to; use a larger interval"
                ),
            ));
        }
        Ok(())
    }
}

impl Ledger {
    pub async fn usage(&self, key_id: &KeyId, query: &UsageQuery) -> Result<Usage, LedgerError> {
        query.check()?;
        let mut conn = self.db().acquire().await?;
        if db::accounts::get(&mut conn, key_id.as_str())
            .await?
            .is_none()
        {
            return Err(LedgerError::AccountNotFound(key_id.clone()));
        }
        // The rollup is hourly: the range widens to whole hours.
        let from = query
            .from
            .duration_trunc(chrono::Duration::hours(1))
            .unwrap_or(query.from);
        let to = query
            .to
            .duration_round_up(chrono::Duration::hours(1))
            .unwrap_or(query.to);
        let data = db::usage::buckets(
            &mut conn,
            key_id.as_str(),
            from,
            to,
            query.interval.as_str(),
            match query.group_by {
                UsageGroup::Operation => "operation",
                UsageGroup::Pool => "pool",
                UsageGroup::Key => "key",
            },
            query.source_key_id.as_deref(),
        )
        .await?;
        Ok(Usage { data })
    }
}
