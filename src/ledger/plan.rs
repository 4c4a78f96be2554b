//! Plans: what each pool grants per period and what each operation costs. A plan's content is
//! versioned; a version never changes once written.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use super::types::{
    check_non_negative, check_positive, Interval, InvalidField, OperationName, PackId, PlanId,
    PoolName, DEFAULT_POOL,
};

/// One pool in a plan. `allowance: None` is an unlimited pool.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolSpec {
    pub allowance: Option<i64>,
    pub rollover_cap: Option<i64>,
    pub overage_limit: i64,
    /// Below this many available credits (every grant counted) the pool is announced as low.
    #[serde(default)]
    pub low_balance: Option<i64>,
}

impl PoolSpec {
    pub fn limited(allowance: i64) -> Self {
        Self {
            allowance: Some(allowance),
            rollover_cap: None,
            overage_limit: 0,
            low_balance: None,
        }
    }
}

/// The price of one unit of an operation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UnitPrice {
    pub pool: PoolName,
    pub cost: i64,
}

/// A burst rate limit that `/v1/verify` asks Unkey to apply.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RateLimit {
    pub name: String,
    pub limit: i64,
    pub duration_ms: i64,
}

/// What a pack costs the customer, in the currency's minor unit (cents for `usd`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Price {
    pub amount: i64,
    pub currency: String,
}

/// A pack of credits the plan sells: granted as a `pack` grant into `pool`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Pack {
    pub pool: PoolName,
    pub credits: i64,
    /// Days from the grant's effective time to its expiry; `None`: it never expires.
    pub expires_in_days: Option<i32>,
    pub price: Option<Price>,
    /// The Stripe Price that Checkout sells it with (`price_…`).
    pub stripe_price: Option<String>,
}

/// The versioned content of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PlanDefinition {
    pub name: String,
    pub interval: Interval,
    pub pools: BTreeMap<PoolName, PoolSpec>,
    pub operations: BTreeMap<OperationName, UnitPrice>,
    pub ratelimits: Vec<RateLimit>,
    /// Percentages of a period's allowance used that are announced as events.
    pub thresholds: Vec<i32>,
    /// The pack catalogue: what can be bought or granted by pack id.
    #[serde(default)]
    pub packs: BTreeMap<PackId, Pack>,
    /// How many days before a pack, promotional, adjustment or refund grant with credits left
    /// expires `grant.expiring` is announced; 0 announces nothing.
    #[serde(default = "default_expiry_warning_days")]
    pub expiry_warning_days: i32,
}

/// The warning a plan gives before a grant expires when it names none, in days.
pub const DEFAULT_EXPIRY_WARNING_DAYS: i32 = 7;
/// The longest warning a plan may give, in days.
pub const EXPIRY_WARNING_DAYS_MAX: i32 = 365;

fn default_expiry_warning_days() -> i32 {
    DEFAULT_EXPIRY_WARNING_DAYS
}

/// The thresholds a plan announces when it names none.
pub const DEFAULT_THRESHOLDS: [i32; 2] = [80, 100];

/// One version of a plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Plan {
    pub id: PlanId,
    pub version: i32,
    #[serde(flatten)]
    pub definition: PlanDefinition,
    pub created_at: DateTime<Utc>,
}

impl std::ops::Deref for Plan {
    type Target = PlanDefinition;

    fn deref(&self) -> &PlanDefinition {
        &self.definition
    }
}

impl Plan {
    #[cfg(test)]
    pub(crate) fn for_tests(
        pools: BTreeMap<PoolName, PoolSpec>,
        operations: BTreeMap<OperationName, UnitPrice>,
    ) -> Self {
        Plan {
            id: PlanId::parse("plan_id", "test").unwrap(),
            version: 1,
            definition: PlanDefinition {
                name: "Test".into(),
                interval: Interval::Month,
                pools,
                operations,
                ratelimits: Vec::new(),
                thresholds: DEFAULT_THRESHOLDS.to_vec(),
                packs: BTreeMap::new(),
                expiry_warning_days: DEFAULT_EXPIRY_WARNING_DAYS,
            },
            created_at: Utc::now(),
        }
    }
}

/// The PUT body of a plan, as sent. Validated into a [`PlanDefinition`].
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanBody {
    pub name: String,
    pub interval: Interval,
    pub pools: BTreeMap<String, PoolBody>,
    #[serde(default)]
    pub operations: BTreeMap<String, PriceBody>,
    #[serde(default)]
    pub ratelimits: Vec<RateLimitBody>,
    #[serde(default)]
    pub thresholds: Option<Vec<i64>>,
    #[serde(default)]
    pub packs: BTreeMap<String, PackBody>,
    #[serde(default)]
    pub expiry_warning_days: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackBody {
    #[serde(default)]
    pub pool: Option<String>,
    pub credits: i64,
    #[serde(default)]
    pub expires_in_days: Option<i64>,
    #[serde(default)]
    pub price: Option<PackPriceBody>,
    #[serde(default)]
    pub stripe_price: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PackPriceBody {
    pub amount: i64,
    pub currency: String,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolBody {
    /// Present-and-null (unlimited) differs from absent (a mistake), hence the double option.
    #[serde(default, deserialize_with = "crate::ledger::types::present")]
    pub allowance: Option<Option<i64>>,
    #[serde(default)]
    pub rollover_cap: Option<i64>,
    #[serde(default)]
    pub overage_limit: Option<i64>,
    #[serde(default)]
    pub low_balance: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceBody {
    #[serde(default)]
    pub pool: Option<String>,
    pub cost: i64,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RateLimitBody {
    pub name: String,
    pub limit: i64,
    pub duration_ms: i64,
}

const MAX_POOLS: usize = 32;
const MAX_OPERATIONS: usize = 1000;
const MAX_RATELIMITS: usize = 10;
const MAX_PACKS: usize = 50;
/// The longest a pack may last: ten years.
const PACK_DAYS_MAX: i64 = 3_650;
/// The highest price, in minor units (a billion in major units of a two-decimal currency).
const PRICE_MAX: i64 = 100_000_000_000;
/// Unkey's own bounds for a rate limit.
const RATELIMIT_LIMIT_MAX: i64 = 1_000_000;
const RATELIMIT_DURATION_MS: std::ops::RangeInclusive<i64> = 1_000..=2_592_000_000;

impl PlanBody {
    pub fn validate(self) -> Result<PlanDefinition, InvalidField> {
        let name = self.name.trim().to_owned();
        if name.is_empty() || name.chars().count() > 200 {
            return Err(InvalidField::new(
                "name",
                "must be 1 to 200 characters long",
            ));
        }
        if self.pools.is_empty() {
            return Err(InvalidField::new("pools", "must name at least one pool"));
        }
        if self.pools.len() > MAX_POOLS {
            return Err(InvalidField::new(
                "pools",
                format!("may name at most {MAX_POOLS} pools"),
            ));
        }
        let mut pools = BTreeMap::new();
        for (raw, body) in self.pools {
            let field = format!("pools.{raw}");
            let pool = PoolName::parse(&field, &raw)?;
            let allowance = match body.allowance {
                None => {
                    return Err(InvalidField::new(
                        format!("{field}.allowance"),
                        "is required (a number of credits per period, or null for unlimited)",
                    ))
                }
                Some(None) => None,
                Some(Some(n)) => Some(check_non_negative(&format!("{field}.allowance"), n)?),
            };
            let rollover_cap = body
                .rollover_cap
                .map(|n| check_non_negative(&format!("{field}.rollover_cap"), n))
                .transpose()?;
            let overage_limit = check_non_negative(
                &format!("{field}.overage_limit"),
                body.overage_limit.unwrap_or(0),
            )?;
            let low_balance = body
                .low_balance
                .map(|n| check_non_negative(&format!("{field}.low_balance"), n))
                .transpose()?;
            if allowance.is_none()
                && (rollover_cap.is_some() || overage_limit > 0 || low_balance.is_some())
            {
                return Err(InvalidField::new(
                    field,
                    "is unlimited (allowance null) and so takes no rollover_cap, overage_limit or low_balance",
                ));
            }
            pools.insert(
                pool,
                PoolSpec {
                    allowance,
                    rollover_cap,
                    overage_limit,
                    low_balance,
                },
            );
        }
        if self.operations.len() > MAX_OPERATIONS {
            return Err(InvalidField::new(
                "operations",
                format!("may name at most {MAX_OPERATIONS} operations"),
            ));
        }
        let mut operations = BTreeMap::new();
        for (raw, body) in self.operations {
            let field = format!("operations.{raw}");
            let operation = OperationName::parse(&field, &raw)?;
            let pool = PoolName::parse(
                &format!("{field}.pool"),
                body.pool.as_deref().unwrap_or(DEFAULT_POOL),
            )?;
            if !pools.contains_key(&pool) {
                return Err(InvalidField::new(
                    format!("{field}.pool"),
                    format!("names pool {pool}, which the plan does not define in pools"),
                ));
            }
            let cost = check_positive(&format!("{field}.cost"), body.cost)?;
            operations.insert(operation, UnitPrice { pool, cost });
        }
        if self.ratelimits.len() > MAX_RATELIMITS {
            return Err(InvalidField::new(
                "ratelimits",
                format!("may hold at most {MAX_RATELIMITS} limits"),
            ));
        }
        let mut ratelimits = Vec::with_capacity(self.ratelimits.len());
        for (i, body) in self.ratelimits.into_iter().enumerate() {
            let field = format!("ratelimits[{i}]");
            OperationName::parse(&format!("{field}.name"), &body.name)?;
            if ratelimits.iter().any(|r: &RateLimit| r.name == body.name) {
                return Err(InvalidField::new(
                    format!("{field}.name"),
                    "repeats the name of another limit",
                ));
            }
            if !(1..=RATELIMIT_LIMIT_MAX).contains(&body.limit) {
                return Err(InvalidField::new(
                    format!("{field}.limit"),
                    format!("must be between 1 and {RATELIMIT_LIMIT_MAX}"),
                ));
            }
            if !RATELIMIT_DURATION_MS.contains(&body.duration_ms) {
                return Err(InvalidField::new(
                    format!("{field}.duration_ms"),
                    "must be between 1000 and 2592000000 milliseconds",
                ));
            }
            ratelimits.push(RateLimit {
                name: body.name,
                limit: body.limit,
                duration_ms: body.duration_ms,
            });
        }
        let thresholds = match self.thresholds {
            None => DEFAULT_THRESHOLDS.to_vec(),
            Some(list) => {
                if list.len() > 10 {
                    return Err(InvalidField::new(
                        "thresholds",
                        "may hold at most 10 percentages",
                    ));
                }
                let mut seen = Vec::with_capacity(list.len());
                for (i, t) in list.into_iter().enumerate() {
                    let t = i32::try_from(t)
                        .ok()
                        .filter(|t| (1..=100).contains(t))
                        .ok_or_else(|| {
                            InvalidField::new(
                                format!("thresholds[{i}]"),
                                "must be a percentage from 1 to 100",
                            )
                        })?;
                    if seen.contains(&t) {
                        return Err(InvalidField::new(
                            format!("thresholds[{i}]"),
                            "repeats another threshold",
                        ));
                    }
                    seen.push(t);
                }
                seen.sort_unstable();
                seen
            }
        };
        let packs = validate_packs(self.packs, &pools)?;
        let expiry_warning_days = match self.expiry_warning_days {
            None => DEFAULT_EXPIRY_WARNING_DAYS,
            Some(days) => i32::try_from(days)
                .ok()
                .filter(|d| (0..=EXPIRY_WARNING_DAYS_MAX).contains(d))
                .ok_or_else(|| {
                    InvalidField::new(
                        "expiry_warning_days",
                        format!(
                            "must be from 0 (no warnings) to {EXPIRY_WARNING_DAYS_MAX} days, got {days}"
                        ),
                    )
                })?,
        };
        Ok(PlanDefinition {
            name,
            interval: self.interval,
            pools,
            operations,
            ratelimits,
            thresholds,
            packs,
            expiry_warning_days,
        })
    }
}

fn validate_packs(
    bodies: BTreeMap<String, PackBody>,
    pools: &BTreeMap<PoolName, PoolSpec>,
) -> Result<BTreeMap<PackId, Pack>, InvalidField> {
    if bodies.len() > MAX_PACKS {
        return Err(InvalidField::new(
            "packs",
            format!("may hold at most {MAX_PACKS} packs"),
        ));
    }
    let mut packs = BTreeMap::new();
    for (raw, body) in bodies {
        let field = format!("packs.{raw}");
        let id = PackId::parse(&field, &raw)?;
        let pool = PoolName::parse(
            &format!("{field}.pool"),
            body.pool.as_deref().unwrap_or(DEFAULT_POOL),
        )?;
        match pools.get(&pool) {
            None => {
                return Err(InvalidField::new(
                    format!("{field}.pool"),
                    format!("names pool {pool}, which the plan does not define in pools"),
                ))
            }
            Some(spec) if spec.allowance.is_none() => {
                return Err(InvalidField::new(
                    format!("{field}.pool"),
                    format!("names pool {pool}, which is unlimited: a pack would add nothing"),
                ))
            }
            Some(_) => {}
        }
        let credits = check_positive(&format!("{field}.credits"), body.credits)?;
        let expires_in_days = body
            .expires_in_days
            .map(|days| {
                i32::try_from(days)
                    .ok()
                    .filter(|d| (1..=PACK_DAYS_MAX).contains(&i64::from(*d)))
                    .ok_or_else(|| {
                        InvalidField::new(
                            format!("{field}.expires_in_days"),
                            format!("must be from 1 to {PACK_DAYS_MAX} days, or absent for never"),
                        )
                    })
            })
            .transpose()?;
        let price = body
            .price
            .map(|price| {
                if !(0..=PRICE_MAX).contains(&price.amount) {
                    return Err(InvalidField::new(
                        format!("{field}.price.amount"),
                        format!(
                            "must be from 0 to {PRICE_MAX}, in the currency's minor unit (cents for usd)"
                        ),
                    ));
                }
                let currency = price.currency.to_ascii_lowercase();
                if currency.len() != 3 || !currency.bytes().all(|b| b.is_ascii_lowercase()) {
                    return Err(InvalidField::new(
                        format!("{field}.price.currency"),
                        "must be a three-letter ISO 4217 code such as usd or eur",
                    ));
                }
                Ok(Price {
                    amount: price.amount,
                    currency,
                })
            })
            .transpose()?;
        if let Some(stripe_price) = &body.stripe_price {
            let well_formed = stripe_price.len() <= 255
                && stripe_price.strip_prefix("price_").is_some_and(|rest| {
                    !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric())
                });
            if !well_formed {
                return Err(InvalidField::new(
                    format!("{field}.stripe_price"),
                    "must be the id of a Stripe Price (price_ followed by letters and digits)",
                ));
            }
        }
        packs.insert(
            id,
            Pack {
                pool,
                credits,
                expires_in_days,
                price,
                stripe_price: body.stripe_price,
            },
        );
    }
    Ok(packs)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(json: serde_json::Value) -> Result<PlanDefinition, InvalidField> {
        serde_json::from_value::<PlanBody>(json).unwrap().validate()
    }

    #[test]
    fn a_plan_validates_and_defaults_the_operation_pool() {
        let plan = body(serde_json::json!({
            "name": "Pro", "interval": "month",
            "pools": {"credits": {"allowance": 10000, "rollover_cap": 5000}},
            "operations": {"image.generate": {"pool": "credits", "cost": 10}, "search": {"cost": 1}},
        }))
        .unwrap();
        let search = &plan.operations[&OperationName::parse("o", "search").unwrap()];
        assert_eq!(search.pool.as_str(), "credits");
        assert_eq!(plan.pools[&PoolName::default_pool()].overage_limit, 0);
    }

    #[test]
    fn allowance_must_be_present_and_null_means_unlimited() {
        let missing = body(serde_json::json!({
            "name": "P", "interval": "day", "pools": {"credits": {}}}));
        assert_eq!(missing.unwrap_err().field, "pools.credits.allowance");
        let unlimited = body(serde_json::json!({
            "name": "P", "interval": "day", "pools": {"credits": {"allowance": null}}}))
        .unwrap();
        assert_eq!(unlimited.pools[&PoolName::default_pool()].allowance, None);
    }

    #[test]
    fn invalid_plans_name_the_field() {
        let cases = [
            (
                serde_json::json!({"name": "", "interval": "day", "pools": {"credits": {"allowance": 1}}}),
                "name",
            ),
            (
                serde_json::json!({"name": "P", "interval": "day", "pools": {}}),
                "pools",
            ),
            (
                serde_json::json!({"name": "P", "interval": "day", "pools": {"credits": {"allowance": -1}}}),
                "pools.credits.allowance",
            ),
            (
                serde_json::json!({"name": "P", "interval": "day", "pools": {"credits": {"allowance": 1}},
                    "operations": {"x": {"pool": "tokens", "cost": 1}}}),
                "operations.x.pool",
            ),
            (
                serde_json::json!({"name": "P", "interval": "day", "pools": {"credits": {"allowance": 1}},
                    "operations": {"x": {"cost": 0}}}),
                "operations.x.cost",
            ),
            (
                serde_json::json!({"name": "P", "interval": "day", "pools": {"credits": {"allowance": 1}},
                    "ratelimits": [{"name": "burst", "limit": 5, "duration_ms": 10}]}),
                "ratelimits[0].duration_ms",
            ),
        ];
        for (json, field) in cases {
            assert_eq!(body(json).unwrap_err().field, field);
        }
    }

    #[test]
    fn packs_validate_against_the_plan_pools() {
        let plan = body(serde_json::json!({
            "name": "Pro", "interval": "month",
            "pools": {"credits": {"allowance": 100}, "free": {"allowance": null}},
            "packs": {"starter": {"credits": 5000, "expires_in_days": 365,
                                  "price": {"amount": 1900, "currency": "USD"},
                                  "stripe_price": "price_1Abc"},
                      "forever": {"credits": 10}},
        }))
        .unwrap();
        let starter = &plan.packs[&PackId::parse("p", "starter").unwrap()];
        assert_eq!(starter.pool.as_str(), "credits");
        assert_eq!(starter.expires_in_days, Some(365));
        assert_eq!(starter.price.as_ref().unwrap().currency, "usd");
        assert_eq!(
            plan.packs[&PackId::parse("p", "forever").unwrap()].expires_in_days,
            None
        );

        let refused = |packs: serde_json::Value| {
            body(serde_json::json!({"name": "P", "interval": "month",
                                    "pools": {"credits": {"allowance": 100},
                                              "free": {"allowance": null}},
                                    "packs": packs}))
            .unwrap_err()
            .field
        };
        assert_eq!(
            refused(serde_json::json!({"a": {"credits": 0}})),
            "packs.a.credits"
        );
        assert_eq!(
            refused(serde_json::json!({"a": {"credits": 1, "pool": "nope"}})),
            "packs.a.pool"
        );
        assert_eq!(
            refused(serde_json::json!({"a": {"credits": 1, "pool": "free"}})),
            "packs.a.pool"
        );
        assert_eq!(
            refused(serde_json::json!({"a": {"credits": 1, "expires_in_days": 0}})),
            "packs.a.expires_in_days"
        );
        assert_eq!(
            refused(
                serde_json::json!({"a": {"credits": 1, "price": {"amount": -1, "currency": "usd"}}})
            ),
            "packs.a.price.amount"
        );
        assert_eq!(
            refused(
                serde_json::json!({"a": {"credits": 1, "price": {"amount": 1, "currency": "dollars"}}})
            ),
            "packs.a.price.currency"
        );
        assert_eq!(
            refused(serde_json::json!({"a": {"credits": 1, "stripe_price": "prod_1"}})),
            "packs.a.stripe_price"
        );
        assert_eq!(
            refused(serde_json::json!({"a b": {"credits": 1}})),
            "packs.a b"
        );
    }
}
