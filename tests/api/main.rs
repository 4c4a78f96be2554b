//! The integration tests: one binary, the real service, a real PostgreSQL database per test.

mod helpers;

mod accounts;
mod cli;
mod concurrency;
mod debits;
mod health;
mod idempotency;
mod openapi;
mod plans;
mod validation;
