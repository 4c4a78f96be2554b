//! The integration tests: one binary, the real service, a real PostgreSQL database per test.

mod helpers;

mod accounts;
mod audit;
mod cli;
mod concurrency;
mod debits;
mod grants;
mod health;
mod idempotency;
mod openapi;
mod periods;
mod plans;
mod reservations;
mod validation;
