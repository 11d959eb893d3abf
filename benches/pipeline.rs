//! The per-record hot path, measured: encoding Kinesis event entries, batching them and assembling
//! the event payload, reading a `batchItemFailures` response, and one HTTP invocation of a
//! 100-record payload against a minimal local server that answers `{}` (client and server on one
//! thread, so the figure is their CPU per invocation). Prints one line per figure.
//! Run: `cargo bench --bench pipeline`.

use std::hint::black_box;
use std::time::{Duration, Instant};

use sluice::batch::{self, Batcher, MAX_PAYLOAD_BYTES};
use sluice::config::HttpTarget;
use sluice::dispatch::{response, Dispatcher, HttpDispatcher};
use sluice::source::kinesis::event::{encode, Data, EventContext};
use sluice::source::{Record, SequenceNumber};

/// Runs `f` repeatedly for about `budget` and returns the mean time per call.
fn time(budget: Duration, mut f: impl FnMut()) -> Duration {
    f();
    let start = Instant::now();
    let mut n = 0u32;
    while start.elapsed() < budget {
        f();
        n += 1;
    }
    start.elapsed() / n
}

fn main() {
    let ctx = EventContext::new(
        "arn:aws:kinesis:us-east-1:123456789012:stream/bench",
        "us-east-1",
        "arn:aws:iam::123456789012:role/sluice",
    );
    // `cargo bench` passes --bench; under `cargo test --all-targets` this is a quick smoke run.
    let budget = if std::env::args().any(|a| a == "--bench") {
        Duration::from_secs(2)
    } else {
        println!("(smoke run: figures from a debug build mean nothing; use cargo bench)");
        Duration::from_millis(10)
    };
    for size in [100usize, 1024, 10 * 1024] {
        let data = vec![b'x'; size];
        const N: usize = 1000;
        let seqs: Vec<String> = (0..N)
            .map(|i| format!("49590338271490256608559692538361571095921575989136{i:06}"))
            .collect();
        let per_batch = time(budget, || {
            for s in &seqs {
                black_box(encode(
                    &ctx,
                    "shardId-000000000000",
                    s,
                    "key",
                    Data::Bytes(&data),
                    1_700_000_000_123,
                    None,
                ));
            }
        });
        let per_record = per_batch / N as u32;
        println!(
            "encode kinesis entry, {size:>5} B data: {:>8.0} ns/record  {:>10.0} records/s  {:>7.1} MB/s of data",
            per_record.as_nanos() as f64,
            1e9 / per_record.as_nanos() as f64,
            size as f64 * 1e3 / per_record.as_nanos() as f64
        );
    }

    // Batching 10,000 encoded 1 KiB records into BatchSize 500 and assembling each payload.
    let data = vec![b'x'; 1024];
    let records: Vec<Record> = (0..10_000)
        .map(|i| {
            let seq = format!("49590338271490256608559692538361571095921575989136{i:06}");
            Record {
                event: encode(
                    &ctx,
                    "shardId-000000000000",
                    &seq,
                    "key",
                    Data::Bytes(&data),
                    1_700_000_000_123,
                    None,
                ),
                sequence: SequenceNumber(seq),
                arrival_ms: 0,
                lane_key: 0,
            }
        })
        .collect();
    let bytes: usize = records.iter().map(|r| r.event.len()).sum();
    let per_run = time(budget, || {
        let mut b = Batcher::new(500, MAX_PAYLOAD_BYTES);
        b.push(records.clone());
        while !b.is_empty() {
            black_box(batch::encode(&b.take()));
        }
    });
    println!(
        "batch + assemble payloads, 10,000 x 1 KiB records (BatchSize 500): {:>7.2} ms/run  {:>10.0} records/s  {:>7.0} MB/s (includes cloning the input)",
        per_run.as_secs_f64() * 1e3,
        10_000.0 / per_run.as_secs_f64(),
        bytes as f64 / per_run.as_secs_f64() / 1e6
    );

    // A partial batch response naming 100 of 500 records.
    let ids: Vec<String> = records[..500]
        .iter()
        .map(|r| r.sequence.0.clone())
        .collect();
    let body = format!(
        "{{\"batchItemFailures\":[{}]}}",
        ids.iter()
            .step_by(5)
            .map(|s| format!("{{\"itemIdentifier\":\"{s}\"}}"))
            .collect::<Vec<_>>()
            .join(",")
    );
    // The batch's identifiers are indexed inside parse, so this includes building the index.
    let per_parse = time(budget, || {
        black_box(response::parse(
            body.as_bytes(),
            ids.iter().map(String::as_str),
        ));
    });
    println!(
        "parse batchItemFailures, 100 of 500 identifiers: {:>8.1} µs/response",
        per_parse.as_secs_f64() * 1e6
    );

    // Assembling one BatchSize-100 payload of 1 KiB entries (the copy into the request body).
    let per_payload = time(budget, || {
        black_box(batch::encode(black_box(&records[..100])));
    });
    println!(
        "assemble one payload, 100 x 1 KiB entries: {:>8.1} µs/payload  {:>6.0} ns/record",
        per_payload.as_secs_f64() * 1e6,
        per_payload.as_nanos() as f64 / 100.0
    );

    // One HTTP invocation of a BatchSize-100 payload of 1 KiB records, as the drain sends them.
    let payload = batch::encode(&records[..100]);
    let per_invoke = invoke_time(budget, payload.clone());
    println!(
        "HTTP invoke, {} B payload, answer {{}}: {:>8.1} µs/invoke (client and server, one thread)",
        payload.len(),
        per_invoke.as_secs_f64() * 1e6
    );
}

/// The mean time of one [`HttpDispatcher`] invocation of `payload` against a local keep-alive
/// server that reads each request and answers `200 {}`; all of it on one thread.
fn invoke_time(budget: Duration, payload: bytes::Bytes) -> Duration {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    rt.block_on(async move {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((mut conn, _)) = listener.accept().await {
                tokio::spawn(async move {
                    let mut buf = Vec::with_capacity(256 * 1024);
                    loop {
                        // Headers, then Content-Length bytes of body.
                        let (head, len) = loop {
                            if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                                let head = String::from_utf8_lossy(&buf[..end]).to_ascii_lowercase();
                                let len = head
                                    .lines()
                                    .find_map(|l| l.strip_prefix("content-length:"))
                                    .and_then(|v| v.trim().parse::<usize>().ok())
                                    .unwrap_or(0);
                                break (end + 4, len);
                            }
                            let mut chunk = [0u8; 65536];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        };
                        while buf.len() < head + len {
                            let mut chunk = [0u8; 65536];
                            match conn.read(&mut chunk).await {
                                Ok(0) | Err(_) => return,
                                Ok(n) => buf.extend_from_slice(&chunk[..n]),
                            }
                        }
                        buf.drain(..head + len);
                        let answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 2\r\n\r\n{}";
                        if conn.write_all(answer).await.is_err() {
                            return;
                        }
                    }
                });
            }
        });
        let dispatcher = HttpDispatcher::new(&HttpTarget {
            url: format!("http://{addr}/fn"),
            headers: Default::default(),
            timeout: Duration::from_secs(30),
        })
        .expect("a client");
        let once = || async {
            let invoked = dispatcher.invoke(payload.clone()).await.expect("invoked");
            assert_eq!(&invoked.body[..], b"{}");
        };
        once().await;
        let start = Instant::now();
        let mut n = 0u32;
        while start.elapsed() < budget {
            once().await;
            n += 1;
        }
        start.elapsed() / n
    })
}
