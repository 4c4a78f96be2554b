//! Plans: a head row per plan id (the lock and the latest version) and immutable versions.

use chrono::{DateTime, Utc};
use sqlx::types::Json;
use sqlx::PgConnection;

use crate::ledger::plan::{Plan, PlanDefinition};
use crate::ledger::types::{Interval, PlanId};

#[derive(Debug, sqlx::FromRow)]
pub struct PlanRow {
    id: String,
    version: i32,
    name: String,
    interval: String,
    pools: Json<serde_json::Value>,
    operations: Json<serde_json::Value>,
    ratelimits: Json<serde_json::Value>,
    thresholds: Json<serde_json::Value>,
    packs: Json<serde_json::Value>,
    expiry_warning_days: i32,
    created_at: DateTime<Utc>,
}

impl PlanRow {
    pub fn into_plan(self) -> Result<Plan, sqlx::Error> {
        let decode = |e: Box<dyn std::error::Error + Send + Sync>| sqlx::Error::Decode(e);
        Ok(Plan {
            id: PlanId::try_from(self.id).map_err(|e| decode(Box::new(e)))?,
            version: self.version,
            definition: PlanDefinition {
                name: self.name,
                interval: Interval::parse(&self.interval)
                    .ok_or_else(|| decode(format!("bad interval {}", self.interval).into()))?,
                pools: serde_json::from_value(self.pools.0).map_err(|e| decode(Box::new(e)))?,
                operations: serde_json::from_value(self.operations.0)
                    .map_err(|e| decode(Box::new(e)))?,
                ratelimits: serde_json::from_value(self.ratelimits.0)
                    .map_err(|e| decode(Box::new(e)))?,
                thresholds: serde_json::from_value(self.thresholds.0)
                    .map_err(|e| decode(Box::new(e)))?,
                packs: serde_json::from_value(self.packs.0).map_err(|e| decode(Box::new(e)))?,
                expiry_warning_days: self.expiry_warning_days,
            },
            created_at: self.created_at,
        })
    }
}

const COLUMNS: &str = "p.id, p.version, p.name, p.interval, p.pools, p.operations, p.ratelimits, \
                       p.thresholds, p.packs, p.expiry_warning_days, p.created_at";

/// The latest version of a plan, or a given one.
pub async fn get(
    conn: &mut PgConnection,
    id: &PlanId,
    version: Option<i32>,
) -> Result<Option<Plan>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM plans p JOIN plan_heads h ON h.id = p.id
          WHERE p.id = $1 AND p.version = coalesce($2, h.latest_version)"
    );
    sqlx::query_as::<_, PlanRow>(&sql)
        .bind(id.as_str())
        .bind(version)
        .fetch_optional(conn)
        .await?
        .map(PlanRow::into_plan)
        .transpose()
}

/// The latest version of the plan an account is on; `None` if there is no such account.
pub async fn of_account(
    conn: &mut PgConnection,
    key_id: &str,
) -> Result<Option<Plan>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM accounts a JOIN plan_heads h ON h.id = a.plan_id
           JOIN plans p ON p.id = h.id AND p.version = h.latest_version
          WHERE a.key_id = $1"
    );
    sqlx::query_as::<_, PlanRow>(&sql)
        .bind(key_id)
        .fetch_optional(conn)
        .await?
        .map(PlanRow::into_plan)
        .transpose()
}

/// The latest version of every plan, by id.
pub async fn list(conn: &mut PgConnection) -> Result<Vec<Plan>, sqlx::Error> {
    let sql = format!(
        "SELECT {COLUMNS} FROM plans p JOIN plan_heads h ON h.id = p.id AND p.version = h.latest_version
          ORDER BY p.id"
    );
    sqlx::query_as::<_, PlanRow>(&sql)
        .fetch_all(conn)
        .await?
        .into_iter()
        .map(PlanRow::into_plan)
        .collect()
}

/// Creates the plan's head row if missing and locks it; returns the latest version (0 if none).
pub async fn lock_head(
    conn: &mut PgConnection,
    id: &PlanId,
    now: DateTime<Utc>,
) -> Result<i32, sqlx::Error> {
    sqlx::query(
        "INSERT INTO plan_heads (id, latest_version, created_at, updated_at)
         VALUES ($1, 0, $2, $2) ON CONFLICT (id) DO NOTHING",
    )
    .bind(id.as_str())
    .bind(now)
    .execute(&mut *conn)
    .await?;
    sqlx::query_scalar("SELECT latest_version FROM plan_heads WHERE id = $1 FOR UPDATE")
        .bind(id.as_str())
        .fetch_one(conn)
        .await
}

/// Writes a new version and makes it the latest. The head must be locked by the caller.
pub async fn insert_version(
    conn: &mut PgConnection,
    id: &PlanId,
    version: i32,
    definition: &PlanDefinition,
    now: DateTime<Utc>,
) -> Result<Plan, sqlx::Error> {
    sqlx::query(
        "INSERT INTO plans (id, version, name, interval, pools, operations, ratelimits, created_at,
                            thresholds, packs, expiry_warning_days)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
    )
    .bind(id.as_str())
    .bind(version)
    .bind(&definition.name)
    .bind(definition.interval.as_str())
    .bind(Json(&definition.pools))
    .bind(Json(&definition.operations))
    .bind(Json(&definition.ratelimits))
    .bind(now)
    .bind(Json(&definition.thresholds))
    .bind(Json(&definition.packs))
    .bind(definition.expiry_warning_days)
    .execute(&mut *conn)
    .await?;
    sqlx::query("UPDATE plan_heads SET latest_version = $2, updated_at = $3 WHERE id = $1")
        .bind(id.as_str())
        .bind(version)
        .bind(now)
        .execute(conn)
        .await?;
    Ok(Plan {
        id: id.clone(),
        version,
        definition: definition.clone(),
        created_at: now,
    })
}
