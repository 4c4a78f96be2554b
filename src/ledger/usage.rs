//! Usage for dashboards: credits debited and debits counted, per time bucket.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::types::InvalidField;

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

    pub fn seconds(self) -> i64 {
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

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
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
        // An empty window (from = to) is a valid question with an empty answer.
        if self.from > self.to {
            return Err(InvalidField::new("from", "must not be after to"));
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
