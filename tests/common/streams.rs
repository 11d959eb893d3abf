//! Stream set-up and delivery checks shared by the stream tests: a Kinesis stream or a DynamoDB
//! table with a stream, each under a unique name; the check that every record written was
//! delivered, each once; and a kill -9 mid-stream followed by a restart.

use super::sink::Sink;
use super::sluice::Sluice;
use super::{create_stream, create_table, kinesis, seq_key, unique, wait_for, TestBed, Written};
use aws_sdk_dynamodb::types::{AttributeValue, StreamViewType};
use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

/// A Kinesis stream, ACTIVE, and a client to it.
pub struct Stream {
    pub kinesis: aws_sdk_kinesis::Client,
    pub name: String,
    pub arn: String,
}

impl Stream {
    /// Creates a stream of `shards` shards named `<prefix>-<unique>` and waits until it is ACTIVE.
    pub async fn create(tb: &TestBed, prefix: &str, shards: i32) -> Stream {
        let kinesis = kinesis(tb).await;
        let name = unique(prefix);
        let arn = create_stream(&kinesis, &name, shards).await;
        Stream { kinesis, name, arn }
    }
}

/// A DynamoDB table keyed on `Id` (a number) with a stream, and a client to it.
pub struct Table {
    pub ddb: aws_sdk_dynamodb::Client,
    pub name: String,
    pub stream_arn: String,
}

impl Table {
    /// Creates a table named `<prefix>-<unique>` whose stream shows `view`.
    pub async fn create(tb: &TestBed, prefix: &str, view: StreamViewType) -> Table {
        let ddb = super::dynamodb(tb);
        let name = unique(prefix);
        let stream_arn = create_table(&ddb, &name, view).await;
        Table {
            ddb,
            name,
            stream_arn,
        }
    }

    /// Puts the item `{Id: id, <attribute>: value}`, both numbers.
    pub async fn put_numbers(&self, id: u64, attribute: &str, value: u64) {
        self.ddb
            .put_item()
            .table_name(&self.name)
            .item("Id", AttributeValue::N(id.to_string()))
            .item(attribute, AttributeValue::N(value.to_string()))
            .send()
            .await
            .expect("PutItem");
    }
}

/// Each record's shard and sequence number: what "every record" compares.
pub fn as_set(v: &[Written]) -> BTreeSet<(String, String)> {
    v.iter().map(|w| (w.shard.clone(), w.seq.clone())).collect()
}

/// The highest sequence number of `written`, which must not be empty.
pub fn last_seq(written: &[Written]) -> String {
    written
        .iter()
        .map(|w| w.seq.clone())
        .max_by(|a, b| seq_key(a).cmp(&seq_key(b)))
        .expect("records written")
}

/// Waits (naming `what`, up to `timeout`) until `delivered()` holds as many records as were
/// `written`, then asserts it holds no more (`no_duplicates` says why none are expected) and that
/// they are the written ones; returns them, in delivery order.
pub async fn wait_delivered_once(
    what: &str,
    timeout: Duration,
    delivered: impl Fn() -> Vec<Written>,
    written: &[Written],
    no_duplicates: &str,
) -> Vec<Written> {
    wait_for(what, timeout, || async {
        (delivered().len() >= written.len()).then_some(())
    })
    .await;
    let got = delivered();
    assert_eq!(got.len(), written.len(), "{no_duplicates}");
    assert_eq!(as_set(&got), as_set(written), "every record delivered");
    got
}

/// Kills sluice (-9) mid-stream and starts it again on the same checkpoints: run "1" (on
/// `config("1")`, written to `dir`) is killed once 1,000 records reached `sink`; run "2" (on
/// `config("2")`) goes on until every record `written` was delivered, waiting up to `timeout`.
/// Asserts the kill came before the end and that nothing was lost; returns run 2, still running.
pub async fn kill_9_and_restart(
    dir: &Path,
    config: impl Fn(&str) -> String,
    sink: &Sink,
    written: &[Written],
    timeout: Duration,
) -> Sluice {
    let mut first = Sluice::start(dir, "run1", &config("1")).await;
    wait_for("a quarter delivered", Duration::from_secs(120), || async {
        (sink.delivered().len() >= 1_000).then_some(())
    })
    .await;
    first.kill9().await;
    assert!(
        sink.delivered_in_run("1").len() < written.len(),
        "the kill came too late to test anything"
    );
    let second = Sluice::start(dir, "run2", &config("2")).await;
    wait_for(
        "every record delivered after the restart",
        timeout,
        || async { (as_set(&sink.delivered()).len() >= written.len()).then_some(()) },
    )
    .await;
    assert_eq!(as_set(&sink.delivered()), as_set(written), "nothing lost");
    second
}
