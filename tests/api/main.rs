//! The integration tests: one binary, the real service, a real PostgreSQL database per test.

mod helpers;

mod accounts;
mod audit;
mod batches;
mod billing;
mod browser;
mod cli;
mod concurrency;
mod debits;
mod edges;
mod faults;
mod fuzz;
mod grants;
mod health;
mod history;
mod idempotency;
mod members;
mod openapi;
mod overrides;
mod periods;
mod plans;
mod portal;
mod reservations;
mod schema;
mod shutdown;
mod stripe_double;
mod top_up;
mod unkey_double;
mod validation;
mod verify;
mod webhooks;
