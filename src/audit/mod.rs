//! The audit log: a record of every resource created through specgate, on disk before the
//! client hears of the create.

mod record;
mod writer;

pub use record::{Entry, Outcome, ResourceFields, encode, resource_id, rfc3339};
pub use writer::{AuditError, Auditor, Health};
