//! Kafka (self-managed and Amazon MSK) as a source: one topic's partitions, each read in order and
//! encoded as AWS's Kafka event (see [`event`]).

pub mod event;
