//! The RabbitMQ queue (lapin): quorum queues, publisher confirms, manual acks, reconnects.
//!
//! Two connections, one for publishing and one for consuming (RabbitMQ's advice: flow control
//! on a publishing connection then never holds up acks). Publishes share one channel in
//! confirm mode; each consumer has a channel of its own, with `basic.qos(prefetch)` applied
//! per consumer, and one broker consumer per lane.
//!
//! Reconnecting is done here rather than by lapin's automatic recovery: a lost connection is
//! dropped and replaced, consumers open a new channel, declare their queues again and
//! resubscribe. Unsettled deliveries of a dead channel are put back by the broker; settling
//! them afterwards returns [`QueueError::Closed`].

use std::collections::{BTreeMap, HashSet};
use std::future::poll_fn;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::task::Poll;
use std::time::Duration;

use anyhow::{Context as _, anyhow};
use async_trait::async_trait;
use futures::{FutureExt as _, StreamExt as _};
use lapin::options::{
    BasicAckOptions, BasicConsumeOptions, BasicNackOptions, BasicPublishOptions, BasicQosOptions,
    BasicRejectOptions, ConfirmSelectOptions, ExchangeDeclareOptions, ExchangeDeleteOptions,
    QueueBindOptions, QueueDeclareOptions, QueueDeleteOptions,
};
use lapin::protocol::{AMQPErrorKind, AMQPSoftError};
use lapin::types::{AMQPValue, FieldTable, LongString};
use lapin::{
    Acker, BasicProperties, Channel, Confirmation, Connection, ConnectionProperties, ExchangeKind,
};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use super::{
    ChunkQueue, Consumer, DeadLetterReason, Delivery, Lane, Message, QueueConfig, QueueError,
    Settle, Settlement, Settler, distinct_batch_groups, metric, validate_batch_group,
    validate_headers, validate_routing_key,
};

/// How long one connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);
/// While a critical lane is known to have a delivery coming, the consumer waits for it in
/// steps this long, asking the broker between steps whether any is still waiting.
const CRITICAL_WAIT_STEP: Duration = Duration::from_millis(20);
/// It never holds normal deliveries back longer than this for an expected critical one.
const CRITICAL_WAIT_LIMIT: Duration = Duration::from_secs(2);
/// Key of the shared exchanges and dead-letter queue in the declared set (never a queue name).
const BASE_TOPOLOGY: &str = "";

/// The chunk queue on RabbitMQ.
pub struct RabbitQueue {
    shared: Arc<Shared>,
}

struct Shared {
    config: QueueConfig,
    publishing: Slot,
    consuming: Slot,
    publish_channel: tokio::sync::Mutex<Option<Channel>>,
    /// Queues (and the base topology) declared by this process: a publish declares its lane
    /// only the first time.
    declared: Mutex<HashSet<String>>,
    shutdown: CancellationToken,
}

impl RabbitQueue {
    /// Connects and declares the dead-letter exchange and queue and the events exchange, so a
    /// wrong URL, credentials or conflicting topology show at start-up. Lane queues are
    /// declared when first used. Returns [`QueueError::Unavailable`] if the broker cannot be
    /// reached; retrying is up to the caller.
    pub async fn connect(url: &str, config: QueueConfig) -> Result<Self, QueueError> {
        config.validate()?;
        let url = with_heartbeat(url, config.heartbeat_secs);
        let slot = |role: &'static str| Slot {
            role,
            url: url.clone(),
            name: format!("{} import-worker {role}", config.prefix),
            state: tokio::sync::Mutex::new(SlotState::default()),
        };
        let shared = Arc::new(Shared {
            publishing: slot("publisher"),
            consuming: slot("consumer"),
            config,
            publish_channel: tokio::sync::Mutex::new(None),
            declared: Mutex::new(HashSet::new()),
            shutdown: CancellationToken::new(),
        });
        let channel = shared.publish_channel().await?;
        shared.ensure_declared(&channel, Declaration::Base).await?;
        Ok(Self { shared })
    }

    /// Deletes the lane queues of `batch_groups`, the dead-letter queue and both exchanges,
    /// with the messages in them. For tests and decommissioning; stop consumers first, or
    /// they declare their queues again when they resubscribe.
    pub async fn delete_topology(&self, batch_groups: &[String]) -> Result<(), QueueError> {
        let config = &self.shared.config;
        let connection = self.shared.publishing.connection().await?;
        let channel = connection.create_channel().await.map_err(classify)?;
        for group in batch_groups {
            validate_batch_group(group)?;
            for critical in [true, false] {
                let queue = config.queue_name(&Lane::new(group.clone(), critical));
                channel
                    .queue_delete(queue.as_str().into(), QueueDeleteOptions::default())
                    .await
                    .map_err(classify)?;
            }
        }
        channel
            .queue_delete(
                config.dead_letter_queue_name().into(),
                QueueDeleteOptions::default(),
            )
            .await
            .map_err(classify)?;
        for exchange in [
            config.dead_letter_exchange_name(),
            config.events_exchange_name(),
        ] {
            channel
                .exchange_delete(exchange.into(), ExchangeDeleteOptions::default())
                .await
                .map_err(classify)?;
        }
        self.shared.lock_declared().clear();
        let _ = channel.close(200, "topology deleted".into()).await;
        Ok(())
    }
}

#[async_trait]
impl ChunkQueue for RabbitQueue {
    async fn publish(&self, lane: &Lane, message: Message) -> Result<(), QueueError> {
        validate_batch_group(&lane.batch_group)?;
        validate_headers(&message)?;
        let queue = self.shared.config.queue_name(lane);
        self.shared
            .publish_confirmed(Target::Lane(&queue), &message)
            .await?;
        metric::published(lane.label());
        Ok(())
    }

    async fn consume(&self, batch_groups: &[String]) -> Result<Box<dyn Consumer>, QueueError> {
        let groups = distinct_batch_groups(batch_groups)?;
        let config = &self.shared.config;
        let specs = [true, false]
            .into_iter()
            .flat_map(|critical| {
                groups.iter().map(move |group| {
                    let lane = Lane::new(group.clone(), critical);
                    LaneSpec {
                        queue: config.queue_name(&lane),
                        label: lane.label(),
                        lane: Some(lane),
                        critical,
                    }
                })
            })
            .collect();
        RabbitConsumer::start(self.shared.clone(), specs).await
    }

    async fn consumers(&self, lane: &Lane) -> Result<u32, QueueError> {
        validate_batch_group(&lane.batch_group)?;
        let name = self.shared.config.queue_name(lane);
        let connection = self.shared.publishing.connection().await?;
        // A channel of its own: a passive declare of a missing queue closes its channel.
        let channel = connection.create_channel().await.map_err(classify)?;
        let passive = QueueDeclareOptions {
            passive: true,
            ..QueueDeclareOptions::default()
        };
        let declared = channel
            .queue_declare(name.as_str().into(), passive, FieldTable::default())
            .await;
        let count = match declared {
            Ok(queue) => queue.consumer_count(),
            Err(error) if soft_error(&error) == Some(&AMQPSoftError::NOTFOUND) => 0,
            Err(error) => return Err(classify(error)),
        };
        let _ = channel.close(200, "done".into()).await;
        Ok(count)
    }

    async fn consume_dead_letters(&self) -> Result<Box<dyn Consumer>, QueueError> {
        let spec = LaneSpec {
            queue: self.shared.config.dead_letter_queue_name(),
            lane: None,
            critical: false,
            label: "dead",
        };
        RabbitConsumer::start(self.shared.clone(), vec![spec]).await
    }

    async fn publish_event(&self, routing_key: &str, message: Message) -> Result<(), QueueError> {
        validate_routing_key(routing_key)?;
        validate_headers(&message)?;
        let exchange = self.shared.config.events_exchange_name();
        self.shared
            .publish_confirmed(Target::Event(&exchange, routing_key), &message)
            .await?;
        metric::event_published();
        Ok(())
    }

    async fn close(&self) {
        self.shared.shutdown.cancel();
        self.shared.publish_channel.lock().await.take();
        self.shared.publishing.close().await;
        self.shared.consuming.close().await;
    }
}

// ---- connections ----------------------------------------------------------------------------

/// One connection, replaced when it is lost. Callers that find it lost together wait for one
/// reconnection.
struct Slot {
    role: &'static str,
    url: String,
    /// Shown by `rabbitmqctl list_connections client_properties` and the management UI.
    name: String,
    state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
struct SlotState {
    connection: Option<Arc<Connection>>,
    connected_before: bool,
}

impl Slot {
    async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
        let mut state = self.state.lock().await;
        if let Some(connection) = &state.connection
            && connection.status().connected()
        {
            return Ok(connection.clone());
        }
        state.connection = None;
        let properties =
            ConnectionProperties::default().with_connection_name(self.name.clone().into());
        let connection =
            tokio::time::timeout(CONNECT_TIMEOUT, Connection::connect(&self.url, properties))
                .await
                .map_err(|_| {
                    QueueError::Unavailable(anyhow!("connecting to the broker timed out"))
                })?
                .map_err(|error| {
                    QueueError::Unavailable(
                        anyhow::Error::new(error).context("connecting to the broker"),
                    )
                })?;
        if state.connected_before {
            metric::reconnected(self.role);
            tracing::info!(connection = self.role, "queue connection re-established");
        }
        state.connected_before = true;
        let connection = Arc::new(connection);
        state.connection = Some(connection.clone());
        Ok(connection)
    }

    async fn close(&self) {
        let connection = self.state.lock().await.connection.take();
        if let Some(connection) = connection {
            // A connection caught half-closed (a channel closing as we go) may never answer
            // the close; the process must still stop.
            let closing = connection.close(200, "shutting down".into());
            if tokio::time::timeout(std::time::Duration::from_secs(5), closing)
                .await
                .is_err()
            {
                tracing::warn!(
                    role = self.role,
                    "the broker did not confirm the close in time"
                );
            }
        }
    }
}

// ---- topology -------------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Declaration<'a> {
    /// The dead-letter exchange and queue and the events exchange.
    Base,
    Lane(&'a str),
}

fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

fn lane_arguments(config: &QueueConfig) -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), text("quorum"));
    arguments.insert(
        "x-delivery-limit".into(),
        AMQPValue::LongLongInt(i64::from(config.delivery_limit)),
    );
    arguments.insert(
        "x-dead-letter-exchange".into(),
        text(&config.dead_letter_exchange_name()),
    );
    // A dead letter stays in its queue until the dead-letter queue has confirmed it, rather
    // than being lost if that fails (RabbitMQ ≥ 3.10). It needs the reject-publish overflow
    // behaviour; without a length limit that never rejects anything.
    arguments.insert("x-dead-letter-strategy".into(), text("at-least-once"));
    arguments.insert("x-overflow".into(), text("reject-publish"));
    arguments
}

fn dead_letter_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), text("quorum"));
    arguments
}

fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a lane's queue and returns how many messages wait in it.
async fn declare_lane_queue(
    channel: &Channel,
    config: &QueueConfig,
    queue: &str,
) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(queue.into(), durable_queue(), lane_arguments(config))
        .await?;
    Ok(declared.message_count())
}

async fn declare_base(channel: &Channel, config: &QueueConfig) -> lapin::Result<()> {
    let durable = ExchangeDeclareOptions {
        durable: true,
        ..ExchangeDeclareOptions::default()
    };
    let dead_letter_exchange = config.dead_letter_exchange_name();
    let dead_letter_queue = config.dead_letter_queue_name();
    channel
        .exchange_declare(
            dead_letter_exchange.as_str().into(),
            ExchangeKind::Fanout,
            durable,
            FieldTable::default(),
        )
        .await?;
    channel
        .queue_declare(
            dead_letter_queue.as_str().into(),
            durable_queue(),
            dead_letter_queue_arguments(),
        )
        .await?;
    channel
        .queue_bind(
            dead_letter_queue.into(),
            dead_letter_exchange.into(),
            "".into(),
            QueueBindOptions::default(),
            FieldTable::default(),
        )
        .await?;
    channel
        .exchange_declare(
            config.events_exchange_name().into(),
            ExchangeKind::Topic,
            durable,
            FieldTable::default(),
        )
        .await
}

/// How many messages wait in `queue`, not counting those delivered and unsettled.
async fn ready_count(channel: &Channel, queue: &str) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(
            queue.into(),
            QueueDeclareOptions {
                passive: true,
                ..QueueDeclareOptions::default()
            },
            FieldTable::default(),
        )
        .await?;
    Ok(declared.message_count())
}

fn soft_error(error: &lapin::Error) -> Option<&AMQPSoftError> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// Sorts a broker error into what the caller must decide.
fn classify(error: lapin::Error) -> QueueError {
    if let (
        Some(
            AMQPSoftError::PRECONDITIONFAILED
            | AMQPSoftError::ACCESSREFUSED
            | AMQPSoftError::RESOURCELOCKED,
        ),
        lapin::ErrorKind::ProtocolError(amqp),
    ) = (soft_error(&error), error.kind())
    {
        return QueueError::Topology(amqp.get_message().to_string());
    }
    QueueError::Unavailable(anyhow::Error::new(error))
}

/// An error with its causes, for a log line.
fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

// ---- publishing -----------------------------------------------------------------------------

#[derive(Clone, Copy)]
enum Target<'a> {
    /// A lane's queue, through the default exchange, mandatory: no queue is an error.
    Lane(&'a str),
    /// The events exchange with a routing key; nobody listening is not an error.
    Event(&'a str, &'a str),
}

enum Failure {
    /// The broker returned the message: no queue to route it to.
    Returned(String),
    /// The broker said the exchange does not exist.
    NotFound(QueueError),
    Nacked,
    Failed(QueueError),
}

impl Shared {
    fn lock_declared(&self) -> MutexGuard<'_, HashSet<String>> {
        self.declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    async fn ensure_declared(
        &self,
        channel: &Channel,
        declaration: Declaration<'_>,
    ) -> Result<(), QueueError> {
        let key = match declaration {
            Declaration::Base => BASE_TOPOLOGY,
            Declaration::Lane(queue) => queue,
        };
        if self.lock_declared().contains(key) {
            return Ok(());
        }
        match declaration {
            Declaration::Base => declare_base(channel, &self.config).await,
            Declaration::Lane(queue) => declare_lane_queue(channel, &self.config, queue)
                .await
                .map(drop),
        }
        .map_err(classify)?;
        self.lock_declared().insert(key.to_owned());
        Ok(())
    }

    fn forget_declared(&self, key: &str) {
        self.lock_declared().remove(key);
    }

    /// The channel publishes go through, in confirm mode; a new one if it was lost.
    async fn publish_channel(&self) -> Result<Channel, QueueError> {
        let mut current = self.publish_channel.lock().await;
        if let Some(channel) = current.as_ref()
            && channel.status().connected()
        {
            return Ok(channel.clone());
        }
        *current = None;
        let connection = self.publishing.connection().await?;
        let channel = connection.create_channel().await.map_err(classify)?;
        channel
            .confirm_select(ConfirmSelectOptions::default())
            .await
            .map_err(classify)?;
        *current = Some(channel.clone());
        Ok(channel)
    }

    /// Publishes until the broker confirms, retrying on a new channel (with backoff, for
    /// `publish_timeout_ms`) when the connection or channel is lost.
    async fn publish_confirmed(
        &self,
        target: Target<'_>,
        message: &Message,
    ) -> Result<(), QueueError> {
        let deadline = Instant::now() + Duration::from_millis(self.config.publish_timeout_ms);
        let mut backoff = self.config.reconnect_policy().start();
        let mut declared_again = false;
        let mut headers = FieldTable::default();
        for (name, value) in &message.headers {
            headers.insert(name.as_str().into(), text(value));
        }
        // Persistent, though quorum queues store every message anyway.
        let properties = BasicProperties::default()
            .with_delivery_mode(2)
            .with_headers(headers);
        loop {
            if self.shutdown.is_cancelled() {
                return Err(QueueError::Closed);
            }
            // A blocked connection (a broker alarm) or a lost confirm must not hold the
            // caller past the deadline.
            let attempt = self.try_publish(target, &message.payload, properties.clone());
            let outcome = tokio::time::timeout_at(deadline, attempt)
                .await
                .unwrap_or_else(|_| {
                    Err(Failure::Failed(QueueError::Unavailable(anyhow!(
                        "the broker confirmed nothing within {} ms",
                        self.config.publish_timeout_ms
                    ))))
                });
            let error = match outcome {
                Ok(()) => return Ok(()),
                // The queue or exchange may have been deleted since this process declared it:
                // declare it again, once.
                Err(Failure::Returned(_) | Failure::NotFound(_)) if !declared_again => {
                    declared_again = true;
                    self.forget_declared(match target {
                        Target::Lane(queue) => queue,
                        Target::Event(..) => BASE_TOPOLOGY,
                    });
                    continue;
                }
                Err(Failure::Returned(reason)) => {
                    return Err(QueueError::Rejected(format!("no queue took it ({reason})")));
                }
                Err(Failure::NotFound(error)) => return Err(error),
                Err(Failure::Nacked) => {
                    return Err(QueueError::Rejected("the broker nacked it".into()));
                }
                Err(Failure::Failed(error @ QueueError::Unavailable(_))) => error,
                Err(Failure::Failed(error)) => return Err(error),
            };
            let Some(delay) = backoff
                .next_delay(None)
                .filter(|delay| Instant::now() + *delay <= deadline)
            else {
                return Err(error);
            };
            metric::publish_retried();
            tracing::warn!(
                error = error_chain(&error),
                delay_ms = delay.as_millis(),
                "queue publish failed, retrying on a new channel"
            );
            tokio::select! {
                () = tokio::time::sleep(delay) => {}
                () = self.shutdown.cancelled() => return Err(QueueError::Closed),
            }
        }
    }

    async fn try_publish(
        &self,
        target: Target<'_>,
        payload: &[u8],
        properties: BasicProperties,
    ) -> Result<(), Failure> {
        let channel = self.publish_channel().await.map_err(Failure::Failed)?;
        let (exchange, routing_key, mandatory) = match target {
            Target::Lane(queue) => {
                self.ensure_declared(&channel, Declaration::Lane(queue))
                    .await
                    .map_err(Failure::Failed)?;
                ("", queue, true)
            }
            Target::Event(exchange, routing_key) => {
                self.ensure_declared(&channel, Declaration::Base)
                    .await
                    .map_err(Failure::Failed)?;
                (exchange, routing_key, false)
            }
        };
        let failed = |error: lapin::Error| {
            if soft_error(&error) == Some(&AMQPSoftError::NOTFOUND) {
                Failure::NotFound(QueueError::Topology(error.to_string()))
            } else {
                Failure::Failed(classify(error))
            }
        };
        let confirmation = channel
            .basic_publish(
                exchange.into(),
                routing_key.into(),
                BasicPublishOptions {
                    mandatory,
                    immediate: false,
                },
                payload,
                properties,
            )
            .await
            .map_err(failed)?
            .await
            .map_err(failed)?;
        match confirmation {
            Confirmation::Ack(None) => Ok(()),
            Confirmation::Ack(Some(returned)) => {
                Err(Failure::Returned(returned.reply_text.to_string()))
            }
            Confirmation::Nack(_) => Err(Failure::Nacked),
            Confirmation::NotRequested => Err(Failure::Failed(QueueError::Unavailable(anyhow!(
                "the publishing channel is not in confirm mode"
            )))),
        }
    }
}

// ---- consuming ------------------------------------------------------------------------------

/// A queue a consumer reads.
#[derive(Clone)]
struct LaneSpec {
    queue: String,
    /// `None` for the dead-letter queue.
    lane: Option<Lane>,
    critical: bool,
    label: &'static str,
}

struct RabbitConsumer {
    shared: Arc<Shared>,
    /// Critical lanes first.
    specs: Vec<LaneSpec>,
    session: Option<Session>,
    backoff: service_runtime::retry::Backoff,
}

impl RabbitConsumer {
    async fn start(
        shared: Arc<Shared>,
        specs: Vec<LaneSpec>,
    ) -> Result<Box<dyn Consumer>, QueueError> {
        if shared.shutdown.is_cancelled() {
            return Err(QueueError::Closed);
        }
        let session = Session::open(&shared, &specs).await?;
        let backoff = shared.config.reconnect_policy().start();
        Ok(Box::new(Self {
            shared,
            specs,
            session: Some(session),
            backoff,
        }))
    }

    /// Waits before the next attempt; false if the queue closed meanwhile.
    async fn pause(&mut self) -> bool {
        // The policy has no limit: a delay always comes.
        let delay = self.backoff.next_delay(None).unwrap_or_default();
        tokio::select! {
            () = tokio::time::sleep(delay) => true,
            () = self.shared.shutdown.cancelled() => false,
        }
    }
}

#[async_trait]
impl Consumer for RabbitConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        loop {
            if self.shared.shutdown.is_cancelled() {
                self.session = None;
                return None;
            }
            let session = match &mut self.session {
                Some(session) => session,
                None => {
                    let opened = tokio::select! {
                        () = self.shared.shutdown.cancelled() => return None,
                        opened = Session::open(&self.shared, &self.specs) => opened,
                    };
                    match opened {
                        Ok(session) => {
                            tracing::info!(
                                queues = self.specs.len(),
                                "queue consumer subscribed again"
                            );
                            self.session.insert(session)
                        }
                        Err(error @ QueueError::Unavailable(_)) => {
                            tracing::warn!(
                                error = error_chain(&error),
                                "queue consumer cannot subscribe, retrying"
                            );
                            if !self.pause().await {
                                return None;
                            }
                            continue;
                        }
                        Err(error) => return Some(Err(error)),
                    }
                }
            };
            let next = tokio::select! {
                () = self.shared.shutdown.cancelled() => return None,
                next = session.next_delivery(&self.shared.config) => next,
            };
            match next {
                Ok(delivery) => {
                    self.backoff = self.shared.config.reconnect_policy().start();
                    return Some(Ok(delivery));
                }
                Err(error) => {
                    self.session = None;
                    if self.shared.shutdown.is_cancelled() {
                        return None;
                    }
                    metric::consumer_resubscribed();
                    tracing::warn!(
                        error = format!("{error:#}"),
                        "queue consumer lost its channel, subscribing again"
                    );
                    if !self.pause().await {
                        return None;
                    }
                }
            }
        }
    }
}

/// One channel with a broker consumer per lane. Dropping it closes the channel, and the
/// broker puts its unsettled deliveries back.
struct Session {
    /// Deliveries hold it weakly: once the session is gone, settling one is refused.
    link: Arc<Link>,
    lanes: Vec<SessionLane>,
    /// `lanes[..critical]` are the critical lanes.
    critical: usize,
    /// Rotates the first lane polled within a tier, so batch groups take turns.
    turn: usize,
}

struct Link {
    channel: Channel,
    /// One `ready_count` question at a time on the channel.
    asking: tokio::sync::Mutex<()>,
}

impl Link {
    async fn ready_count(&self, queue: &str) -> lapin::Result<u32> {
        let _turn = self.asking.lock().await;
        ready_count(&self.channel, queue).await
    }
}

struct SessionLane {
    spec: LaneSpec,
    stream: lapin::Consumer,
    state: Arc<LaneState>,
}

#[derive(Default)]
struct LaneState {
    /// Deliveries handed out and not settled yet.
    unsettled: AtomicUsize,
    /// Critical deliveries the broker is known to be about to send: while any are, normal
    /// deliveries wait (for at most `CRITICAL_WAIT_LIMIT`).
    expected: AtomicUsize,
}

impl LaneState {
    fn expect_one_more(&self, prefetch: usize) {
        let _ = self
            .expected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some((n + 1).min(prefetch))
            });
    }

    fn arrived(&self) {
        let _ = self
            .expected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }

    fn settled(&self) {
        let _ = self
            .unsettled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

impl Session {
    async fn open(shared: &Shared, specs: &[LaneSpec]) -> Result<Self, QueueError> {
        let config = &shared.config;
        let prefetch = usize::from(config.prefetch);
        let connection = shared.consuming.connection().await?;
        let channel = connection.create_channel().await.map_err(classify)?;
        channel
            .basic_qos(config.prefetch, BasicQosOptions { global: false })
            .await
            .map_err(classify)?;
        let has_normal = specs
            .iter()
            .any(|spec| spec.lane.is_some() && !spec.critical);
        let mut lanes = Vec::with_capacity(specs.len());
        for spec in specs {
            // Declared again on every subscription: the queue may have been deleted.
            let ready = if spec.lane.is_some() {
                declare_lane_queue(&channel, config, &spec.queue).await
            } else {
                declare_base(&channel, config).await.map(|()| 0)
            }
            .map_err(classify)?;
            let state = LaneState::default();
            if spec.critical && has_normal {
                // Messages waiting now go to this consumer once it subscribes.
                state.expected.store(
                    usize::try_from(ready).unwrap_or(usize::MAX).min(prefetch),
                    Ordering::SeqCst,
                );
            }
            let stream = channel
                .basic_consume(
                    spec.queue.as_str().into(),
                    "".into(),
                    BasicConsumeOptions::default(),
                    FieldTable::default(),
                )
                .await
                .map_err(classify)?;
            lanes.push(SessionLane {
                spec: spec.clone(),
                stream,
                state: Arc::new(state),
            });
        }
        for spec in specs {
            shared.lock_declared().insert(spec.queue.clone());
        }
        Ok(Self {
            link: Arc::new(Link {
                channel,
                asking: tokio::sync::Mutex::new(()),
            }),
            critical: specs.iter().filter(|spec| spec.critical).count(),
            lanes,
            turn: 0,
        })
    }

    /// The next delivery, critical lanes first; an error when the channel or a broker
    /// consumer ended.
    async fn next_delivery(&mut self, config: &QueueConfig) -> anyhow::Result<Delivery> {
        let prefetch = usize::from(config.prefetch);
        let mut waited = Duration::ZERO;
        loop {
            if let Some(found) = self.poll_lanes(true).now_or_never() {
                return self.accept(found, config);
            }
            // A critical delivery is on its way (the lane had messages waiting when it last
            // had room): wait for it rather than hand out a normal one that is already here.
            let expected: Vec<usize> = self.lanes[..self.critical]
                .iter()
                .enumerate()
                .filter(|(_, lane)| {
                    lane.state.expected.load(Ordering::SeqCst) > 0
                        && lane.state.unsettled.load(Ordering::SeqCst) < prefetch
                })
                .map(|(index, _)| index)
                .collect();
            if expected.is_empty() || waited >= CRITICAL_WAIT_LIMIT {
                for lane in &self.lanes[..self.critical] {
                    lane.state.expected.store(0, Ordering::SeqCst);
                }
                let found = self.poll_lanes(false).await;
                return self.accept(found, config);
            }
            if let Ok(found) = tokio::time::timeout(CRITICAL_WAIT_STEP, self.poll_lanes(true)).await
            {
                return self.accept(found, config);
            }
            waited += CRITICAL_WAIT_STEP;
            // Another consumer may have taken it: stop waiting once none is left.
            for index in expected {
                let lane = &self.lanes[index];
                let ready = self
                    .link
                    .ready_count(&lane.spec.queue)
                    .await
                    .context("asking how many critical messages wait")?;
                if ready == 0 {
                    lane.state.expected.store(0, Ordering::SeqCst);
                }
            }
        }
    }

    /// Polls the lanes' broker consumers, critical ones first, and returns the first item
    /// one has (a delivery, an error, or its end).
    fn poll_lanes(
        &mut self,
        critical_only: bool,
    ) -> impl Future<Output = (usize, Option<lapin::Result<lapin::message::Delivery>>)> + '_ {
        let turn = self.turn;
        self.turn = self.turn.wrapping_add(1);
        let critical = self.critical;
        let lanes = &mut self.lanes;
        poll_fn(move |cx| {
            let tiers = [(0, critical), (critical, lanes.len())];
            let tiers = if critical_only {
                &tiers[..1]
            } else {
                &tiers[..]
            };
            for &(start, end) in tiers {
                let len = end - start;
                for offset in 0..len {
                    let index = start + (offset + turn) % len;
                    if let Poll::Ready(item) = lanes[index].stream.poll_next_unpin(cx) {
                        return Poll::Ready((index, item));
                    }
                }
            }
            Poll::Pending
        })
    }

    fn accept(
        &self,
        (index, item): (usize, Option<lapin::Result<lapin::message::Delivery>>),
        config: &QueueConfig,
    ) -> anyhow::Result<Delivery> {
        let lane = &self.lanes[index];
        let delivery = match item {
            Some(Ok(delivery)) => delivery,
            Some(Err(error)) => {
                return Err(
                    anyhow::Error::new(error).context(format!("consuming {}", lane.spec.queue))
                );
            }
            None => {
                return Err(anyhow!(
                    "the broker cancelled the consumer of {}",
                    lane.spec.queue
                ));
            }
        };
        if lane.spec.critical {
            lane.state.arrived();
        }
        lane.state.unsettled.fetch_add(1, Ordering::SeqCst);
        metric::delivered(lane.spec.label);
        let received = Received::read(delivery.properties.headers().as_ref());
        let (lane_of_message, dead_letter_reason) = match &lane.spec.lane {
            Some(own) => (Some(own.clone()), None),
            None => (
                received
                    .first_death_queue
                    .as_deref()
                    .and_then(|queue| config.lane_of_queue(queue)),
                Some(DeadLetterReason::parse(
                    received.first_death_reason.as_deref().unwrap_or("unknown"),
                )),
            ),
        };
        let has_normal = self.lanes.len() > self.critical;
        let delivery_count = received.returns.saturating_add(1);
        Ok(Delivery {
            payload: delivery.data,
            headers: received.headers,
            lane: lane_of_message,
            delivery_count,
            dead_letter_reason,
            settler: Settler(Some(Box::new(RabbitSettler {
                acker: delivery.acker,
                link: Arc::downgrade(&self.link),
                state: lane.state.clone(),
                probe: (lane.spec.critical && has_normal).then(|| lane.spec.queue.clone()),
                label: lane.spec.label,
                dead_letter_queue: lane.spec.lane.is_none(),
                delivery_count,
                delivery_limit: config.delivery_limit,
                prefetch: usize::from(config.prefetch),
            }))),
        })
    }
}

/// `url` with `heartbeat=<secs>` in its query, unless it names one (or `secs` is 0).
fn with_heartbeat(url: &str, secs: u16) -> String {
    if secs == 0 || url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={secs}")
}

/// What a delivery's headers say.
#[derive(Default)]
struct Received {
    /// The publisher's headers (none of the broker's `x-` ones).
    headers: BTreeMap<String, String>,
    /// `x-delivery-count`: returns to the queue so far (absent on a first delivery).
    returns: u32,
    first_death_queue: Option<String>,
    first_death_reason: Option<String>,
}

impl Received {
    fn read(table: Option<&FieldTable>) -> Self {
        let mut received = Self::default();
        for (name, value) in table.into_iter().flat_map(FieldTable::inner) {
            match name.as_str() {
                "x-delivery-count" => received.returns = number(value).unwrap_or(0),
                "x-first-death-queue" => received.first_death_queue = string(value),
                "x-first-death-reason" => received.first_death_reason = string(value),
                name if name.get(..2).is_some_and(|p| p.eq_ignore_ascii_case("x-")) => {}
                name => {
                    if let Some(value) = string(value) {
                        received.headers.insert(name.to_owned(), value);
                    }
                }
            }
        }
        received
    }
}

fn string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        AMQPValue::Boolean(flag) => Some(flag.to_string()),
        other => number::<i128>(other).map(|n| n.to_string()),
    }
}

fn number<T: TryFrom<i128>>(value: &AMQPValue) -> Option<T> {
    let n = match *value {
        AMQPValue::ShortShortInt(n) => i128::from(n),
        AMQPValue::ShortShortUInt(n) => i128::from(n),
        AMQPValue::ShortInt(n) => i128::from(n),
        AMQPValue::ShortUInt(n) => i128::from(n),
        AMQPValue::LongInt(n) => i128::from(n),
        AMQPValue::LongUInt(n) => i128::from(n),
        AMQPValue::LongLongInt(n) => i128::from(n),
        AMQPValue::Timestamp(n) => i128::from(n),
        _ => return None,
    };
    T::try_from(n).ok()
}

struct RabbitSettler {
    acker: Acker,
    link: Weak<Link>,
    state: Arc<LaneState>,
    /// A critical lane's queue, asked before settling whether more wait (see `LaneState`).
    probe: Option<String>,
    label: &'static str,
    dead_letter_queue: bool,
    delivery_count: u32,
    delivery_limit: u32,
    prefetch: usize,
}

impl RabbitSettler {
    /// Counts what the broker does with a message put back or rejected.
    fn count_outcome(&self, settlement: Settlement) {
        match settlement {
            Settlement::Ack => metric::acked(self.label),
            Settlement::Retry => {
                metric::retried(self.label);
                if !self.dead_letter_queue && self.delivery_count > self.delivery_limit {
                    metric::dead_lettered("delivery_limit");
                }
            }
            Settlement::Reject if !self.dead_letter_queue => metric::dead_lettered("rejected"),
            Settlement::Reject => {}
        }
    }
}

#[async_trait]
impl Settle for RabbitSettler {
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<(), QueueError> {
        let result = async {
            // The consumer that took it is gone (its channel closed): the broker has it back.
            let link = self.link.upgrade().ok_or(QueueError::Closed)?;
            if !self.acker.usable() {
                return Err(QueueError::Closed);
            }
            if let Some(queue) = &self.probe {
                // Asked before settling: once settled, the broker may send the next one at
                // once, and a count taken after that would miss it.
                let more_waiting = match settlement {
                    Settlement::Retry => true,
                    Settlement::Ack | Settlement::Reject => {
                        link.ready_count(queue).await.is_ok_and(|ready| ready > 0)
                    }
                };
                if more_waiting {
                    self.state.expect_one_more(self.prefetch);
                }
            }
            drop(link);
            let settled = match settlement {
                Settlement::Ack => self.acker.ack(BasicAckOptions::default()).await,
                Settlement::Retry => {
                    self.acker
                        .nack(BasicNackOptions {
                            multiple: false,
                            requeue: true,
                        })
                        .await
                }
                Settlement::Reject => self.acker.reject(BasicRejectOptions { requeue: false }).await,
            };
            match settled {
                Ok(true) => Ok(()),
                Ok(false) => Err(QueueError::Closed),
                Err(error) => {
                    tracing::debug!(error = %error, "settling a delivery failed; its channel is gone");
                    Err(QueueError::Closed)
                }
            }
        }
        .await;
        self.state.settled();
        if result.is_ok() {
            self.count_outcome(settlement);
        }
        result
    }

    fn abandon(self: Box<Self>) {
        self.state.settled();
        if self.link.upgrade().is_none() || !self.acker.usable() {
            return;
        }
        if self.probe.is_some() {
            self.state.expect_one_more(self.prefetch);
        }
        let Ok(runtime) = tokio::runtime::Handle::try_current() else {
            // No runtime to send the nack from: the message comes back when the channel closes.
            return;
        };
        self.count_outcome(Settlement::Retry);
        runtime.spawn(async move {
            let requeue = BasicNackOptions {
                multiple: false,
                requeue: true,
            };
            if let Err(error) = self.acker.nack(requeue).await {
                tracing::debug!(error = %error, "putting back a dropped delivery failed");
            }
        });
    }
}
