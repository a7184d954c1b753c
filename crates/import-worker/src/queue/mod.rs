//! The job-chunk queue: batch imports fan out as chunk messages through it (ARCHITECTURE.md, "Invariants").
//!
//! One trait, [`ChunkQueue`], with two implementations that pass the same conformance suite
//! (`tests/api/queue.rs`):
//!
//! - [`RabbitQueue`] uses the broker's own features: durable quorum queues with a delivery
//!   limit and a dead-letter exchange, publisher confirms with mandatory publishing, manual
//!   acknowledgements and a per-consumer prefetch. It reconnects by itself, with backoff, when
//!   the broker or a connection drops.
//! - [`MemoryQueue`] is the embedded default for `userimport dev`: the same semantics in the
//!   process (unacked tracking, redelivery, the delivery limit, dead letters, events).
//!
//! Every batch group has two lanes, critical and normal, each its own queue. A consumer of a
//! group takes critical deliveries first whenever both lanes have work waiting. It does not
//! preempt: a normal delivery already handed out is finished, and each lane keeps its own
//! prefetch, so a worker busy with normal chunks still takes critical ones beside them.
//! On RabbitMQ "waiting" includes a critical message the broker is about to push: when a
//! critical delivery is settled while more wait in its queue, the consumer waits for the next
//! one (asking the broker every 20 ms whether any is still waiting, 2 s at most) rather than
//! hand out a normal delivery already buffered. Without that, critical and normal deliveries
//! alternate, since the next critical message is still on the wire when the caller asks.
//!
//! Delivery is at least once. A chunk can arrive again after a crash, a lost connection or a
//! publish retried after a confirm was lost, so its handler must be idempotent (ARCHITECTURE.md: by
//! job and seq).
//!
//! Topology (every name under [`QueueConfig::prefix`]):
//!
//! | name | what |
//! | --- | --- |
//! | `{prefix}.chunks.{group}.critical`, `{prefix}.chunks.{group}.normal` | durable quorum queues: `x-delivery-limit`, `x-dead-letter-exchange`, at-least-once dead-lettering |
//! | `{prefix}.dead-letter` | durable fanout exchange: the lanes' dead-letter exchange |
//! | `{prefix}.chunks.dead` | durable quorum queue bound to it, without a delivery limit |
//! | `{prefix}.events` | durable topic exchange for job events (`job.completed`, …) |
//!
//! Metrics (`metrics` facade): `queue_published_total{lane}`, `queue_events_published_total`,
//! `queue_delivered_total{lane}`, `queue_acked_total{lane}`, `queue_retried_total{lane}`,
//! `queue_dead_lettered_total{reason}`, `queue_publish_retries_total`,
//! `queue_reconnects_total{connection}` and `queue_consumer_resubscribes_total`. `lane` is
//! `critical`, `normal` or `dead`; `reason` is `rejected` or `delivery_limit`.

mod memory;
mod rabbit;

use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

use async_trait::async_trait;
use serde::Deserialize;
use service_runtime::retry::RetryPolicy;

pub use memory::MemoryQueue;
pub use rabbit::RabbitQueue;

/// The batch group a job goes to when its options name none.
pub const DEFAULT_BATCH_GROUP: &str = "default";

/// `worker.batch_groups = ["*"]`: every batch group, whatever jobs name (the in-process
/// queue only, for `userimport dev`; RabbitMQ consumers name their queues).
pub const EVERY_GROUP: &str = "*";

/// Which queue a chunk goes to: its batch group, critical or normal.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Lane {
    pub batch_group: String,
    pub critical: bool,
}

impl Lane {
    /// The lane of `batch_group`, critical or normal.
    pub fn new(batch_group: impl Into<String>, critical: bool) -> Self {
        Self {
            batch_group: batch_group.into(),
            critical,
        }
    }

    /// The critical lane of `batch_group`.
    pub fn critical(batch_group: impl Into<String>) -> Self {
        Self::new(batch_group, true)
    }

    /// The normal lane of `batch_group`.
    pub fn normal(batch_group: impl Into<String>) -> Self {
        Self::new(batch_group, false)
    }

    fn label(&self) -> &'static str {
        if self.critical { "critical" } else { "normal" }
    }
}

impl fmt::Display for Lane {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{}", self.batch_group, self.label())
    }
}

/// A message to publish: an opaque payload (a protobuf `ImportChunk`) and string headers.
///
/// Header names must not start with `x-`: those belong to the broker, which adds and reads
/// them (`x-delivery-count`, `x-death`, …), and they are not handed back on delivery.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Message {
    pub payload: Vec<u8>,
    /// For example `job_id`, `seq` and the W3C `traceparent` of the call that started the job.
    pub headers: BTreeMap<String, String>,
}

impl Message {
    /// A message with `payload` and no headers.
    pub fn new(payload: impl Into<Vec<u8>>) -> Self {
        Self {
            payload: payload.into(),
            headers: BTreeMap::new(),
        }
    }

    /// Adds a header.
    pub fn with_header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.insert(name.into(), value.into());
        self
    }
}

/// Queue settings; every field has a default, so a config file may name only some.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QueueConfig {
    /// Every queue and exchange name starts with it; tests use a unique one.
    pub prefix: String,
    /// A message returned to its queue more than this many times (retried, dropped unsettled,
    /// or left by a consumer that went away) goes to the dead-letter queue instead, so it is
    /// delivered at most `delivery_limit + 1` times: RabbitMQ's `x-delivery-limit`.
    pub delivery_limit: u32,
    /// At most this many unsettled deliveries per lane and consumer.
    pub prefetch: u16,
    /// First delay before reconnecting or retrying a publish; it doubles from there.
    pub reconnect_initial_delay_ms: u64,
    /// Longest delay between reconnection attempts.
    pub reconnect_max_delay_ms: u64,
    /// How long a publish keeps retrying through lost connections before it returns
    /// [`QueueError::Unavailable`].
    pub publish_timeout_ms: u64,
    /// AMQP heartbeat asked of the broker (0: the broker's). A consumer that stops answering
    /// loses its connection after about two intervals, and its unacknowledged deliveries go
    /// back to their queues for other consumers; a URL's own `heartbeat` wins.
    pub heartbeat_secs: u16,
}

impl Default for QueueConfig {
    fn default() -> Self {
        Self {
            prefix: "userimport".into(),
            delivery_limit: 5,
            prefetch: 4,
            reconnect_initial_delay_ms: 100,
            reconnect_max_delay_ms: 5_000,
            publish_timeout_ms: 30_000,
            heartbeat_secs: 10,
        }
    }
}

const MAX_BATCH_GROUP_LEN: usize = 64;
const MAX_PREFIX_LEN: usize = 100;
const MAX_SHORT_STRING_LEN: usize = 255;

impl QueueConfig {
    /// The queue of `lane`: `{prefix}.chunks.{group}.critical` or `….normal`.
    pub fn queue_name(&self, lane: &Lane) -> String {
        format!("{}.chunks.{lane}", self.prefix)
    }

    /// The dead-letter queue: `{prefix}.chunks.dead`.
    pub fn dead_letter_queue_name(&self) -> String {
        format!("{}.chunks.dead", self.prefix)
    }

    /// The lanes' dead-letter exchange: `{prefix}.dead-letter`.
    pub fn dead_letter_exchange_name(&self) -> String {
        format!("{}.dead-letter", self.prefix)
    }

    /// The events exchange: `{prefix}.events`.
    pub fn events_exchange_name(&self) -> String {
        format!("{}.events", self.prefix)
    }

    /// The lane whose queue is `queue_name`, if it is one of this prefix's lane queues.
    pub fn lane_of_queue(&self, queue_name: &str) -> Option<Lane> {
        let rest = queue_name
            .strip_prefix(self.prefix.as_str())?
            .strip_prefix(".chunks.")?;
        let (group, critical) = if let Some(group) = rest.strip_suffix(".critical") {
            (group, true)
        } else {
            (rest.strip_suffix(".normal")?, false)
        };
        validate_batch_group(group).ok()?;
        Some(Lane::new(group, critical))
    }

    /// How reconnects and publish retries wait: the shared policy, without a limit of its
    /// own (the broker is waited for as long as the process runs; a publish has its deadline).
    fn reconnect_policy(&self) -> RetryPolicy {
        let initial = Duration::from_millis(self.reconnect_initial_delay_ms.max(1));
        RetryPolicy {
            initial,
            max_delay: Duration::from_millis(self.reconnect_max_delay_ms.max(1)).max(initial),
            max_attempts: 0,
            max_elapsed: Duration::MAX,
        }
    }

    fn validate(&self) -> Result<(), QueueError> {
        let valid_chars = self
            .prefix
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
        if self.prefix.is_empty() || self.prefix.len() > MAX_PREFIX_LEN || !valid_chars {
            return Err(QueueError::invalid(
                "prefix",
                format!(
                    "{:?} must be 1 to {MAX_PREFIX_LEN} letters, digits, '-', '_' or '.'",
                    self.prefix
                ),
            ));
        }
        if self.prefetch == 0 {
            return Err(QueueError::invalid("prefetch", "must be at least 1"));
        }
        Ok(())
    }
}

/// What a caller of the queue must decide on.
#[derive(Debug, thiserror::Error)]
pub enum QueueError {
    /// The broker cannot be reached or the connection dropped: retry with backoff.
    #[error("the queue is unavailable")]
    Unavailable(#[source] anyhow::Error),
    /// The broker refused a publish: it nacked it, or no queue could take it.
    #[error("the broker rejected the message: {0}")]
    Rejected(String),
    /// The delivery's channel or consumer is gone (or the queue was closed); the broker puts
    /// an unsettled message back by itself, so a caller settling a delivery may ignore this.
    #[error("the delivery's channel is closed; its message goes back to the queue")]
    Closed,
    /// A lane, header or setting is not usable.
    #[error("invalid {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
    /// The broker refused the topology: a queue or exchange exists with other arguments
    /// (a different delivery limit, say), or access was refused. Retrying will not help.
    #[error("the broker refused the queue topology: {0}")]
    Topology(String),
}

impl QueueError {
    fn invalid(field: &'static str, reason: impl Into<String>) -> Self {
        Self::Invalid {
            field,
            reason: reason.into(),
        }
    }

    /// True when trying again later may succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, Self::Unavailable(_) | Self::Rejected(_))
    }
}

/// A chunk queue: lanes per batch group, a dead-letter queue, and an events exchange.
///
/// Object-safe: the service holds an `Arc<dyn ChunkQueue>`.
#[async_trait]
pub trait ChunkQueue: Send + Sync {
    /// Publishes and returns once the broker confirmed it (publisher confirms); declares the
    /// lane's queue on first use. Retries through lost connections for
    /// [`QueueConfig::publish_timeout_ms`]; a retried publish may be delivered twice.
    async fn publish(&self, lane: &Lane, message: Message) -> Result<(), QueueError>;

    /// Consumes the given batch groups (critical and normal lanes of each). Whenever
    /// deliveries of a critical lane and a normal lane are both waiting, critical ones come
    /// first; at most `prefetch` unacknowledged deliveries per lane.
    async fn consume(&self, batch_groups: &[String]) -> Result<Box<dyn Consumer>, QueueError>;

    /// How many consumers (workers) take `lane`'s messages now; 0 when nobody does (or its
    /// queue was never declared), so a job for a batch group no worker serves can say so.
    async fn consumers(&self, lane: &Lane) -> Result<u32, QueueError>;

    /// Consumes the dead-letter queue (messages over the delivery limit, or rejected).
    async fn consume_dead_letters(&self) -> Result<Box<dyn Consumer>, QueueError>;

    /// Publishes an event (routing key such as `job.completed`) to the events exchange,
    /// confirmed. An event nobody has bound a queue for is dropped by the broker, not an error.
    async fn publish_event(&self, routing_key: &str, message: Message) -> Result<(), QueueError>;

    /// Stops every consumer (their `next` returns `None`) and closes connections. Unsettled
    /// deliveries go back to their queues.
    async fn close(&self);
}

/// A stream of deliveries.
#[async_trait]
pub trait Consumer: Send {
    /// The next delivery; `None` once the queue is closed. Cancel-safe: dropping the future
    /// loses no delivery. A lost connection is re-established inside (with backoff), so an
    /// error here is one retrying will not fix, such as [`QueueError::Topology`].
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>>;
}

/// Why a message reached the dead-letter queue.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DeadLetterReason {
    /// A consumer rejected it ([`Delivery::reject`]).
    Rejected,
    /// It went back to its queue more than [`QueueConfig::delivery_limit`] times.
    DeliveryLimit,
    /// Another reason the broker gave (`expired`, `maxlen`).
    Other(String),
}

impl DeadLetterReason {
    fn parse(reason: &str) -> Self {
        match reason {
            "rejected" => Self::Rejected,
            "delivery_limit" => Self::DeliveryLimit,
            other => Self::Other(other.to_owned()),
        }
    }
}

/// One delivered message. Settle it with [`ack`](Self::ack), [`retry`](Self::retry) or
/// [`reject`](Self::reject); dropped unsettled, it goes back to its queue like a retry.
#[derive(Debug)]
pub struct Delivery {
    pub payload: Vec<u8>,
    /// The headers it was published with.
    pub headers: BTreeMap<String, String>,
    /// The lane it came from; for a dead letter, the lane it was dead-lettered from.
    pub lane: Option<Lane>,
    /// 1 on first delivery, counting every return to the queue since.
    pub delivery_count: u32,
    /// Set on deliveries of the dead-letter queue.
    pub dead_letter_reason: Option<DeadLetterReason>,
    settler: Settler,
}

impl Delivery {
    /// Acknowledges: the message is done and never comes back.
    pub async fn ack(self) -> Result<(), QueueError> {
        self.settle(Settlement::Ack).await
    }

    /// Puts the message back in its queue; counts toward the delivery limit, past which it
    /// goes to the dead-letter queue.
    pub async fn retry(self) -> Result<(), QueueError> {
        self.settle(Settlement::Retry).await
    }

    /// Sends the message to the dead-letter queue now (a permanent failure). A dead letter
    /// rejected again is discarded.
    pub async fn reject(self) -> Result<(), QueueError> {
        self.settle(Settlement::Reject).await
    }

    async fn settle(mut self, settlement: Settlement) -> Result<(), QueueError> {
        match self.settler.0.take() {
            Some(settle) => settle.settle(settlement).await,
            None => Err(QueueError::Closed),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Settlement {
    Ack,
    Retry,
    Reject,
}

/// How an implementation settles one delivery.
#[async_trait]
trait Settle: Send + Sync {
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<(), QueueError>;
    /// The delivery was dropped unsettled: put it back like a retry, without waiting.
    fn abandon(self: Box<Self>);
}

struct Settler(Option<Box<dyn Settle>>);

impl Drop for Settler {
    fn drop(&mut self) {
        if let Some(settle) = self.0.take() {
            settle.abandon();
        }
    }
}

impl fmt::Debug for Settler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(if self.0.is_some() {
            "Settler(unsettled)"
        } else {
            "Settler(settled)"
        })
    }
}

pub(crate) fn validate_batch_group(group: &str) -> Result<(), QueueError> {
    let valid_chars = group
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.'));
    if group.is_empty() || group.len() > MAX_BATCH_GROUP_LEN || !valid_chars {
        return Err(QueueError::invalid(
            "batch_group",
            format!(
                "{group:?} must be 1 to {MAX_BATCH_GROUP_LEN} letters, digits, '-', '_' or '.'"
            ),
        ));
    }
    Ok(())
}

fn validate_headers(message: &Message) -> Result<(), QueueError> {
    for name in message.headers.keys() {
        if name.is_empty() || name.len() > MAX_SHORT_STRING_LEN {
            return Err(QueueError::invalid(
                "header",
                format!("name {name:?} must be 1 to {MAX_SHORT_STRING_LEN} bytes"),
            ));
        }
        if name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")) {
            return Err(QueueError::invalid(
                "header",
                format!("name {name:?} starts with x-, which the broker reserves"),
            ));
        }
    }
    Ok(())
}

fn validate_routing_key(routing_key: &str) -> Result<(), QueueError> {
    if routing_key.is_empty() || routing_key.len() > MAX_SHORT_STRING_LEN {
        return Err(QueueError::invalid(
            "routing_key",
            format!("{routing_key:?} must be 1 to {MAX_SHORT_STRING_LEN} bytes"),
        ));
    }
    Ok(())
}

/// The batch groups of a `consume` call, checked and without duplicates, in the given order.
fn distinct_batch_groups(batch_groups: &[String]) -> Result<Vec<String>, QueueError> {
    if batch_groups.is_empty() {
        return Err(QueueError::invalid("batch_groups", "name at least one"));
    }
    let mut distinct = Vec::with_capacity(batch_groups.len());
    for group in batch_groups {
        validate_batch_group(group)?;
        if !distinct.contains(group) {
            distinct.push(group.clone());
        }
    }
    Ok(distinct)
}

/// Metric names and labels, in one place.
mod metric {
    pub(super) fn published(lane: &'static str) {
        metrics::counter!("queue_published_total", "lane" => lane).increment(1);
    }
    pub(super) fn event_published() {
        metrics::counter!("queue_events_published_total").increment(1);
    }
    pub(super) fn publish_retried() {
        metrics::counter!("queue_publish_retries_total").increment(1);
    }
    pub(super) fn delivered(lane: &'static str) {
        metrics::counter!("queue_delivered_total", "lane" => lane).increment(1);
    }
    pub(super) fn acked(lane: &'static str) {
        metrics::counter!("queue_acked_total", "lane" => lane).increment(1);
    }
    pub(super) fn retried(lane: &'static str) {
        metrics::counter!("queue_retried_total", "lane" => lane).increment(1);
    }
    pub(super) fn dead_lettered(reason: &'static str) {
        metrics::counter!("queue_dead_lettered_total", "reason" => reason).increment(1);
    }
    pub(super) fn reconnected(connection: &'static str) {
        metrics::counter!("queue_reconnects_total", "connection" => connection).increment(1);
    }
    pub(super) fn consumer_resubscribed() {
        metrics::counter!("queue_consumer_resubscribes_total").increment(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lane_queue_names_parse_back_to_their_lane() {
        let config = QueueConfig::default();
        for lane in [
            Lane::critical("a.b"),
            Lane::normal("x-1"),
            Lane::normal("critical"),
        ] {
            let name = config.queue_name(&lane);
            assert_eq!(config.lane_of_queue(&name), Some(lane));
        }
        assert_eq!(
            config.queue_name(&Lane::critical("eu")),
            "userimport.chunks.eu.critical"
        );
        assert_eq!(config.lane_of_queue("userimport.chunks.dead"), None);
        assert_eq!(config.lane_of_queue("other.chunks.eu.normal"), None);
    }

    #[test]
    fn headers_named_like_the_brokers_are_refused() {
        let message = Message::new("p").with_header("X-Death", "1");
        assert!(matches!(
            validate_headers(&message),
            Err(QueueError::Invalid {
                field: "header",
                ..
            })
        ));
        assert!(validate_headers(&Message::new("p").with_header("job_id", "j")).is_ok());
    }
}
