//! sluice: AWS Lambda event source mappings, self-hosted.
//!
//! ```text
//!  config (typed per source) ──► app: one builder per source kind
//!   stream mapping ──► supervisor: listed ∩ leased ∩ lineage-ready partitions
//!                        └─► one shard worker per partition:
//!                            read ─► batch ─► pieces (pure retry rules) ─► dispatch ─► commit
//!                                                  │ given up on
//!                                                  └─► on-failure destination
//!   queue mapping  ──► pollers: receive ─► batch ─► dispatch per group ─► delete / return
//!   every event    ──► one telemetry call: log line + metric + /status row
//! ```
//! Everything downstream of a reader speaks the neutral [`model`]. Seams are traits:
//! [`source::Source`] / [`source::PartitionReader`], [`source::sqs::Queue`],
//! [`dispatch::Dispatcher`], [`checkpoint::CheckpointStore`] (chained, fenced commits),
//! [`lease::Leases`], [`destination::Destination`]. See docs/architecture.md.
#![forbid(unsafe_code)]

pub mod app;
pub mod aws;
pub mod batch;
pub mod budget;
pub mod checkpoint;
pub mod cli;
pub mod config;
pub mod credentials;
pub mod destination;
pub mod dispatch;
pub mod filter;
pub mod lease;
pub mod model;
pub mod retry;
pub mod server;
pub mod source;
pub mod telemetry;
pub mod worker;
