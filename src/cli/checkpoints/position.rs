//! Where `sluice checkpoints set --timestamp` and `reset --to latest` put a shard: the last record
//! that arrived before an instant, found through the stream's own calls ([`ShardApi`]). A
//! checkpoint means "everything up to and including this record is done", so checkpointing the
//! last record before T makes the worker resume at the first record at or after T — exactly
//! replaying from T, with nothing new to teach the worker.
//!
//! Kinesis: probes `GetShardIterator AT_TIMESTAMP (T − δ)` for δ = 1 s, 2 s, 4 s, … and reads
//! forward to the first record at or after T; the first probe that meets a record before T has
//! found it, so only the records of the last δ before T are read (δ doubles up to the oldest
//! record; a final read from `TRIM_HORIZON` settles a shard with nothing before T). DynamoDB
//! Streams has no AT_TIMESTAMP: the shard is read from `TRIM_HORIZON` (its shards hold at most a
//! few hours of records, 24 hours retained). Arrival times are the stream's
//! (`ApproximateArrivalTimestamp`, DynamoDB's `ApproximateCreationDateTime`, whole seconds).

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::config::StartingPosition;
use crate::model::SequenceNumber;
use crate::source::shards::{IteratorStart, ShardApi};
use crate::source::SourceError;

/// The most GetRecords calls one search makes before giving up (a shard that never catches up).
pub const MAX_CALLS: usize = 20_000;
/// Empty pages in a row that end a read of a DynamoDB shard (it has no `MillisBehindLatest`).
const EMPTY_PAGES_AT_TIP: usize = 3;
/// The largest probe step: beyond a year, the read starts at `TRIM_HORIZON` (Kinesis keeps at
/// most 365 days).
const MAX_STEP: Duration = Duration::from_secs(366 * 24 * 3600);

/// A record found: its sequence number and arrival (epoch milliseconds).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Found {
    pub sequence: SequenceNumber,
    pub arrival_ms: i64,
}

/// Parses `--timestamp`: RFC 3339 (`2026-11-27T10:00:00Z`), or epoch seconds (a number up to 11
/// digits, fractions allowed) or epoch milliseconds (12 digits or more). Epoch milliseconds out.
pub fn parse_timestamp(text: &str) -> Result<i64, String> {
    let t = text.trim();
    if let Ok(dt) = time::OffsetDateTime::parse(t, &time::format_description::well_known::Rfc3339) {
        return i64::try_from(dt.unix_timestamp_nanos() / 1_000_000)
            .map_err(|_| format!("--timestamp {text:?} is out of range"));
    }
    let digits = t.split('.').next().unwrap_or_default();
    if !t.is_empty() && !digits.is_empty() && digits.bytes().all(|b| b.is_ascii_digit()) {
        if digits.len() >= 12 && !t.contains('.') {
            return t
                .parse::<i64>()
                .map_err(|_| format!("--timestamp {text:?} is out of range"));
        }
        if let Ok(secs) = t.parse::<f64>() {
            if secs.is_finite() && secs < 1e11 {
                return Ok((secs * 1000.0).round() as i64);
            }
        }
    }
    Err(format!(
        "--timestamp {text:?} is neither an RFC 3339 time (2026-11-27T10:00:00Z) nor epoch seconds or milliseconds"
    ))
}

/// `ms` (epoch milliseconds) as RFC 3339, for messages.
pub fn show_ms(ms: i64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000)
        .ok()
        .and_then(|t| {
            t.format(&time::format_description::well_known::Rfc3339)
                .ok()
        })
        .unwrap_or_else(|| format!("{ms} ms"))
}

fn at(ms: i64) -> StartingPosition {
    StartingPosition::AtTimestamp(UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64))
}

/// Reads `shard` from `start` up to the first record at or after `before_ms` (or its tip, or
/// its end): the last record before it, and how many calls that took (added to `calls`).
async fn read_until(
    api: &dyn ShardApi,
    shard: &str,
    start: IteratorStart<'_>,
    before_ms: i64,
    calls: &mut usize,
) -> Result<Option<Found>, SourceError> {
    let Some(mut iterator) = api.get_iterator(shard, start).await? else {
        return Ok(None);
    };
    let mut last = None;
    let mut empty = 0;
    loop {
        *calls += 1;
        if *calls > MAX_CALLS {
            return Err(SourceError::Service(format!(
                "{shard}: no answer after {MAX_CALLS} GetRecords calls; the shard does not catch up"
            )));
        }
        let page = api.get_records(shard, iterator).await?;
        for r in &page.records {
            if r.arrival_ms >= before_ms {
                return Ok(last);
            }
            last = Some(Found {
                sequence: r.sequence.clone(),
                arrival_ms: r.arrival_ms,
            });
        }
        empty = if page.records.is_empty() {
            empty + 1
        } else {
            0
        };
        let at_tip = match page.millis_behind {
            Some(ms) => page.records.is_empty() && ms == 0,
            None => empty >= EMPTY_PAGES_AT_TIP,
        };
        match page.next_iterator {
            Some(next) if !at_tip => iterator = next,
            _ => return Ok(last),
        }
        tokio::time::sleep(api.limits().read_interval).await;
    }
}

/// The last record of `shard` that arrived before `before_ms` (epoch milliseconds); `None` when
/// the shard holds none (its retained records all arrived at or after it, or it is empty).
/// `by_timestamp`: the service takes AT_TIMESTAMP iterators (Kinesis); else the shard is read from
/// TRIM_HORIZON.
pub async fn last_before(
    api: &dyn ShardApi,
    shard: &str,
    before_ms: i64,
    by_timestamp: bool,
) -> Result<Option<Found>, SourceError> {
    let mut calls = 0;
    if by_timestamp {
        let mut step = Duration::from_secs(1);
        while step <= MAX_STEP {
            let from = before_ms - step.as_millis() as i64;
            if from <= 0 {
                break;
            }
            let probe = IteratorStart::At(at(from));
            if let Some(found) = read_until(api, shard, probe, before_ms, &mut calls).await? {
                return Ok(Some(found));
            }
            step *= 2;
        }
    }
    let start = IteratorStart::At(StartingPosition::TrimHorizon);
    read_until(api, shard, start, before_ms, &mut calls).await
}

/// Now, in epoch milliseconds.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{EventFormat, Record};
    use crate::source::shards::{RawPage, ReadLimits, ShardPage};
    use async_trait::async_trait;
    use std::sync::Mutex;

    /// One shard of records (arrival ms); iterators are indexes, pages of `page` records.
    struct FakeShard {
        arrivals: Vec<i64>,
        page: usize,
        closed: bool,
        iterators: Mutex<Vec<String>>,
    }

    impl FakeShard {
        fn new(arrivals: &[i64]) -> Self {
            FakeShard {
                arrivals: arrivals.to_vec(),
                page: 2,
                closed: false,
                iterators: Mutex::new(Vec::new()),
            }
        }
    }

    #[async_trait]
    impl ShardApi for FakeShard {
        fn limits(&self) -> ReadLimits {
            ReadLimits {
                read_interval: Duration::from_millis(1),
                caught_up_interval: Duration::from_millis(1),
                page_limit: self.page,
            }
        }
        fn format(&self) -> EventFormat {
            EventFormat::DYNAMODB
        }
        async fn retention(&self) -> Result<Duration, SourceError> {
            Ok(Duration::from_secs(86400))
        }
        async fn list_page(&self, _: Option<String>) -> Result<ShardPage, SourceError> {
            Ok((Vec::new(), None))
        }
        async fn get_iterator(
            &self,
            _shard: &str,
            from: IteratorStart<'_>,
        ) -> Result<Option<String>, SourceError> {
            let index = match from {
                IteratorStart::At(StartingPosition::TrimHorizon) => 0,
                IteratorStart::At(StartingPosition::AtTimestamp(t)) => {
                    let ms = t.duration_since(UNIX_EPOCH).unwrap().as_millis() as i64;
                    self.arrivals
                        .iter()
                        .position(|a| *a >= ms)
                        .unwrap_or(self.arrivals.len())
                }
                other => panic!("unexpected {other:?}"),
            };
            self.iterators.lock().unwrap().push(format!("{from:?}"));
            Ok(Some(index.to_string()))
        }
        async fn get_records(&self, _: &str, iterator: String) -> Result<RawPage, SourceError> {
            let from: usize = iterator.parse().unwrap();
            let to = (from + self.page).min(self.arrivals.len());
            let records = (from..to)
                .map(|i| Record {
                    sequence: SequenceNumber(format!("{}", 100 + i)),
                    arrival_ms: self.arrivals[i],
                    event: Vec::new(),
                    lane_key: 0,
                })
                .collect();
            let end = to == self.arrivals.len();
            Ok(RawPage {
                records,
                next_iterator: (!(end && self.closed)).then(|| to.to_string()),
                millis_behind: Some(if end { 0 } else { 1000 }),
            })
        }
    }

    fn seq(found: Option<Found>) -> Option<String> {
        found.map(|f| f.sequence.0)
    }

    #[tokio::test(start_paused = true)]
    async fn finds_the_last_record_before_the_instant_by_probing_back_in_time() {
        let base = 1_700_000_000_000;
        let shard = FakeShard::new(&[base, base + 10, base + 5_000, base + 5_000, base + 9_000]);
        // Just before the record at +9000: the +5000 pair's second.
        let found = last_before(&shard, "s", base + 9_000, true).await.unwrap();
        assert_eq!(seq(found), Some("103".into()));
        // 1 s and 2 s back find nothing before +9000; 4 s back does.
        assert_eq!(shard.iterators.lock().unwrap().len(), 3);
        // Between records, at a record, before everything, after everything.
        assert_eq!(
            seq(last_before(&shard, "s", base + 7_000, true).await.unwrap()),
            Some("103".into())
        );
        assert_eq!(
            seq(last_before(&shard, "s", base + 10, true).await.unwrap()),
            Some("100".into())
        );
        assert_eq!(
            seq(last_before(&shard, "s", base, true).await.unwrap()),
            None
        );
        assert_eq!(
            seq(last_before(&shard, "s", base + 60_000, true).await.unwrap()),
            Some("104".into())
        );
    }

    #[tokio::test(start_paused = true)]
    async fn without_at_timestamp_the_shard_is_read_from_trim_horizon() {
        let mut shard = FakeShard::new(&[1_000, 2_000, 3_000, 4_000, 5_000]);
        shard.closed = true;
        assert_eq!(
            seq(last_before(&shard, "s", 3_500, false).await.unwrap()),
            Some("102".into())
        );
        assert_eq!(
            seq(last_before(&shard, "s", 99_000, false).await.unwrap()),
            Some("104".into())
        );
        assert_eq!(
            seq(last_before(&shard, "s", 500, false).await.unwrap()),
            None
        );
        let iterators = shard.iterators.lock().unwrap().clone();
        assert!(
            iterators.iter().all(|i| i.contains("TrimHorizon")),
            "{iterators:?}"
        );
        assert_eq!(
            seq(last_before(&FakeShard::new(&[]), "s", 1, true)
                .await
                .unwrap()),
            None
        );
    }

    #[test]
    fn timestamps_are_rfc3339_or_epoch_seconds_or_millis() {
        assert_eq!(
            parse_timestamp("2026-11-27T10:00:00Z"),
            Ok(1_795_773_600_000)
        );
        assert_eq!(
            parse_timestamp("2026-11-27T11:00:00.250+01:00"),
            Ok(1_795_773_600_250)
        );
        assert_eq!(parse_timestamp("1795773600"), Ok(1_795_773_600_000));
        assert_eq!(parse_timestamp("1795773600.5"), Ok(1_795_773_600_500));
        assert_eq!(parse_timestamp("1795773600250"), Ok(1_795_773_600_250));
        for bad in ["", "yesterday", "-5", "12:00", "1e9"] {
            let e = parse_timestamp(bad).unwrap_err();
            assert!(e.contains("RFC 3339"), "{bad}: {e}");
        }
        assert_eq!(show_ms(1_795_773_600_000), "2026-11-27T10:00:00Z");
    }
}
