//! The schema keeps the promise of distribution (DESIGN.md, "Scale"): every per-account table
//! carries the account key, and every primary key and unique constraint of such a table includes
//! it, so the schema can be distributed by that key on Citus. Reference tables are listed by name,
//! so a new table has to be classified before this test passes.

use std::collections::BTreeMap;

use crate::helpers::spawn_app;

/// Tables replicated whole rather than distributed: configuration shared by every account.
const REFERENCE_TABLES: [&str; 4] = [
    "_sqlx_migrations",
    "plan_heads",
    "plans",
    "webhook_endpoints",
];

/// The column each per-account table is distributed by, where it is not `key_id`: an idempotency
/// record is scoped to its account (or, for account-less routes, to the route).
/// The directory of member keys is distributed by the member key, which routes a request
/// addressed to it to its shared account.
const DISTRIBUTED_BY: [(&str, &str); 2] = [
    ("idempotency_keys", "scope"),
    ("member_keys", "member_key_id"),
];

#[tokio::test]
async fn every_unique_constraint_of_a_per_account_table_includes_its_account_key() {
    let app = spawn_app().await;
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT c.relname::text FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
          WHERE n.nspname = 'public' AND c.relkind = 'r' ORDER BY 1",
    )
    .fetch_all(&app.db.pool)
    .await
    .unwrap();
    let by: BTreeMap<&str, &str> = DISTRIBUTED_BY.into_iter().collect();
    let mut checked = 0;
    for table in &tables {
        if REFERENCE_TABLES.contains(&table.as_str()) {
            continue;
        }
        let column = by.get(table.as_str()).copied().unwrap_or("key_id");
        let has_column: bool = sqlx::query_scalar(
            "SELECT EXISTS (SELECT 1 FROM information_schema.columns
                             WHERE table_schema = 'public' AND table_name = $1
                               AND column_name = $2)",
        )
        .bind(table)
        .bind(column)
        .fetch_one(&app.db.pool)
        .await
        .unwrap();
        assert!(
            has_column,
            "table {table} is neither a reference table nor carries the account key {column}"
        );
        // Every unique index (primary keys and unique constraints are backed by one).
        let uniques: Vec<(String, Vec<String>)> = sqlx::query_as(
            "SELECT i.relname::text,
                    array(SELECT a.attname::text FROM unnest(x.indkey) k
                            JOIN pg_attribute a ON a.attrelid = x.indrelid AND a.attnum = k)
               FROM pg_index x
               JOIN pg_class i ON i.oid = x.indexrelid
               JOIN pg_class t ON t.oid = x.indrelid
              WHERE t.relname = $1 AND x.indisunique",
        )
        .bind(table)
        .fetch_all(&app.db.pool)
        .await
        .unwrap();
        assert!(!uniques.is_empty(), "table {table} has no primary key");
        for (index, columns) in uniques {
            assert!(
                columns.iter().any(|c| c == column),
                "unique index {index} of {table} is on ({}) without the account key {column}",
                columns.join(", ")
            );
        }
        checked += 1;
    }
    assert!(
        checked >= 13,
        "only {checked} per-account tables were found"
    );
}
