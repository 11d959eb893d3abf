//! The shared reader and listing against a scripted [`ShardApi`] on a paused clock.

use std::collections::VecDeque;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

use super::*;
use crate::source::{Page, PartitionReader};

/// One call the reader made.
#[derive(Debug, Clone, PartialEq)]
enum Call {
    /// GetShardIterator from this position.
    Iterator(Position),
    /// GetRecords with this iterator, at this many ms since the test started.
    Records(String, u64),
}

/// Answers GetRecords and GetShardIterator from scripts (when a script runs out: an empty,
/// caught-up page; a fresh iterator `it-<n>`), and logs every call.
struct Fake {
    limits: ReadLimits,
    t0: Instant,
    records: Mutex<VecDeque<Result<RawPage, SourceError>>>,
    iterators: Mutex<VecDeque<Result<Option<String>, SourceError>>>,
    lists: Mutex<VecDeque<Result<ShardPage, SourceError>>>,
    calls: Mutex<Vec<Call>>,
    tokens: Mutex<Vec<Option<String>>>,
}

impl Fake {
    fn new(limits: ReadLimits) -> Arc<Fake> {
        Arc::new(Fake {
            limits,
            t0: Instant::now(),
            records: Mutex::default(),
            iterators: Mutex::default(),
            lists: Mutex::default(),
            calls: Mutex::default(),
            tokens: Mutex::default(),
        })
    }

    fn then(&self, page: Result<RawPage, SourceError>) -> &Self {
        self.records.lock().unwrap().push_back(page);
        self
    }

    fn then_iterator(&self, answer: Result<Option<String>, SourceError>) -> &Self {
        self.iterators.lock().unwrap().push_back(answer);
        self
    }

    /// The calls made since the last look.
    fn calls(&self) -> Vec<Call> {
        std::mem::take(&mut *self.calls.lock().unwrap())
    }

    fn ms(&self) -> u64 {
        (Instant::now() - self.t0).as_millis() as u64
    }
}

#[async_trait]
impl ShardApi for Fake {
    fn limits(&self) -> ReadLimits {
        self.limits
    }

    fn format(&self) -> EventFormat {
        EventFormat::DYNAMODB
    }

    async fn retention(&self) -> Result<Duration, SourceError> {
        Ok(Duration::from_secs(7))
    }

    async fn list_page(&self, token: Option<String>) -> Result<ShardPage, SourceError> {
        self.tokens.lock().unwrap().push(token);
        let next = self.lists.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok((vec![], None)))
    }

    async fn get_iterator(
        &self,
        _shard: &str,
        from: IteratorStart<'_>,
    ) -> Result<Option<String>, SourceError> {
        let from = match from {
            IteratorStart::After(seq) => Position::After(seq.clone()),
            IteratorStart::At(p) => Position::Start(p),
        };
        let mut calls = self.calls.lock().unwrap();
        calls.push(Call::Iterator(from));
        let n = calls.len();
        let next = self.iterators.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(Some(format!("it-{n}"))))
    }

    async fn get_records(&self, _shard: &str, iterator: String) -> Result<RawPage, SourceError> {
        self.calls
            .lock()
            .unwrap()
            .push(Call::Records(iterator, self.ms()));
        let next = self.records.lock().unwrap().pop_front();
        next.unwrap_or_else(|| Ok(page(&[], Some("it-idle"), None)))
    }
}

fn rec(s: &str) -> Record {
    at(s, 0)
}

fn at(s: &str, arrival_ms: i64) -> Record {
    Record {
        sequence: SequenceNumber(s.into()),
        arrival_ms,
        event: vec![],
        lane_key: 0,
    }
}

fn page(records: &[Record], next: Option<&str>, millis_behind: Option<i64>) -> RawPage {
    RawPage {
        records: records.to_vec(),
        next_iterator: next.map(str::to_string),
        millis_behind,
    }
}

fn seq(s: &str) -> Position {
    Position::After(SequenceNumber(s.into()))
}

const TRIM_HORIZON: Position = Position::Start(StartingPosition::TrimHorizon);

const TEST_LIMITS: ReadLimits = ReadLimits {
    read_interval: Duration::from_millis(100),
    caught_up_interval: Duration::from_millis(700),
    page_limit: 3,
};

fn reader(api: &Arc<Fake>, start: Position) -> IteratorReader<Fake> {
    IteratorReader::new(api.clone(), "shard-1".into(), start)
}

/// Waits until the reader may read again, then reads.
async fn paced_read(r: &mut IteratorReader<Fake>) -> Result<Page, SourceError> {
    tokio::time::sleep_until(r.next_read_at()).await;
    r.read().await
}

fn sequences(page: &Page) -> Vec<&str> {
    match page {
        Page::Records { records, .. } => records.iter().map(|r| r.sequence.0.as_str()).collect(),
        Page::ShardEnd => panic!("the shard ended"),
    }
}

fn caught_up(page: &Page) -> bool {
    matches!(
        page,
        Page::Records {
            caught_up: true,
            ..
        }
    )
}

#[test]
fn a_cursor_opened_at_the_end_has_ended() {
    let api = Fake::new(TEST_LIMITS);
    assert!(reader(&api, Position::End).ended);
    assert!(!reader(&api, TRIM_HORIZON).ended);
}

#[tokio::test(start_paused = true)]
async fn a_reader_opened_at_the_end_reads_nothing() {
    let api = Fake::new(TEST_LIMITS);
    let mut r = reader(&api, Position::End);
    assert!(matches!(r.read().await, Ok(Page::ShardEnd)));
    assert_eq!(api.calls(), []);
}

#[tokio::test(start_paused = true)]
async fn a_timestamp_start_skips_older_records_only() {
    let since = std::time::UNIX_EPOCH + Duration::from_millis(10_500);
    let api = Fake::new(TEST_LIMITS);
    api.then(Ok(page(
        &[at("1", 9_000), at("2", 9_999)],
        Some("it-1"),
        None,
    )))
    .then(Ok(page(
        &[at("3", 9_500), at("4", 10_000), at("5", 9_000)],
        Some("it-2"),
        None,
    )));
    let mut c = reader(&api, Position::Start(StartingPosition::AtTimestamp(since)));
    let first = paced_read(&mut c).await.unwrap();
    assert!(matches!(first, Page::Records { ref records, .. } if records.is_empty()));
    assert_eq!(c.start, seq("2"));
    // Same second as the start is kept (second precision), and so is all that follows,
    // whatever its timestamp.
    assert_eq!(sequences(&paced_read(&mut c).await.unwrap()), ["4", "5"]);
    // A closed shard whose records are all older ends.
    let api = Fake::new(TEST_LIMITS);
    api.then(Ok(page(&[at("1", 1)], None, None)));
    let mut d = reader(&api, Position::Start(StartingPosition::AtTimestamp(since)));
    assert!(matches!(paced_read(&mut d).await, Ok(Page::ShardEnd)));
}

#[tokio::test(start_paused = true)]
async fn a_timestamp_start_skips_within_one_page_and_asks_from_the_timestamp() {
    let since = std::time::UNIX_EPOCH + Duration::from_secs(20);
    let api = Fake::new(TEST_LIMITS);
    api.then(Ok(page(
        &[at("7", 19_999), at("8", 20_000), at("9", 1)],
        Some("it-x"),
        None,
    )));
    let mut r = reader(&api, Position::Start(StartingPosition::AtTimestamp(since)));
    assert_eq!(sequences(&paced_read(&mut r).await.unwrap()), ["8", "9"]);
    assert_eq!(
        api.calls()[0],
        Call::Iterator(Position::Start(StartingPosition::AtTimestamp(since)))
    );
    assert_eq!(r.start, seq("9"));
}

#[tokio::test(start_paused = true)]
async fn resumes_after_the_last_record_and_ends_with_the_shard() {
    let api = Fake::new(TEST_LIMITS);
    api.then(Ok(page(&[rec("1"), rec("2")], Some("it-2"), None)))
        .then(Err(SourceError::ExpiredIterator))
        .then(Ok(page(&[rec("3")], None, None)));
    let mut c = reader(&api, TRIM_HORIZON);
    assert!(matches!(paced_read(&mut c).await, Ok(Page::Records { .. })));
    assert_eq!(c.start, seq("2"));
    assert!(matches!(
        paced_read(&mut c).await,
        Err(SourceError::ExpiredIterator)
    ));
    assert_eq!(c.iterator, None);
    assert_eq!(
        c.start,
        seq("2"),
        "an expired iterator resumes after the last record"
    );
    // The last page of a closed shard still hands out its records, then the end.
    assert!(matches!(paced_read(&mut c).await, Ok(Page::Records { .. })));
    assert!(c.ended);
    assert!(matches!(paced_read(&mut c).await, Ok(Page::ShardEnd)));
    let api = Fake::new(TEST_LIMITS);
    api.then(Ok(page(&[], None, None)));
    let mut d = reader(&api, Position::Start(StartingPosition::Latest));
    assert!(matches!(paced_read(&mut d).await, Ok(Page::ShardEnd)));
}

#[tokio::test(start_paused = true)]
async fn an_expired_iterator_is_refetched_at_once_after_the_last_handed_on_record() {
    let api = Fake::new(TEST_LIMITS);
    api.then(Ok(page(&[rec("10"), rec("11")], Some("it-b"), Some(5))))
        .then(Err(SourceError::ExpiredIterator));
    let mut r = reader(&api, Position::Start(StartingPosition::Latest));
    paced_read(&mut r).await.unwrap();
    let err = paced_read(&mut r).await.unwrap_err();
    assert!(matches!(err, SourceError::ExpiredIterator));
    assert_eq!(r.next_read_at(), Instant::now(), "no wait after an expiry");
    paced_read(&mut r).await.unwrap();
    assert_eq!(
        api.calls(),
        [
            Call::Iterator(Position::Start(StartingPosition::Latest)),
            Call::Records("it-1".into(), 0),
            Call::Records("it-b".into(), 100),
            Call::Iterator(seq("11")),
            Call::Records("it-4".into(), 100),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn an_iterator_expired_before_any_record_restarts_where_the_reader_was_opened() {
    let api = Fake::new(TEST_LIMITS);
    api.then(Err(SourceError::ExpiredIterator));
    let mut r = reader(&api, seq("42"));
    assert!(paced_read(&mut r).await.is_err());
    paced_read(&mut r).await.unwrap();
    let calls = api.calls();
    assert_eq!(calls[0], Call::Iterator(seq("42")));
    assert_eq!(
        calls[2],
        Call::Iterator(seq("42")),
        "never the StartingPosition"
    );
}

#[tokio::test(start_paused = true)]
async fn trimmed_records_restart_at_trim_horizon() {
    // From GetRecords.
    let api = Fake::new(TEST_LIMITS);
    api.then(Ok(page(&[rec("5")], Some("it-b"), None)))
        .then(Err(SourceError::Trimmed("GetRecords".into())));
    let mut r = reader(&api, Position::Start(StartingPosition::Latest));
    paced_read(&mut r).await.unwrap();
    assert!(matches!(
        paced_read(&mut r).await,
        Err(SourceError::Trimmed(_))
    ));
    assert_eq!(r.start, TRIM_HORIZON);
    paced_read(&mut r).await.unwrap();
    let calls = api.calls();
    assert_eq!(calls[3], Call::Iterator(TRIM_HORIZON));
    // From GetShardIterator (a checkpoint older than the retention).
    let api = Fake::new(TEST_LIMITS);
    api.then_iterator(Err(SourceError::Trimmed("GetShardIterator".into())));
    let mut r = reader(&api, seq("3"));
    assert!(matches!(
        paced_read(&mut r).await,
        Err(SourceError::Trimmed(_))
    ));
    paced_read(&mut r).await.unwrap();
    assert_eq!(
        api.calls(),
        [
            Call::Iterator(seq("3")),
            Call::Iterator(TRIM_HORIZON),
            Call::Records("it-2".into(), 0),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn throttles_surface_and_keep_the_iterator_and_the_pace() {
    let api = Fake::new(TEST_LIMITS);
    api.then_iterator(Err(SourceError::Throttled("GetShardIterator".into())));
    api.then(Err(SourceError::Throttled("GetRecords".into())))
        .then(Err(SourceError::Service("boom".into())));
    let mut r = reader(&api, TRIM_HORIZON);
    assert!(matches!(
        paced_read(&mut r).await,
        Err(SourceError::Throttled(m)) if m == "GetShardIterator"
    ));
    assert!(matches!(
        paced_read(&mut r).await,
        Err(SourceError::Throttled(m)) if m == "GetRecords"
    ));
    assert_eq!(r.next_read_at(), Instant::now() + TEST_LIMITS.read_interval);
    assert!(matches!(
        paced_read(&mut r).await,
        Err(SourceError::Service(_))
    ));
    paced_read(&mut r).await.unwrap();
    assert_eq!(
        api.calls(),
        [
            Call::Iterator(TRIM_HORIZON),
            Call::Iterator(TRIM_HORIZON),
            Call::Records("it-2".into(), 0),
            Call::Records("it-2".into(), 100),
            Call::Records("it-2".into(), 200),
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn caught_up_means_a_short_page_at_the_tip() {
    let api = Fake::new(TEST_LIMITS);
    let three = [rec("1"), rec("2"), rec("3")];
    api.then(Ok(page(&three, Some("a"), Some(0))))
        .then(Ok(page(&[rec("4")], Some("b"), Some(30))))
        .then(Ok(page(&[rec("5")], Some("c"), Some(0))))
        .then(Ok(page(&[rec("6")], Some("d"), None)));
    let mut r = reader(&api, TRIM_HORIZON);
    let p = paced_read(&mut r).await.unwrap();
    assert!(!caught_up(&p), "a full page");
    let p = paced_read(&mut r).await.unwrap();
    assert!(!caught_up(&p), "behind the tip");
    assert!(matches!(
        p,
        Page::Records {
            millis_behind: Some(30),
            ..
        }
    ));
    assert!(caught_up(&paced_read(&mut r).await.unwrap()));
    assert!(caught_up(&paced_read(&mut r).await.unwrap()));
    // 100 ms between reads while behind, 700 once caught up.
    let times: Vec<u64> = api
        .calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Records(_, t) => Some(t),
            _ => None,
        })
        .collect();
    assert_eq!(times, [0, 100, 200, 900]);
}

/// The GetRecords times of `n` reads against a service's limits, each answered with `page`.
async fn read_times(limits: ReadLimits, n: usize, answer: fn() -> RawPage) -> Vec<u64> {
    read_times_every(limits, None, n, answer).await
}

/// [`read_times`] with the mapping's caught-up interval (`CaughtUpPollingIntervalMillis`).
async fn read_times_every(
    limits: ReadLimits,
    caught_up: Option<Duration>,
    n: usize,
    answer: fn() -> RawPage,
) -> Vec<u64> {
    let api = Fake::new(limits);
    for _ in 0..n {
        api.then(Ok(answer()));
    }
    let mut r = reader(&api, TRIM_HORIZON).with_caught_up_interval(caught_up);
    for _ in 0..n {
        paced_read(&mut r).await.unwrap();
    }
    api.calls()
        .into_iter()
        .filter_map(|c| match c {
            Call::Records(_, t) => Some(t),
            _ => None,
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn kinesis_reads_five_times_a_second_behind_and_once_a_second_caught_up() {
    let limits = crate::source::kinesis::LIMITS;
    let behind = || page(&[rec("1")], Some("it"), Some(1_000));
    assert_eq!(
        read_times(limits, 6, behind).await,
        [0, 200, 400, 600, 800, 1000]
    );
    let caught_up = || page(&[rec("1")], Some("it"), Some(0));
    assert_eq!(read_times(limits, 3, caught_up).await, [0, 1000, 2000]);
}

#[tokio::test(start_paused = true)]
async fn the_mappings_caught_up_interval_paces_a_caught_up_shard_only() {
    let limits = crate::source::kinesis::LIMITS;
    let caught_up = || page(&[rec("1")], Some("it"), Some(0));
    let every = |ms| Some(Duration::from_millis(ms));
    assert_eq!(
        read_times_every(limits, every(300), 4, caught_up).await,
        [0, 300, 600, 900]
    );
    assert_eq!(
        read_times_every(limits, every(2_500), 3, caught_up).await,
        [0, 2500, 5000]
    );
    // Behind, the service's read interval still paces it; and never faster than that.
    let behind = || page(&[rec("1")], Some("it"), Some(1_000));
    assert_eq!(
        read_times_every(limits, every(2_500), 3, behind).await,
        [0, 200, 400]
    );
    let dynamodb = crate::source::dynamodb::LIMITS;
    let empty = || page(&[], Some("it"), None);
    assert_eq!(
        read_times_every(dynamodb, every(200), 3, empty).await,
        [0, 250, 500]
    );
}

#[tokio::test(start_paused = true)]
async fn dynamodb_reads_four_times_a_second_caught_up_or_not() {
    let limits = crate::source::dynamodb::LIMITS;
    let full = || RawPage {
        records: (0..1000).map(|i| rec(&i.to_string())).collect(),
        next_iterator: Some("it".into()),
        millis_behind: None,
    };
    assert_eq!(read_times(limits, 5, full).await, [0, 250, 500, 750, 1000]);
    let empty = || page(&[], Some("it"), None);
    assert_eq!(read_times(limits, 3, empty).await, [0, 250, 500]);
}

#[tokio::test(start_paused = true)]
async fn list_follows_tokens_to_the_last_page() {
    let api = Fake::new(TEST_LIMITS);
    let shard = |id: &str, parents: &[&str], closed| Partition {
        id: id.into(),
        parents: parents.iter().map(|p| p.to_string()).collect(),
        closed,
    };
    {
        let mut lists = api.lists.lock().unwrap();
        lists.push_back(Ok((vec![shard("a", &[], true)], Some("t1".into()))));
        lists.push_back(Ok((vec![shard("b", &["a"], false)], Some("t2".into()))));
        lists.push_back(Ok((
            vec![shard("c", &["a", "b"], false)],
            Some(String::new()),
        )));
        lists.push_back(Ok((vec![shard("never", &[], false)], None)));
    }
    let shards = list(&*api).await.unwrap();
    assert_eq!(
        shards,
        [
            shard("a", &[], true),
            shard("b", &["a"], false),
            shard("c", &["a", "b"], false)
        ]
    );
    assert_eq!(
        *api.tokens.lock().unwrap(),
        [None, Some("t1".into()), Some("t2".into())],
        "an empty token ends the listing"
    );
    // A failing page fails the listing.
    api.lists.lock().unwrap().clear();
    api.lists
        .lock()
        .unwrap()
        .push_back(Ok((vec![shard("a", &[], false)], Some("t".into()))));
    api.lists
        .lock()
        .unwrap()
        .push_back(Err(SourceError::Throttled("ListShards".into())));
    assert!(matches!(list(&*api).await, Err(SourceError::Throttled(_))));
}

#[tokio::test(start_paused = true)]
async fn a_shard_source_delegates_to_its_api() {
    let api = Fake::new(TEST_LIMITS);
    let fake = Arc::try_unwrap(api).ok().unwrap();
    let source = ShardSource::from_api(fake);
    let shard = Partition {
        id: "shardId-0".into(),
        parents: vec![],
        closed: false,
    };
    assert_eq!(source.format(&shard), EventFormat::DYNAMODB);
    assert_eq!(source.retention().await.unwrap(), Duration::from_secs(7));
    assert_eq!(source.list_partitions().await.unwrap(), []);
    let closed = Partition {
        id: "s".into(),
        parents: vec![],
        closed: true,
    };
    let mut r = source.open(&closed, Position::End);
    assert!(matches!(r.read().await, Ok(Page::ShardEnd)));
    let mut r = source.open(&closed, TRIM_HORIZON);
    assert!(matches!(r.read().await, Ok(Page::Records { .. })));
    assert_eq!(
        source.api.calls(),
        [
            Call::Iterator(TRIM_HORIZON),
            Call::Records("it-1".into(), 0)
        ]
    );
}

#[tokio::test(start_paused = true)]
async fn a_missing_iterator_is_a_service_error_and_is_asked_for_again() {
    let api = Fake::new(TEST_LIMITS);
    api.then_iterator(Ok(None));
    let mut r = reader(&api, TRIM_HORIZON);
    assert!(matches!(
        paced_read(&mut r).await,
        Err(SourceError::Service(m)) if m == "GetShardIterator returned no iterator"
    ));
    paced_read(&mut r).await.unwrap();
    assert_eq!(api.calls()[1], Call::Iterator(TRIM_HORIZON));
}

#[test]
fn faults_read_alike_for_every_service() {
    let shard = |f: Fault| f.on_shard("GetRecords", "arn:s", "shard-7", "Code: msg".into());
    assert!(matches!(
        shard(Fault::ExpiredIterator),
        SourceError::ExpiredIterator
    ));
    assert!(
        matches!(shard(Fault::Trimmed), SourceError::Trimmed(m) if m == "GetRecords shard-7: Code: msg")
    );
    assert!(
        matches!(shard(Fault::Throttled), SourceError::Throttled(m) if m == "GetRecords: Code: msg")
    );
    assert!(matches!(shard(Fault::NotFound), SourceError::NotFound(m) if m == "arn:s/shard-7"));
    assert!(
        matches!(shard(Fault::Other), SourceError::Service(m) if m == "GetRecords shard-7: Code: msg")
    );
    let stream = |f: Fault| f.on_stream("ListShards", "arn:s", "Code: msg".into());
    assert!(matches!(stream(Fault::NotFound), SourceError::NotFound(m) if m == "arn:s"));
    assert!(
        matches!(stream(Fault::Throttled), SourceError::Throttled(m) if m == "ListShards: Code: msg")
    );
    for f in [Fault::Other, Fault::Trimmed, Fault::ExpiredIterator] {
        assert!(matches!(stream(f), SourceError::Service(m) if m == "ListShards arn:s: Code: msg"));
    }
}
