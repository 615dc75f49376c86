//! The audit log: a hash-chained record of every create through specgate, on disk before the
//! client hears of it, and the tools to read and verify it.

pub mod cli;
pub mod files;
pub mod query;
mod record;
pub mod ship;
pub mod verify;
mod writer;

pub use files::{Head, LogFile, LogFiles, read_head};
pub(crate) use record::sha256;
pub use record::{
    Entry, GENESIS, Hash, LineError, MacKey, Opened, Outcome, Record, ResourceFields, decode_hash,
    open, resource_id, rfc3339, seal,
};
pub use writer::{
    AuditError, AuditOptions, Auditor, Health, Observer, OnError, OpenError, SyncMode,
};

#[cfg(test)]
mod tests;
