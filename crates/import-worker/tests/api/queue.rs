//! The chunk queue's conformance suite: every behaviour runs on the in-process queue
//! (`…::on_memory`) and on RabbitMQ (`…::on_rabbitmq`, skipped without
//! USERIMPORT_TEST_AMQP_URL unless CI=true), then RabbitMQ-only checks of the topology and of
//! reconnecting. Each RabbitMQ test uses a prefix of its own and deletes its queues and
//! exchanges afterwards, even when it fails.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use import_worker::queue::{
    ChunkQueue, Consumer, DeadLetterReason, Delivery, Lane, MemoryQueue, Message, QueueConfig,
    QueueError, RabbitQueue,
};
use lapin::options::{BasicGetOptions, QueueBindOptions, QueueDeclareOptions};
use lapin::types::{AMQPValue, FieldTable};

use crate::rabbit::{Vhost, rabbitmqctl};

/// The batch groups tests use (cleanup deletes their queues).
const GROUPS: [&str; 2] = ["a", "b"];
/// Longest wait for something that must arrive.
const ARRIVES_WITHIN: Duration = Duration::from_secs(20);
/// How long a test watches for something that must not arrive.
const QUIET_FOR: Duration = Duration::from_millis(300);

// ---- the suite, on both queues --------------------------------------------------------------

/// Generates `NAME::on_memory` and `NAME::on_rabbitmq` for each `async fn NAME(setup: Setup)`.
macro_rules! on_both_queues {
    ($($name:ident),* $(,)?) => {$(
        mod $name {
            #[tokio::test]
            async fn on_memory() {
                super::$name(super::Setup::Memory).await;
            }

            #[tokio::test]
            async fn on_rabbitmq() {
                if let Some(setup) = super::Setup::rabbitmq() {
                    super::$name(setup).await;
                }
            }
        }
    )*};
}

on_both_queues!(
    published_messages_are_delivered_with_their_headers_and_acked_ones_never_come_back,
    an_unsettled_delivery_comes_back_with_delivery_count_2_when_its_consumer_goes_away,
    a_delivery_dropped_unsettled_comes_back_with_its_count_incremented,
    retry_counts_toward_the_delivery_limit_and_the_message_ends_dead_lettered_with_its_headers,
    reject_dead_letters_at_once_and_a_rejected_dead_letter_is_discarded,
    critical_deliveries_overtake_normal_ones_waiting_in_the_same_group,
    no_more_than_prefetch_deliveries_are_unacked_at_once_per_lane,
    batch_groups_are_isolated,
    events_are_published,
    bad_batch_groups_and_broker_reserved_headers_are_refused,
);

async fn published_messages_are_delivered_with_their_headers_and_acked_ones_never_come_back(
    setup: Setup,
) {
    let queue = setup.start(config()).await;
    let lane = Lane::normal("a");
    for seq in 0..3 {
        queue.publish(&lane, chunk("job-1", seq)).await.unwrap();
    }

    let mut consumer = queue.consume(&groups(&["a"])).await.unwrap();
    for seq in 0..3 {
        let delivery = next(&mut consumer).await;
        let expected = chunk("job-1", seq);
        assert_eq!(delivery.payload, expected.payload);
        assert_eq!(delivery.headers, expected.headers);
        assert_eq!(delivery.lane, Some(lane.clone()));
        assert_eq!(delivery.delivery_count, 1);
        assert_eq!(delivery.dead_letter_reason, None);
        delivery.ack().await.unwrap();
    }
    assert_quiet(&mut consumer).await;
    drop(consumer);

    let mut consumer = queue.consume(&groups(&["a"])).await.unwrap();
    assert_quiet(&mut consumer).await;
    queue.finish().await;
}

async fn an_unsettled_delivery_comes_back_with_delivery_count_2_when_its_consumer_goes_away(
    setup: Setup,
) {
    let queue = setup.start(config()).await;
    queue
        .publish(&Lane::normal("a"), chunk("job-1", 7))
        .await
        .unwrap();

    let mut first = queue.consume(&groups(&["a"])).await.unwrap();
    let unsettled = next(&mut first).await;
    assert_eq!(unsettled.delivery_count, 1);
    drop(first); // the worker crashed

    let mut second = queue.consume(&groups(&["a"])).await.unwrap();
    let again = next(&mut second).await;
    assert_eq!(again.payload, chunk("job-1", 7).payload);
    assert_eq!(again.headers, chunk("job-1", 7).headers);
    assert_eq!(again.delivery_count, 2);
    // The first delivery's channel is gone: settling it is refused, harmlessly.
    assert!(matches!(unsettled.ack().await, Err(QueueError::Closed)));
    again.ack().await.unwrap();
    assert_quiet(&mut second).await;
    queue.finish().await;
}

async fn a_delivery_dropped_unsettled_comes_back_with_its_count_incremented(setup: Setup) {
    let queue = setup.start(config()).await;
    queue
        .publish(&Lane::critical("a"), chunk("job-1", 0))
        .await
        .unwrap();

    let mut consumer = queue.consume(&groups(&["a"])).await.unwrap();
    drop(next(&mut consumer).await);
    let again = next(&mut consumer).await;
    assert_eq!(again.delivery_count, 2);
    assert_eq!(again.lane, Some(Lane::critical("a")));
    again.ack().await.unwrap();
    assert_quiet(&mut consumer).await;
    queue.finish().await;
}

async fn retry_counts_toward_the_delivery_limit_and_the_message_ends_dead_lettered_with_its_headers(
    setup: Setup,
) {
    let queue = setup
        .start(QueueConfig {
            delivery_limit: 2,
            ..config()
        })
        .await;
    let poison = chunk("job-9", 3);
    queue
        .publish(&Lane::critical("a"), poison.clone())
        .await
        .unwrap();

    let mut consumer = queue.consume(&groups(&["a"])).await.unwrap();
    // Delivered delivery_limit + 1 times, then dead-lettered.
    for expected_count in 1..=3 {
        let delivery = next(&mut consumer).await;
        assert_eq!(delivery.delivery_count, expected_count);
        delivery.retry().await.unwrap();
    }
    assert_quiet(&mut consumer).await;

    let mut dead_letters = queue.consume_dead_letters().await.unwrap();
    let dead = next(&mut dead_letters).await;
    assert_eq!(dead.payload, poison.payload);
    assert_eq!(dead.headers, poison.headers);
    assert_eq!(dead.lane, Some(Lane::critical("a")));
    assert_eq!(
        dead.dead_letter_reason,
        Some(DeadLetterReason::DeliveryLimit)
    );
    assert_eq!(dead.delivery_count, 1);
    dead.ack().await.unwrap();
    assert_quiet(&mut dead_letters).await;
    queue.finish().await;
}

async fn reject_dead_letters_at_once_and_a_rejected_dead_letter_is_discarded(setup: Setup) {
    let queue = setup.start(config()).await;
    let unreadable = Message::new(b"\xff not protobuf".to_vec()).with_header("job_id", "job-2");
    queue
        .publish(&Lane::normal("b"), unreadable.clone())
        .await
        .unwrap();

    let mut consumer = queue.consume(&groups(&["b"])).await.unwrap();
    next(&mut consumer).await.reject().await.unwrap();
    assert_quiet(&mut consumer).await;

    let mut dead_letters = queue.consume_dead_letters().await.unwrap();
    let dead = next(&mut dead_letters).await;
    assert_eq!(dead.payload, unreadable.payload);
    assert_eq!(dead.headers, unreadable.headers);
    assert_eq!(dead.lane, Some(Lane::normal("b")));
    assert_eq!(dead.dead_letter_reason, Some(DeadLetterReason::Rejected));
    assert_eq!(dead.delivery_count, 1);
    // The dead-letter queue has no dead-letter queue of its own.
    dead.reject().await.unwrap();
    assert_quiet(&mut dead_letters).await;
    queue.finish().await;
}

async fn critical_deliveries_overtake_normal_ones_waiting_in_the_same_group(setup: Setup) {
    let queue = setup
        .start(QueueConfig {
            prefetch: 1,
            ..config()
        })
        .await;
    for seq in 0..20 {
        queue
            .publish(&Lane::normal("a"), chunk("normal", seq))
            .await
            .unwrap();
    }
    for seq in 0..3 {
        queue
            .publish(&Lane::critical("a"), chunk("critical", seq))
            .await
            .unwrap();
    }

    let mut consumer = queue.consume(&groups(&["a"])).await.unwrap();
    let mut order = Vec::new();
    for _ in 0..23 {
        let delivery = next(&mut consumer).await;
        order.push(format!(
            "{}/{}",
            delivery.headers["job_id"], delivery.headers["seq"]
        ));
        delivery.ack().await.unwrap();
    }
    let expected: Vec<String> = (0..3)
        .map(|seq| format!("critical/{seq}"))
        .chain((0..20).map(|seq| format!("normal/{seq}")))
        .collect();
    assert_eq!(order, expected);
    assert_quiet(&mut consumer).await;
    queue.finish().await;
}

async fn no_more_than_prefetch_deliveries_are_unacked_at_once_per_lane(setup: Setup) {
    let queue = setup
        .start(QueueConfig {
            prefetch: 3,
            ..config()
        })
        .await;
    for seq in 0..5 {
        queue
            .publish(&Lane::critical("a"), chunk("critical", seq))
            .await
            .unwrap();
        queue
            .publish(&Lane::normal("a"), chunk("normal", seq))
            .await
            .unwrap();
    }

    let mut consumer = queue.consume(&groups(&["a"])).await.unwrap();
    let mut in_hand = Vec::new();
    for _ in 0..6 {
        in_hand.push(next(&mut consumer).await);
    }
    let critical_in_hand = in_hand.iter().filter(|d| is_critical(d)).count();
    assert_eq!(critical_in_hand, 3, "each lane is at its prefetch");
    assert_quiet(&mut consumer).await;

    // Room on one lane lets exactly that lane deliver again.
    let normal = in_hand.iter().position(|d| !is_critical(d)).unwrap();
    in_hand.swap_remove(normal).ack().await.unwrap();
    let delivery = next(&mut consumer).await;
    assert!(!is_critical(&delivery));
    in_hand.push(delivery);
    assert_quiet(&mut consumer).await;

    let critical = in_hand.iter().position(is_critical).unwrap();
    in_hand.swap_remove(critical).ack().await.unwrap();
    let delivery = next(&mut consumer).await;
    assert!(is_critical(&delivery));
    in_hand.push(delivery);
    assert_quiet(&mut consumer).await;

    for delivery in in_hand {
        delivery.ack().await.unwrap();
    }
    queue.finish().await;
}

async fn batch_groups_are_isolated(setup: Setup) {
    let queue = setup.start(config()).await;
    for seq in 0..3 {
        queue
            .publish(&Lane::normal("b"), chunk("job-b", seq))
            .await
            .unwrap();
    }
    queue
        .publish(&Lane::critical("b"), chunk("job-b", 3))
        .await
        .unwrap();
    for seq in 0..2 {
        queue
            .publish(&Lane::normal("a"), chunk("job-a", seq))
            .await
            .unwrap();
    }

    let mut group_a = queue.consume(&groups(&["a"])).await.unwrap();
    for _ in 0..2 {
        let delivery = next(&mut group_a).await;
        assert_eq!(delivery.headers["job_id"], "job-a");
        assert_eq!(delivery.lane, Some(Lane::normal("a")));
        delivery.ack().await.unwrap();
    }
    assert_quiet(&mut group_a).await;

    let mut group_b = queue.consume(&groups(&["b"])).await.unwrap();
    for _ in 0..4 {
        let delivery = next(&mut group_b).await;
        assert_eq!(delivery.headers["job_id"], "job-b");
        assert_eq!(delivery.lane.as_ref().unwrap().batch_group, "b");
        delivery.ack().await.unwrap();
    }
    assert_quiet(&mut group_b).await;
    assert_quiet(&mut group_a).await;
    queue.finish().await;
}

async fn events_are_published(setup: Setup) {
    let queue = setup.start(config()).await;
    let completed = Message::new(b"job-1 done".to_vec()).with_header("job_id", "job-1");
    let failed = Message::new(b"job-2 failed".to_vec()).with_header("job_id", "job-2");
    queue
        .publish_event("job.completed", completed.clone())
        .await
        .unwrap();
    queue
        .publish_event("job.failed", failed.clone())
        .await
        .unwrap();

    let events = queue.wait_for_events(2).await;
    assert_eq!(
        events,
        vec![
            ("job.completed".to_owned(), completed),
            ("job.failed".to_owned(), failed)
        ]
    );
    queue.finish().await;
}

async fn bad_batch_groups_and_broker_reserved_headers_are_refused(setup: Setup) {
    let queue = setup.start(config()).await;
    let reserved = Message::new(b"p".to_vec()).with_header("x-death", "forged");
    for result in [
        queue.publish(&Lane::normal("a"), reserved.clone()).await,
        queue.publish(&Lane::normal(""), chunk("j", 0)).await,
        queue
            .publish(&Lane::normal("has space"), chunk("j", 0))
            .await,
        queue.publish_event("job.completed", reserved).await,
    ] {
        assert!(
            matches!(result, Err(QueueError::Invalid { .. })),
            "{result:?}"
        );
    }
    assert!(matches!(
        queue.consume(&[]).await.err(),
        Some(QueueError::Invalid { .. })
    ));
    queue.finish().await;
}

// ---- RabbitMQ only ---------------------------------------------------------------------------

#[tokio::test]
async fn queues_are_quorum_queues_with_the_delivery_limit_named_under_the_prefix() {
    let Some(setup) = Setup::rabbitmq() else {
        return;
    };
    let config = QueueConfig {
        delivery_limit: 7,
        ..config()
    };
    let prefix = config.prefix.clone();
    let queue = setup.start(config).await;
    queue
        .publish(&Lane::critical("a"), chunk("j", 0))
        .await
        .unwrap();
    let consumer = queue.consume(&groups(&["a"])).await.unwrap();

    let listed = rabbitmqctl(&[
        "list_queues",
        "-q",
        "--formatter",
        "json",
        "name",
        "type",
        "arguments",
    ])
    .await;
    let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
    let ours: BTreeMap<String, &serde_json::Value> = listed
        .iter()
        .filter_map(|q| {
            let name = q["name"].as_str()?;
            name.starts_with(&format!("{prefix}.chunks."))
                .then(|| (name.to_owned(), q))
        })
        .collect();
    let names: Vec<&str> = ours.keys().map(String::as_str).collect();
    let expected_names = [
        format!("{prefix}.chunks.a.critical"),
        format!("{prefix}.chunks.a.normal"),
        format!("{prefix}.chunks.dead"),
    ];
    assert_eq!(
        names,
        expected_names
            .iter()
            .map(String::as_str)
            .collect::<Vec<_>>()
    );
    for (name, listed) in &ours {
        assert_eq!(listed["type"], "quorum", "{name}");
        let arguments: BTreeMap<String, serde_json::Value> = listed["arguments"]
            .as_array()
            .unwrap()
            .iter()
            .map(|argument| {
                (
                    argument[0].as_str().unwrap().to_owned(),
                    argument[2].clone(),
                )
            })
            .collect();
        if name.ends_with(".dead") {
            assert!(
                !arguments.contains_key("x-delivery-limit"),
                "{name}: {arguments:?}"
            );
            assert!(
                !arguments.contains_key("x-dead-letter-exchange"),
                "{name}: {arguments:?}"
            );
        } else {
            assert_eq!(arguments["x-delivery-limit"], 7, "{name}");
            assert_eq!(
                arguments["x-dead-letter-exchange"],
                format!("{prefix}.dead-letter")
            );
            assert_eq!(arguments["x-dead-letter-strategy"], "at-least-once");
            assert_eq!(arguments["x-overflow"], "reject-publish");
        }
    }

    let exchanges = rabbitmqctl(&[
        "list_exchanges",
        "-q",
        "--formatter",
        "json",
        "name",
        "type",
        "durable",
    ])
    .await;
    let exchanges: Vec<serde_json::Value> = serde_json::from_str(&exchanges).unwrap();
    let ours: BTreeMap<&str, (&str, bool)> = exchanges
        .iter()
        .filter_map(|e| {
            let name = e["name"].as_str()?;
            name.starts_with(&format!("{prefix}.")).then(|| {
                (
                    name,
                    (e["type"].as_str().unwrap(), e["durable"].as_bool().unwrap()),
                )
            })
        })
        .collect();
    let dead_letter = format!("{prefix}.dead-letter");
    let events = format!("{prefix}.events");
    assert_eq!(
        ours,
        BTreeMap::from([
            (dead_letter.as_str(), ("fanout", true)),
            (events.as_str(), ("topic", true))
        ])
    );
    drop(consumer);
    queue.finish().await;
}

#[tokio::test]
async fn a_consumer_keeps_receiving_and_a_publisher_publishes_again_after_the_broker_closes_every_connection()
 {
    let Some(Setup::RabbitMq { url }) = Setup::rabbitmq() else {
        return;
    };
    // A virtual host of its own, so closing its connections leaves other tests alone.
    let vhost = Vhost::create(&url).await;
    let setup = Setup::RabbitMq {
        url: vhost.url.clone(),
    };
    let queue = setup.start(config()).await;
    let lane = Lane::normal("a");
    queue.publish(&lane, chunk("job-1", 0)).await.unwrap();
    let mut consumer = queue.consume(&groups(&["a"])).await.unwrap();
    let in_hand = next(&mut consumer).await;
    assert_eq!(in_hand.delivery_count, 1);

    vhost.close_all_connections().await;

    // The consumer resubscribes by itself; the broker put the unsettled message back.
    let again = next(&mut consumer).await;
    assert_eq!(again.headers["seq"], "0");
    assert_eq!(again.delivery_count, 2);
    again.ack().await.unwrap();
    assert!(matches!(in_hand.ack().await, Err(QueueError::Closed)));

    // The publisher reconnects by itself too.
    queue.publish(&lane, chunk("job-1", 1)).await.unwrap();
    let after = next(&mut consumer).await;
    assert_eq!(after.headers["seq"], "1");
    assert_eq!(after.delivery_count, 1);
    after.ack().await.unwrap();
    assert_quiet(&mut consumer).await;
    queue.finish().await;
}

#[tokio::test]
async fn a_lane_declared_with_another_delivery_limit_is_a_topology_error() {
    let Some(setup) = Setup::rabbitmq() else {
        return;
    };
    let config = config();
    let queue = setup.start(config.clone()).await;
    queue
        .publish(&Lane::normal("a"), chunk("j", 0))
        .await
        .unwrap();

    let Setup::RabbitMq { url } = &setup else {
        unreachable!()
    };
    let other = RabbitQueue::connect(
        url,
        QueueConfig {
            delivery_limit: config.delivery_limit + 1,
            ..config
        },
    )
    .await
    .unwrap();
    let refused = other.publish(&Lane::normal("a"), chunk("j", 1)).await;
    assert!(
        matches!(refused, Err(QueueError::Topology(_))),
        "{refused:?}"
    );
    assert!(matches!(
        other.consume(&groups(&["a"])).await.err(),
        Some(QueueError::Topology(_))
    ));
    other.close().await;
    queue.finish().await;
}

#[tokio::test]
async fn deleting_the_topology_removes_the_queues_and_exchanges_under_the_prefix() {
    let Some(Setup::RabbitMq { url }) = Setup::rabbitmq() else {
        return;
    };
    let config = config();
    let prefix = config.prefix.clone();
    let queue = RabbitQueue::connect(&url, config).await.unwrap();
    for group in GROUPS {
        queue
            .publish(&Lane::critical(group), chunk("j", 0))
            .await
            .unwrap();
        queue
            .publish(&Lane::normal(group), chunk("j", 1))
            .await
            .unwrap();
    }
    assert_eq!(names_under(&prefix).await.len(), 4 + 1 + 2);

    queue.delete_topology(&groups(&GROUPS)).await.unwrap();
    assert_eq!(names_under(&prefix).await, Vec::<String>::new());
    queue.close().await;
}

// ---- harness ---------------------------------------------------------------------------------

/// Which queue a test runs on.
enum Setup {
    Memory,
    RabbitMq { url: String },
}

impl Setup {
    fn rabbitmq() -> Option<Self> {
        test_support::init();
        test_support::amqp_url_or_skip().map(|url| Self::RabbitMq { url })
    }

    async fn start(&self, config: QueueConfig) -> TestQueue {
        match self {
            Setup::Memory => {
                let memory = MemoryQueue::new(config);
                TestQueue {
                    queue: Arc::new(memory.clone()),
                    events: Events::Memory(memory),
                    _cleanup: None,
                    _servers: None,
                }
            }
            Setup::RabbitMq { url } => {
                let servers = test_support::shared_servers().await;
                let cleanup = DeleteTopologyOnDrop {
                    url: url.clone(),
                    config: config.clone(),
                };
                let queue = RabbitQueue::connect(url, config.clone()).await.unwrap();
                // A queue of the test's own receives every event.
                let connection =
                    lapin::Connection::connect(url, lapin::ConnectionProperties::default())
                        .await
                        .unwrap();
                let channel = connection.create_channel().await.unwrap();
                let name = format!("{}.test-events", config.prefix);
                channel
                    .queue_declare(
                        name.as_str().into(),
                        QueueDeclareOptions {
                            exclusive: true,
                            auto_delete: true,
                            ..QueueDeclareOptions::default()
                        },
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                channel
                    .queue_bind(
                        name.as_str().into(),
                        config.events_exchange_name().into(),
                        "#".into(),
                        QueueBindOptions::default(),
                        FieldTable::default(),
                    )
                    .await
                    .unwrap();
                TestQueue {
                    queue: Arc::new(queue),
                    events: Events::RabbitMq(Box::new(EventsQueue {
                        _connection: connection,
                        channel,
                        queue: name,
                    })),
                    _cleanup: Some(cleanup),
                    _servers: Some(servers),
                }
            }
        }
    }
}

struct TestQueue {
    queue: Arc<dyn ChunkQueue>,
    events: Events,
    _cleanup: Option<DeleteTopologyOnDrop>,
    /// Last, so the broker is shared until the topology is gone.
    _servers: Option<test_support::ServersGuard>,
}

enum Events {
    Memory(MemoryQueue),
    RabbitMq(Box<EventsQueue>),
}

/// A queue of the test's own bound to the events exchange with `#`.
struct EventsQueue {
    _connection: lapin::Connection,
    channel: lapin::Channel,
    queue: String,
}

impl std::ops::Deref for TestQueue {
    type Target = dyn ChunkQueue;
    fn deref(&self) -> &Self::Target {
        self.queue.as_ref()
    }
}

impl TestQueue {
    /// The first `count` events published, polling the broker for at most `ARRIVES_WITHIN`.
    async fn wait_for_events(&self, count: usize) -> Vec<(String, Message)> {
        match &self.events {
            Events::Memory(memory) => memory.events(),
            Events::RabbitMq(events_queue) => {
                let EventsQueue { channel, queue, .. } = events_queue.as_ref();
                let deadline = tokio::time::Instant::now() + ARRIVES_WITHIN;
                let mut events = Vec::new();
                while events.len() < count {
                    let got = channel
                        .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                        .await
                        .unwrap();
                    match got {
                        Some(got) => events.push((
                            got.delivery.routing_key.to_string(),
                            message_of(&got.delivery),
                        )),
                        None => {
                            assert!(
                                tokio::time::Instant::now() < deadline,
                                "only {events:?} arrived"
                            );
                            tokio::time::sleep(Duration::from_millis(20)).await;
                        }
                    }
                }
                events
            }
        }
    }

    async fn finish(self) {
        self.queue.close().await;
    }
}

fn message_of(delivery: &lapin::message::Delivery) -> Message {
    let mut message = Message::new(delivery.data.clone());
    for (name, value) in delivery
        .properties
        .headers()
        .iter()
        .flat_map(FieldTable::inner)
    {
        if let AMQPValue::LongString(value) = value {
            message = message.with_header(name.as_str(), String::from_utf8_lossy(value.as_bytes()));
        }
    }
    message
}

/// Deletes a RabbitMQ test's queues and exchanges when it ends, also when it fails.
struct DeleteTopologyOnDrop {
    url: String,
    config: QueueConfig,
}

impl Drop for DeleteTopologyOnDrop {
    fn drop(&mut self) {
        let (url, config) = (self.url.clone(), self.config.clone());
        // Drop cannot await, and the test's runtime may be the current thread: use another.
        let cleaned = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let queue = RabbitQueue::connect(&url, config).await?;
                let deleted = queue.delete_topology(&groups(&GROUPS)).await;
                queue.close().await;
                deleted
            })
        })
        .join();
        if !matches!(cleaned, Ok(Ok(()))) {
            eprintln!("cleanup of the test's queues failed: {cleaned:?}");
        }
    }
}

/// A configuration with a prefix of the test's own.
fn config() -> QueueConfig {
    QueueConfig {
        prefix: format!("userimport-test-{}", uuid::Uuid::new_v4().simple()),
        ..QueueConfig::default()
    }
}

fn groups(names: &[&str]) -> Vec<String> {
    names.iter().map(|name| (*name).to_owned()).collect()
}

fn chunk(job_id: &str, seq: u32) -> Message {
    Message::new(format!("chunk {job_id}/{seq}").into_bytes())
        .with_header("job_id", job_id)
        .with_header("seq", seq.to_string())
        .with_header(
            "traceparent",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
        )
}

fn is_critical(delivery: &Delivery) -> bool {
    delivery.lane.as_ref().unwrap().critical
}

async fn next(consumer: &mut Box<dyn Consumer>) -> Delivery {
    tokio::time::timeout(ARRIVES_WITHIN, consumer.next())
        .await
        .expect("a delivery arrives")
        .expect("the consumer is open")
        .unwrap()
}

/// Nothing arrives for a while (all a negative check can say).
async fn assert_quiet(consumer: &mut Box<dyn Consumer>) {
    if let Ok(delivery) = tokio::time::timeout(QUIET_FOR, consumer.next()).await {
        panic!("nothing should arrive, got {delivery:?}");
    }
}

/// Queues and exchanges whose names start with `{prefix}.`.
async fn names_under(prefix: &str) -> Vec<String> {
    let mut names = Vec::new();
    for listing in ["list_queues", "list_exchanges"] {
        let listed = rabbitmqctl(&[listing, "-q", "--formatter", "json", "name"]).await;
        let listed: Vec<serde_json::Value> = serde_json::from_str(&listed).unwrap();
        names.extend(
            listed
                .iter()
                .filter_map(|entry| entry["name"].as_str())
                .filter(|name| name.starts_with(&format!("{prefix}.")))
                .map(str::to_owned),
        );
    }
    names
}

#[tokio::test]
async fn an_in_process_consumer_of_every_group_takes_the_chunks_of_any_group_and_counts_as_its_consumer()
 {
    let queue = MemoryQueue::new(QueueConfig::default());
    let nightly = Lane::normal("nightly");
    assert_eq!(queue.consumers(&nightly).await.unwrap(), 0, "nobody yet");
    let mut consumer = queue
        .consume(&[import_worker::queue::EVERY_GROUP.to_owned()])
        .await
        .unwrap();
    assert_eq!(queue.consumers(&nightly).await.unwrap(), 1);
    queue
        .publish(&nightly, Message::new("n").with_header("seq", "1"))
        .await
        .unwrap();
    queue
        .publish(&Lane::critical("eu"), Message::new("c"))
        .await
        .unwrap();
    let first = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        first.payload, b"c",
        "critical lanes first, whatever their group"
    );
    first.ack().await.unwrap();
    let second = tokio::time::timeout(Duration::from_secs(5), consumer.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(second.lane, Some(nightly.clone()));
    second.ack().await.unwrap();
    drop(consumer);
    assert_eq!(
        queue.consumers(&nightly).await.unwrap(),
        0,
        "gone with its consumer"
    );
}
