//! Rule 1: what a debit costs. cost = price(operation) × quantity, or an explicit cost.

use super::plan::Plan;
use super::types::{OperationName, PoolName, MAX_CREDITS};

/// What a debit asks to be charged, before pricing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DebitSpec {
    pub operation: Option<OperationName>,
    pub quantity: i64,
    pub cost: Option<i64>,
    pub pool: Option<PoolName>,
}

/// A priced debit: how much, from which pool.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Charge {
    pub pool: PoolName,
    pub cost: i64,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PriceError {
    #[error("operation {operation} has no price in this account's plan; {}", priced_list(.known))]
    UnknownOperation {
        operation: OperationName,
        /// The plan's operations, the first [`KNOWN_LISTED`] by name.
        known: Vec<OperationName>,
    },
    #[error("pool {0} is not part of this account's plan")]
    UnknownPool(PoolName),
    #[error("operation {operation} is priced in pool {priced}, not {requested}")]
    PoolMismatch {
        operation: OperationName,
        priced: PoolName,
        requested: PoolName,
    },
    #[error("the cost of {quantity} × {operation} exceeds {MAX_CREDITS} credits")]
    CostTooLarge {
        operation: OperationName,
        quantity: i64,
    },
    #[error("a debit needs an operation or an explicit cost")]
    NothingToPrice,
}

/// How many of a plan's operations a refusal names.
pub const KNOWN_LISTED: usize = 20;

fn priced_list(known: &[OperationName]) -> String {
    if known.is_empty() {
        return "it prices no operation (debit with an explicit cost)".to_owned();
    }
    let names: Vec<&str> = known.iter().map(|o| o.as_str()).collect();
    let more = if known.len() == KNOWN_LISTED {
        ", …"
    } else {
        ""
    };
    format!("it prices {}{more}", names.join(", "))
}

/// cost = price(operation) × quantity, or the explicit cost (rule 1).
pub fn price(plan: &Plan, spec: &DebitSpec) -> Result<Charge, PriceError> {
    if let Some(cost) = spec.cost {
        let pool = spec.pool.clone().unwrap_or_else(PoolName::default_pool);
        if !plan.pools.contains_key(&pool) {
            return Err(PriceError::UnknownPool(pool));
        }
        return Ok(Charge { pool, cost });
    }
    let operation = spec.operation.as_ref().ok_or(PriceError::NothingToPrice)?;
    let unit = plan
        .operations
        .get(operation)
        .ok_or_else(|| PriceError::UnknownOperation {
            operation: operation.clone(),
            known: plan.operations.keys().take(KNOWN_LISTED).cloned().collect(),
        })?;
    if let Some(requested) = &spec.pool {
        if *requested != unit.pool {
            return Err(PriceError::PoolMismatch {
                operation: operation.clone(),
                priced: unit.pool.clone(),
                requested: requested.clone(),
            });
        }
    }
    let cost = unit
        .cost
        .checked_mul(spec.quantity)
        .filter(|cost| *cost <= MAX_CREDITS)
        .ok_or_else(|| PriceError::CostTooLarge {
            operation: operation.clone(),
            quantity: spec.quantity,
        })?;
    Ok(Charge {
        pool: unit.pool.clone(),
        cost,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ledger::plan::{PoolSpec, UnitPrice};
    use std::collections::BTreeMap;

    fn plan() -> Plan {
        let credits = PoolName::default_pool();
        let tokens = PoolName::parse("pool", "ai-tokens").unwrap();
        let mut pools = BTreeMap::new();
        pools.insert(credits.clone(), PoolSpec::limited(1000));
        pools.insert(tokens.clone(), PoolSpec::limited(50));
        let mut operations = BTreeMap::new();
        operations.insert(
            OperationName::parse("operation", "image.generate").unwrap(),
            UnitPrice {
                pool: credits,
                cost: 10,
            },
        );
        operations.insert(
            OperationName::parse("operation", "chat").unwrap(),
            UnitPrice {
                pool: tokens,
                cost: 3,
            },
        );
        Plan::for_tests(pools, operations)
    }

    fn op(name: &str) -> Option<OperationName> {
        Some(OperationName::parse("operation", name).unwrap())
    }

    #[test]
    fn price_is_unit_cost_times_quantity_in_the_operations_pool() {
        let charge = price(
            &plan(),
            &DebitSpec {
                operation: op("image.generate"),
                quantity: 3,
                cost: None,
                pool: None,
            },
        )
        .unwrap();
        assert_eq!(charge.cost, 30);
        assert_eq!(charge.pool.as_str(), "credits");
        let charge = price(
            &plan(),
            &DebitSpec {
                operation: op("chat"),
                quantity: 2,
                cost: None,
                pool: None,
            },
        )
        .unwrap();
        assert_eq!((charge.pool.as_str(), charge.cost), ("ai-tokens", 6));
    }

    #[test]
    fn explicit_cost_wins_and_the_operation_is_only_recorded() {
        let charge = price(
            &plan(),
            &DebitSpec {
                operation: op("not-in-plan"),
                quantity: 1,
                cost: Some(25),
                pool: None,
            },
        )
        .unwrap();
        assert_eq!((charge.pool.as_str(), charge.cost), ("credits", 25));
    }

    #[test]
    fn pricing_refuses_unknown_operations_pools_and_overflow() {
        let p = plan();
        let unknown = price(
            &p,
            &DebitSpec {
                operation: op("nope"),
                quantity: 1,
                cost: None,
                pool: None,
            },
        );
        assert!(matches!(unknown, Err(PriceError::UnknownOperation { .. })));
        let pool = price(
            &p,
            &DebitSpec {
                operation: None,
                quantity: 1,
                cost: Some(5),
                pool: Some(PoolName::parse("pool", "exports").unwrap()),
            },
        );
        assert!(matches!(pool, Err(PriceError::UnknownPool(_))));
        let mismatch = price(
            &p,
            &DebitSpec {
                operation: op("chat"),
                quantity: 1,
                cost: None,
                pool: Some(PoolName::default_pool()),
            },
        );
        assert!(matches!(mismatch, Err(PriceError::PoolMismatch { .. })));
        let overflow = price(
            &p,
            &DebitSpec {
                operation: op("image.generate"),
                quantity: i64::MAX,
                cost: None,
                pool: None,
            },
        );
        assert!(matches!(overflow, Err(PriceError::CostTooLarge { .. })));
        let too_large = price(
            &p,
            &DebitSpec {
                operation: op("image.generate"),
                quantity: MAX_CREDITS / 10 + 1,
                cost: None,
                pool: None,
            },
        );
        assert!(matches!(too_large, Err(PriceError::CostTooLarge { .. })));
    }
}
