//! Per-account overrides: a customer's negotiated allowance, rollover cap, overage limit or
//! prices, without a plan of their own. The account's effective plan is its plan with these
//! applied, and every rule (debits, rolls, thresholds, balances) reads the effective plan, so an
//! override is applied by the same rules as the plan it changes.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use super::plan::{Plan, PoolSpec, UnitPrice};
use super::state::AccountState;
use super::types::DEFAULT_POOL;
use super::types::{check_non_negative, check_positive, InvalidField, OperationName, PoolName};

/// What an account changes of its plan. Empty maps are omitted.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Overrides {
    #[serde(default)]
    pub pools: BTreeMap<PoolName, PoolOverride>,
    #[serde(default)]
    pub operations: BTreeMap<OperationName, UnitPrice>,
}

/// A pool's terms for one account; `None` keeps the plan's.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PoolOverride {
    #[serde(default)]
    pub allowance: Option<i64>,
    #[serde(default)]
    pub rollover_cap: Option<i64>,
    #[serde(default)]
    pub overage_limit: Option<i64>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        self.pools.is_empty() && self.operations.is_empty()
    }

    /// What of these overrides a debit in `pool` priced as `operation` was made under, for the
    /// debit's record; `None` when none applied.
    pub fn applied_to(
        &self,
        pool: &PoolName,
        operation: Option<&OperationName>,
    ) -> Option<serde_json::Value> {
        let mut applied = serde_json::Map::new();
        if let Some(terms) = self.pools.get(pool) {
            applied.insert("pool".into(), serde_json::json!(terms));
        }
        if let Some(price) = operation.and_then(|op| self.operations.get(op)) {
            applied.insert("operation".into(), serde_json::json!(price));
        }
        (!applied.is_empty()).then_some(serde_json::Value::Object(applied))
    }
}

/// The body of `overrides`, as sent.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OverridesBody {
    #[serde(default)]
    pub pools: BTreeMap<String, PoolOverrideBody>,
    #[serde(default)]
    pub operations: BTreeMap<String, PriceOverrideBody>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PoolOverrideBody {
    #[serde(default)]
    pub allowance: Option<i64>,
    #[serde(default)]
    pub rollover_cap: Option<i64>,
    #[serde(default)]
    pub overage_limit: Option<i64>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PriceOverrideBody {
    #[serde(default)]
    pub pool: Option<String>,
    pub cost: i64,
}

const MAX_OPERATIONS: usize = 1000;

impl OverridesBody {
    /// Checks the shape of each value; whether they fit the plan is [`check`]'s.
    pub fn validate(self) -> Result<Overrides, InvalidField> {
        let mut pools = BTreeMap::new();
        for (raw, body) in self.pools {
            let field = format!("overrides.pools.{raw}");
            let pool = PoolName::parse(&field, &raw)?;
            let number = |name: &str, value: Option<i64>| {
                value
                    .map(|n| check_non_negative(&format!("{field}.{name}"), n))
                    .transpose()
            };
            let terms = PoolOverride {
                allowance: number("allowance", body.allowance)?,
                rollover_cap: number("rollover_cap", body.rollover_cap)?,
                overage_limit: number("overage_limit", body.overage_limit)?,
            };
            if terms == PoolOverride::default() {
                return Err(InvalidField::new(
                    field,
                    "must change allowance, rollover_cap or overage_limit",
                ));
            }
            pools.insert(pool, terms);
        }
        if self.operations.len() > MAX_OPERATIONS {
            return Err(InvalidField::new(
                "overrides.operations",
                format!("may name at most {MAX_OPERATIONS} operations"),
            ));
        }
        let mut operations = BTreeMap::new();
        for (raw, body) in self.operations {
            let field = format!("overrides.operations.{raw}");
            let operation = OperationName::parse(&field, &raw)?;
            let pool = PoolName::parse(
                &format!("{field}.pool"),
                body.pool.as_deref().unwrap_or(DEFAULT_POOL),
            )?;
            let cost = check_positive(&format!("{field}.cost"), body.cost)?;
            operations.insert(operation, UnitPrice { pool, cost });
        }
        Ok(Overrides { pools, operations })
    }
}

/// Whether `overrides` fit `plan`: each pool it changes is a limited pool of the plan, and each
/// price it sets is in one of the plan's pools.
pub fn check(plan: &Plan, overrides: &Overrides) -> Result<(), InvalidField> {
    for pool in overrides.pools.keys() {
        match plan.pools.get(pool) {
            None => {
                return Err(InvalidField::new(
                    format!("overrides.pools.{pool}"),
                    format!("names pool {pool}, which plan {} does not define", plan.id),
                ))
            }
            Some(spec) if spec.allowance.is_none() => {
                return Err(InvalidField::new(
                    format!("overrides.pools.{pool}"),
                    format!("names pool {pool}, which is unlimited on plan {}", plan.id),
                ))
            }
            Some(_) => {}
        }
    }
    for (operation, price) in &overrides.operations {
        if !plan.pools.contains_key(&price.pool) {
            return Err(InvalidField::new(
                format!("overrides.operations.{operation}.pool"),
                format!(
                    "names pool {}, which plan {} does not define",
                    price.pool, plan.id
                ),
            ));
        }
    }
    Ok(())
}

/// The plan an account with `overrides` is on: `plan` with them applied (they must fit it).
pub fn effective(plan: &Plan, overrides: &Overrides) -> Plan {
    let mut plan = plan.clone();
    for (pool, terms) in &overrides.pools {
        if let Some(spec) = plan.definition.pools.get_mut(pool) {
            if spec.allowance.is_some() {
                spec.allowance = terms.allowance.or(spec.allowance);
                spec.rollover_cap = terms.rollover_cap.or(spec.rollover_cap);
                spec.overage_limit = terms.overage_limit.unwrap_or(spec.overage_limit);
            }
        }
    }
    for (operation, price) in &overrides.operations {
        if plan.pools.contains_key(&price.pool) {
            plan.definition
                .operations
                .insert(operation.clone(), price.clone());
        }
    }
    plan
}

/// The terms a change of the account's overrides (from `old` to the account's current ones) is
/// prorated to: each pool keeps the allowance and overage limit its period runs on, but for the
/// fields whose override changed, which take their new effective value; prices are the new
/// effective plan's. So a newer version of the plan, waiting for the next period, is not pulled
/// into this one by an unrelated override.
pub fn changed_terms(state: &AccountState, written: &Plan, old: Option<&Overrides>) -> Plan {
    let new = state.account.overrides.as_ref();
    let target = match new {
        Some(o) => effective(written, o),
        None => written.clone(),
    };
    let of = |o: Option<&Overrides>, pool: &PoolName| {
        o.and_then(|o| o.pools.get(pool))
            .cloned()
            .unwrap_or_default()
    };
    let mut terms = target.clone();
    terms.definition.pools = BTreeMap::new();
    for (pool, counters) in &state.pools {
        let (before, after) = (of(old, pool), of(new, pool));
        let spec = target.pools.get(pool);
        let allowance = match spec {
            Some(s) if before.allowance != after.allowance => s.allowance,
            _ => counters.allowance,
        };
        let overage_limit = match spec {
            Some(s) if before.overage_limit != after.overage_limit => s.overage_limit,
            _ => counters.overage_limit,
        };
        terms.definition.pools.insert(
            pool.clone(),
            PoolSpec {
                allowance,
                rollover_cap: spec.and_then(|s| s.rollover_cap),
                overage_limit,
                low_balance: spec.and_then(|s| s.low_balance),
            },
        );
    }
    terms
}
