//! Kinesis enhanced fan-out: a mapping whose `EventSourceArn` is a stream consumer ARN lists the
//! consumer's stream like a polling mapping (ListShards, DescribeStreamSummary on the stream ARN)
//! but reads each shard with SubscribeToShard: [`FanoutSource`] opens a [`FanoutReader`] per shard,
//! which holds one subscription and hands on each pushed event's records as one
//! [`Page::Records`], encoded exactly as the polling reader encodes them ([`super::record`]).
//! Everything downstream of the reader (batching, order, retries, checkpoints) is unchanged.
//!
//! The reader remembers where a new subscription starts: just after the last record it handed on
//! (AFTER_SEQUENCE_NUMBER), else where it was opened. It subscribes again from there when the
//! service ends a subscription (after 5 minutes), when one stays open past [`RENEW_AFTER`] or goes
//! [`STALL`] without an event, and never within 5 s of its last successful call (the service
//! refuses those with ResourceInUseException). A shard has ended when an event names its child
//! shards or carries no continuation sequence number (AWS), or when a subscription started after
//! the shard was listed closed sends an empty event at the tip (kinesis-local never sends
//! `ChildShards`: the listing the supervisor makes every discovery interval, with the shard's
//! EndingSequenceNumber, tells that the shard closed).
//!
//! Cancel-safe as the polling reader: what was handed on (`start`) changes only when `read`
//! returns records; a read cancelled while subscribing or waiting for an event loses nothing (an
//! event not yet received is received again, from `start`, by the next subscription).

use async_trait::async_trait;
use aws_sdk_kinesis::operation::subscribe_to_shard::SubscribeToShardOutput;
use aws_sdk_kinesis::primitives::DateTime;
use aws_sdk_kinesis::types::{ShardIteratorType, StartingPosition as SdkStart};
use aws_sdk_kinesis::types::{SubscribeToShardEvent, SubscribeToShardEventStream};
use aws_sdk_kinesis::Client;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::{Duration, UNIX_EPOCH};
use tokio::time::Instant;
use tracing::debug;

use super::{record, EventContext, KinesisApi};
use crate::aws::error_text;
use crate::aws::Clients;
use crate::model::StartingPosition;
use crate::source::shards::{self, ShardApi};
use crate::source::{
    EventFormat, Page, Partition, PartitionReader, Position, Record, Source, SourceError,
};

/// The service refuses a SubscribeToShard within this long of the last successful one.
pub const RESUBSCRIBE_GAP: Duration = Duration::from_secs(5);
/// The service ends a subscription after 5 minutes; one still open this long is dropped and
/// renewed from the last record handed on.
pub const RENEW_AFTER: Duration = Duration::from_secs(5 * 60 + 10);
/// A subscription that sent no event for this long is dropped and renewed.
pub const STALL: Duration = Duration::from_secs(60);
/// The longest a read waits for an event; then it returns an empty page, so a batch waiting for
/// its window is not held up by a quiet shard.
pub const MAX_WAIT: Duration = Duration::from_secs(1);
/// After dropping a subscription itself, the reader waits this long before the next one, and takes
/// a ResourceInUseException within [`IN_USE_GRACE`] of the drop for the old one winding down
/// (kinesis-local frees it at its next tick), not for another holder.
pub const RENEW_PAUSE: Duration = Duration::from_secs(1);
pub const IN_USE_GRACE: Duration = Duration::from_secs(10);
/// How long a test deployment's subscriptions last, in milliseconds: `SLUICE_FANOUT_RENEW_MILLIS`
/// (at least 1000; for tests that must see a renewal without waiting 5 minutes).
pub const RENEW_ENV: &str = "SLUICE_FANOUT_RENEW_MILLIS";

/// One pushed event, its records encoded.
#[derive(Debug, Default)]
pub struct Pushed {
    pub records: Vec<Record>,
    /// `ContinuationSequenceNumber`; empty when the service sent none (the shard ended).
    pub continuation: String,
    pub millis_behind: i64,
    /// The event named the shard's children: the shard ended.
    pub child_shards: bool,
}

/// Why a subscription could not be made or went on.
#[derive(Debug)]
pub enum Refused {
    /// ResourceInUseException: a subscription of this consumer holds the shard, or the last one
    /// was made less than 5 s ago.
    InUse(String),
    Source(SourceError),
}

/// SubscribeToShard for one consumer: the seam the reader is tested through.
#[async_trait]
pub trait Subscribe: Send + Sync + 'static {
    /// A subscription to `shard` from `from` (a start sentinel or just after a record).
    async fn subscribe(
        &self,
        shard: &str,
        from: &Position,
    ) -> Result<Box<dyn Subscription>, Refused>;
}

/// One open subscription.
#[async_trait]
pub trait Subscription: Send {
    /// The next event; `None` when the service ended the subscription. Cancel-safe.
    async fn next(&mut self) -> Result<Option<Pushed>, Refused>;
}

/// Shards the last listing showed closed (their EndingSequenceNumber set), shared with the readers.
type Closed = Arc<Mutex<HashSet<String>>>;

/// A Kinesis stream read through one enhanced fan-out consumer.
pub struct FanoutSource {
    api: Arc<KinesisApi>,
    subscriber: Arc<dyn Subscribe>,
    closed: Closed,
    renew_after: Duration,
}

impl FanoutSource {
    /// `clients` must be those of the stream's region; `consumer` is the consumer ARN (registered
    /// beforehand with RegisterStreamConsumer; sluice never registers one).
    pub fn new(clients: &Clients, ctx: EventContext, consumer: String) -> Result<Self, String> {
        let subscriber = Arc::new(SdkSubscriber {
            client: clients.kinesis.clone(),
            ctx: ctx.clone(),
            consumer,
        });
        let renew_after = std::env::var(RENEW_ENV)
            .ok()
            .and_then(|v| v.parse::<u64>().ok())
            .map_or(RENEW_AFTER, |ms| Duration::from_millis(ms.max(1000)));
        let api = KinesisApi::new(clients, ctx)?;
        Ok(Self::with_subscriber(api, subscriber, renew_after))
    }

    /// Over any [`Subscribe`] (tests: a scripted one).
    pub fn with_subscriber(
        api: KinesisApi,
        subscriber: Arc<dyn Subscribe>,
        renew_after: Duration,
    ) -> Self {
        FanoutSource {
            api: Arc::new(api),
            subscriber,
            closed: Arc::default(),
            renew_after,
        }
    }
}

#[async_trait]
impl Source for FanoutSource {
    async fn list_partitions(&self) -> Result<Vec<Partition>, SourceError> {
        let shards = shards::list(&*self.api).await?;
        let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
        closed.extend(shards.iter().filter(|s| s.closed).map(|s| s.id.clone()));
        Ok(shards)
    }

    fn open(&self, partition: &Partition, from: Position) -> Box<dyn PartitionReader> {
        if partition.closed {
            let mut closed = self.closed.lock().unwrap_or_else(|p| p.into_inner());
            closed.insert(partition.id.clone());
        }
        Box::new(FanoutReader::new(
            self.subscriber.clone(),
            partition.id.clone(),
            from,
            self.closed.clone(),
            self.renew_after,
        ))
    }

    fn format(&self, _partition: &Partition) -> EventFormat {
        EventFormat::KINESIS
    }

    async fn retention(&self) -> Result<Duration, SourceError> {
        self.api.retention().await
    }
}

/// One shard read through SubscribeToShard (see the module's documentation).
pub struct FanoutReader {
    subscriber: Arc<dyn Subscribe>,
    shard: String,
    /// Where a new subscription starts.
    pub(super) start: Position,
    sub: Option<Box<dyn Subscription>>,
    /// When the current subscription was made, and when it last sent an event.
    subscribed_at: Instant,
    last_event_at: Instant,
    /// The last successful SubscribeToShard.
    last_subscribe: Option<Instant>,
    /// When the reader last dropped a live subscription itself.
    dropped_at: Option<Instant>,
    next_read_at: Instant,
    closed: Closed,
    /// The listing showed the shard closed.
    closed_known: bool,
    /// The current subscription was made after that: an empty event at the tip is the end.
    sub_after_close: bool,
    pub(super) ended: bool,
    renew_after: Duration,
}

impl FanoutReader {
    pub fn new(
        subscriber: Arc<dyn Subscribe>,
        shard: String,
        start: Position,
        closed: Closed,
        renew_after: Duration,
    ) -> Self {
        let now = Instant::now();
        FanoutReader {
            subscriber,
            shard,
            ended: start == Position::End,
            start,
            sub: None,
            subscribed_at: now,
            last_event_at: now,
            last_subscribe: None,
            dropped_at: None,
            next_read_at: now,
            closed,
            closed_known: false,
            sub_after_close: false,
            renew_after,
        }
    }

    /// No new subscription within [`RESUBSCRIBE_GAP`] of the last one, nor before `earliest`.
    fn resubscribe_at(&self, earliest: Instant) -> Instant {
        self.last_subscribe
            .map_or(earliest, |t| earliest.max(t + RESUBSCRIBE_GAP))
    }

    /// Drops the live subscription; the next starts from `start` after [`RENEW_PAUSE`].
    fn drop_subscription(&mut self, now: Instant) {
        if self.sub.take().is_some() {
            self.dropped_at = Some(now);
            self.next_read_at = self.resubscribe_at(now + RENEW_PAUSE);
        }
    }

    /// A SubscribeToShard or an event stream refused: a `SourceError` for the worker, or `None`
    /// when it is the subscription just dropped winding down (wait and try again).
    fn refused(&mut self, why: Refused, now: Instant) -> Option<SourceError> {
        self.sub = None;
        self.next_read_at = self.resubscribe_at(now);
        match why {
            Refused::InUse(text) => {
                self.next_read_at = self.resubscribe_at(now + RENEW_PAUSE);
                if self.dropped_at.is_some_and(|d| now < d + IN_USE_GRACE) {
                    debug!(shard = %self.shard, "the dropped subscription is still held; subscribing again shortly");
                    return None;
                }
                Some(SourceError::Throttled(format!(
                    "SubscribeToShard {}: {text} (another subscription of this consumer holds the shard)",
                    self.shard
                )))
            }
            Refused::Source(e) => Some(e),
        }
    }

    /// An event arrived: hands on its records and remembers the last; ends with the shard.
    fn pushed(&mut self, event: Pushed, now: Instant) -> Page {
        let Pushed {
            records,
            continuation,
            millis_behind,
            child_shards,
        } = event;
        self.last_event_at = now;
        self.next_read_at = now;
        if let Some(last) = records.last() {
            self.start = Position::After(last.sequence.clone());
        }
        let at_tip_after_close = self.sub_after_close && records.is_empty() && millis_behind == 0;
        if child_shards || continuation.is_empty() || at_tip_after_close {
            self.ended = true;
            self.sub = None;
            if records.is_empty() {
                return Page::ShardEnd;
            }
        }
        Page::Records {
            records,
            caught_up: millis_behind == 0,
            millis_behind: Some(millis_behind),
        }
    }
}

/// A read that handed on nothing (a subscription made, renewed or waited on).
fn nothing() -> Page {
    Page::Records {
        records: Vec::new(),
        caught_up: true,
        millis_behind: None,
    }
}

#[async_trait]
impl PartitionReader for FanoutReader {
    fn next_read_at(&self) -> Instant {
        self.next_read_at
    }

    async fn read(&mut self) -> Result<Page, SourceError> {
        if self.ended {
            return Ok(Page::ShardEnd);
        }
        let now = Instant::now();
        // Listed closed since: only a subscription made from now on proves the end.
        if !self.closed_known
            && self
                .closed
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .contains(&self.shard)
        {
            self.closed_known = true;
            if self.sub.is_some() {
                self.drop_subscription(now);
                return Ok(nothing());
            }
        }
        if self.sub.is_some()
            && (now >= self.subscribed_at + self.renew_after || now >= self.last_event_at + STALL)
        {
            debug!(shard = %self.shard, "renewing the subscription");
            self.drop_subscription(now);
            return Ok(nothing());
        }
        if self.sub.is_none() {
            let called = Instant::now();
            match self.subscriber.subscribe(&self.shard, &self.start).await {
                Ok(sub) => {
                    self.sub = Some(sub);
                    self.subscribed_at = called;
                    self.last_event_at = called;
                    self.last_subscribe = Some(called);
                    self.sub_after_close = self.closed_known;
                }
                Err(why) => {
                    return match self.refused(why, Instant::now()) {
                        Some(e) => Err(e),
                        None => Ok(nothing()),
                    }
                }
            }
        }
        let Some(sub) = self.sub.as_mut() else {
            return Ok(nothing());
        };
        let got = tokio::time::timeout(MAX_WAIT, sub.next()).await;
        let now = Instant::now();
        match got {
            Err(_) => {
                self.next_read_at = now;
                Ok(nothing())
            }
            Ok(Ok(Some(event))) => Ok(self.pushed(event, now)),
            Ok(Ok(None)) => {
                // The service ended it (5 minutes): the next starts from `start`.
                debug!(shard = %self.shard, "the subscription ended; subscribing again");
                self.sub = None;
                self.dropped_at = None;
                self.next_read_at = self.resubscribe_at(now);
                Ok(nothing())
            }
            Ok(Err(why)) => match self.refused(why, now) {
                Some(e) => Err(e),
                None => Ok(nothing()),
            },
        }
    }
}

/// SubscribeToShard through the SDK.
struct SdkSubscriber {
    client: Client,
    ctx: EventContext,
    consumer: String,
}

/// The SDK's starting position for `from`.
fn starting_position(from: &Position) -> Result<SdkStart, Refused> {
    let b = SdkStart::builder();
    let b = match from {
        Position::After(seq) => b
            .r#type(ShardIteratorType::AfterSequenceNumber)
            .sequence_number(&seq.0),
        Position::Start(StartingPosition::TrimHorizon) => b.r#type(ShardIteratorType::TrimHorizon),
        Position::Start(StartingPosition::Latest) => b.r#type(ShardIteratorType::Latest),
        Position::Start(StartingPosition::AtTimestamp(t)) => {
            let since = t.duration_since(UNIX_EPOCH).unwrap_or_default();
            b.r#type(ShardIteratorType::AtTimestamp)
                .timestamp(DateTime::from_secs_f64(since.as_secs_f64()))
        }
        Position::End => {
            return Err(Refused::Source(SourceError::Service(
                "no subscription past a shard's end".into(),
            )))
        }
    };
    b.build()
        .map_err(|e| Refused::Source(SourceError::Service(format!("SubscribeToShard: {e}"))))
}

/// What a refused call or event stream was; `in_use`, `not_found`, `throttled` from the SDK error.
fn classify(
    consumer: &str,
    shard: &str,
    (in_use, not_found, throttled): (bool, bool, bool),
    text: String,
) -> Refused {
    if in_use {
        Refused::InUse(text)
    } else if not_found {
        Refused::Source(SourceError::NotFound(format!(
            "{consumer} (shard {shard}): {text}; register the consumer with RegisterStreamConsumer"
        )))
    } else if throttled {
        Refused::Source(SourceError::Throttled(format!("SubscribeToShard: {text}")))
    } else {
        Refused::Source(SourceError::Service(format!(
            "SubscribeToShard {shard}: {text}"
        )))
    }
}

#[async_trait]
impl Subscribe for SdkSubscriber {
    async fn subscribe(
        &self,
        shard: &str,
        from: &Position,
    ) -> Result<Box<dyn Subscription>, Refused> {
        let out = self
            .client
            .subscribe_to_shard()
            .consumer_arn(&self.consumer)
            .shard_id(shard)
            .starting_position(starting_position(from)?)
            .send()
            .await
            .map_err(|e| {
                let kinds = e.as_service_error().map_or((false, false, false), |s| {
                    (
                        s.is_resource_in_use_exception(),
                        s.is_resource_not_found_exception(),
                        s.is_limit_exceeded_exception() || s.is_kms_throttling_exception(),
                    )
                });
                classify(&self.consumer, shard, kinds, error_text(&e))
            })?;
        Ok(Box::new(SdkSubscription {
            out,
            ctx: self.ctx.clone(),
            consumer: self.consumer.clone(),
            shard: shard.to_string(),
        }))
    }
}

struct SdkSubscription {
    /// Holds the event stream (`event_stream`, whose type the SDK does not export).
    out: SubscribeToShardOutput,
    ctx: EventContext,
    consumer: String,
    shard: String,
}

#[async_trait]
impl Subscription for SdkSubscription {
    async fn next(&mut self) -> Result<Option<Pushed>, Refused> {
        loop {
            // The receiver keeps what it buffered in itself: dropping this await loses nothing.
            let got = self.out.event_stream.recv().await.map_err(|e| {
                let kinds = e.as_service_error().map_or((false, false, false), |s| {
                    (
                        s.is_resource_in_use_exception(),
                        s.is_resource_not_found_exception(),
                        s.is_kms_throttling_exception(),
                    )
                });
                classify(&self.consumer, &self.shard, kinds, error_text(&e))
            })?;
            match got {
                None => return Ok(None),
                Some(SubscribeToShardEventStream::SubscribeToShardEvent(e)) => {
                    return Ok(Some(self.pushed(e)))
                }
                // An event type this SDK does not know: nothing to hand on.
                Some(_) => continue,
            }
        }
    }
}

impl SdkSubscription {
    fn pushed(&self, e: SubscribeToShardEvent) -> Pushed {
        Pushed {
            records: e
                .records()
                .iter()
                .map(|r| record(&self.ctx, &self.shard, r))
                .collect(),
            continuation: e.continuation_sequence_number().to_string(),
            millis_behind: e.millis_behind_latest(),
            child_shards: !e.child_shards().is_empty(),
        }
    }
}
