//! sluice: AWS Lambda event source mappings, self-hosted.
//!
//! ```text
//!  config ──► app ──► supervisor (per mapping) ──► one worker per shard
//!                                                   read ─► batch ─► dispatch (retry policy) ─► checkpoint
//!                                                                       │ given up on
//!                                                                       └─► on-failure destination
//! ```
//! Seams are traits: [`source::Source`] / [`source::PartitionReader`], [`dispatch::Dispatcher`],
//! [`checkpoint::CheckpointStore`], [`lease::Leases`], [`destination::Destination`]. See
//! docs/architecture.md.
#![forbid(unsafe_code)]

pub mod app;
pub mod aws;
pub mod batch;
pub mod budget;
pub mod checkpoint;
pub mod config;
pub mod destination;
pub mod dispatch;
pub mod lease;
pub mod model;
pub mod retry;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod worker;
