//! credit-ledger: a credit ledger for API companies, beside Unkey, on PostgreSQL.
//!
//! `ledger` holds the domain (the account state machine: pure, no storage, no HTTP), `db` the
//! SQL (account states loaded and written in sets), `service` the write path and the reads that
//! join the two, `api` the HTTP routes; `app` wires them into a server; `audit` checks every
//! invariant of a live database.

pub mod api;
pub mod app;
pub mod audit;
pub mod config;
pub mod db;
pub mod error;
pub mod gate;
pub mod ledger;
pub mod scheduler;
pub mod service;
pub mod stripe;
pub mod telemetry;
pub mod unkey;
pub mod webhooks;

/// The OpenAPI description of the HTTP API, as committed at the repository root.
pub const OPENAPI_YAML: &str = include_str!("../openapi.yaml");
