//! The end-to-end tests, one module per concern, in one binary: the real specgate binary, real
//! TLS, real clients and a real PostgreSQL (see `support`).
//!
//! `cargo test --test integration ops::` runs one module's tests. A new file under tests/ must be
//! declared here (Cargo.toml turns off autotests); `release::every_test_file_is_compiled` fails
//! when one is not.

mod support;

mod audit;
mod cli;
mod credentials;
mod deploy;
mod fleet;
mod gateway;
mod hardening;
mod ops;
mod properties;
mod release;
