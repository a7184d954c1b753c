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
        // Named by replica too, so an operator (or a test) can tell whose deliveries are unacked.
        let replica = crate::replica();
        let slot = |role: &'static str| Slot {
            role,
            url: url.clone(),
            name: format!("{} import-worker {role} on {replica}", config.prefix),
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

mod connection;
mod consume;
mod publish;
mod topology;

use connection::*;
use consume::*;
use publish::*;
use topology::*;
