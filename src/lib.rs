//! specgate: a sidecar gateway that validates requests against the API's OpenAPI spec, injects
//! the API token the app never holds, forwards over TLS, and audits every create.
//!
//! The request path is built in [`stack`], one layer per concern, each in [`layer`]. Decisions
//! (routing, validation, error rendering, audit encoding) are plain functions in [`route`],
//! [`spec`], [`error`] and [`audit`]; I/O lives at the edges ([`server`], [`upstream`], the
//! audit writer).

#![forbid(unsafe_code)]
#![deny(missing_docs, unreachable_pub)]

pub mod admin;
pub mod app;
pub mod audit;
pub mod body;
pub mod cli;
pub mod client;
pub mod config;
pub mod conn;
pub mod drift;
pub mod encoding;
pub mod error;
pub mod form;
pub mod json;
pub mod layer;
pub mod metrics;
pub mod mock;
pub mod multipart;
pub mod oauth2;
pub mod params;
pub mod reload;
pub mod route;
pub mod router;
pub mod scheme;
pub mod server;
pub mod shard;
pub mod spec;
pub mod stack;
pub mod startup;
pub mod telemetry;
pub mod tls;
pub mod token;
pub mod upstream;
