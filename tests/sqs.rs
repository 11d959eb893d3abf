//! SQS against moto: 10,000 standard messages delivered and deleted; FIFO order per group with a
//! failing group that does not stop the others; partial batch responses; redrive to a DLQ; a
//! function slower than the visibility timeout; a missing queue. moto's SQS slows down as a queue
//! fills, so producers feed as the consumer goes. In-flight handling: tests/sqs_in_flight.rs.
//! The tests are in the submodules under tests/sqs/ (standard delivery, FIFO, failures); the
//! helpers they share are in tests/sqs_support/.

mod common;
mod sqs_support;

#[path = "sqs/failures.rs"]
mod failures;
#[path = "sqs/fifo.rs"]
mod fifo;
#[path = "sqs/standard.rs"]
mod standard;
