//! Record age (MaximumRecordAgeInSeconds): records already too old when read go to the
//! on-failure destination without an invoke, and records that expire while being retried go there
//! after their attempts.

use super::{check_failure_record, destination, http_mapping, Dest};
use crate::common::sink::Sink;
use crate::common::sluice::Sluice;
use crate::common::*;
use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_too_old_at_read_time_go_to_the_destination_uninvoked() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("old");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let written = put_records(&kinesis, &stream, records("o", 5, 1)).await;
    // The records must be older than the smallest allowed MaximumRecordAgeInSeconds (60 s).
    tokio::time::sleep(Duration::from_secs(62)).await;
    let fresh = put_records(&kinesis, &stream, records("n", 3, 1)).await;
    let dest = destination(&tb, Dest::Sqs).await;
    let sink = Sink::ok().await;
    let extra = format!("    MaximumRecordAgeInSeconds: 60\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n", dest.arn);
    let (_sluice, _dir) = Sluice::run(&tb, &http_mapping("old", &arn, &sink.url, &extra)).await;
    wait_for(
        "the fresh records delivered",
        Duration::from_secs(60),
        || async { (sink.delivered().len() >= fresh.len()).then_some(()) },
    )
    .await;
    let found = dest.records(&tb, 1, Duration::from_secs(30)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    check_failure_record(
        &found[0].0,
        "RecordAgeExceeded",
        &sink.url,
        &arn,
        &written[0].shard,
        &written,
    );
    assert_eq!(found[0].0["requestContext"]["approximateInvokeCount"], 0);
    assert!(found[0].0["responseContext"].is_null());
    // The function saw only the fresh records.
    let seen: Vec<String> = sink
        .all
        .lock()
        .unwrap()
        .iter()
        .flat_map(|r| r.records.iter().map(|w| w.data.clone()))
        .collect();
    assert_eq!(seen, vec!["n-0", "n-1", "n-2"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn records_that_expire_while_retrying_go_to_the_destination() {
    let tb = testbed();
    let kinesis = kinesis(&tb).await;
    let stream = unique("expire");
    let arn = create_stream(&kinesis, &stream, 1).await;
    let dest = destination(&tb, Dest::Sqs).await;
    let sink = Sink::start(|_, _| (500, vec![], "{\"errorMessage\":\"always\"}".into())).await;
    let extra = format!("    MaximumRecordAgeInSeconds: 60\n    DestinationConfig: {{ OnFailure: {{ Destination: '{}' }} }}\n", dest.arn);
    let (sluice, _dir) = Sluice::run(&tb, &http_mapping("expire", &arn, &sink.url, &extra)).await;
    sluice.wait_ready().await;
    let written = put_records(&kinesis, &stream, records("e", 4, 1)).await;
    let found = dest.records(&tb, 1, Duration::from_secs(120)).await;
    assert_eq!(found.len(), 1, "{found:?}");
    let r = &found[0].0;
    check_failure_record(
        r,
        "RecordAgeExceeded",
        &sink.url,
        &arn,
        &written[0].shard,
        &written,
    );
    assert!(
        r["requestContext"]["approximateInvokeCount"]
            .as_u64()
            .unwrap()
            >= 2,
        "retried before expiring: {r}"
    );
    assert_eq!(r["responseContext"]["statusCode"], 500);
    assert_eq!(r["responseContext"]["functionError"], "Unhandled");
    assert!(sink
        .all
        .lock()
        .unwrap()
        .iter()
        .all(|req| req.records.len() == 4));
}
