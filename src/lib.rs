//! credit-ledger: a credit ledger for API companies, beside Unkey, on PostgreSQL.
//!
//! `ledger` holds the domain (pure rules and one-transaction operations), `db` the SQL, `api`
//! the HTTP routes; `app` wires them into a server.

pub mod api;
pub mod app;
pub mod config;
pub mod db;
pub mod error;
pub mod ledger;

/// The OpenAPI description of the HTTP API, as committed at the repository root.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");
