//! The in-process queue: RabbitMQ's semantics without a broker, for `userimport dev`.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::pin::pin;
use std::sync::{Arc, Mutex, MutexGuard};

use async_trait::async_trait;
use tokio::sync::Notify;

use super::{
    ChunkQueue, Consumer, DeadLetterReason, Delivery, EVERY_GROUP, Lane, Message, QueueConfig,
    QueueError, Settle, Settlement, Settler, distinct_batch_groups, metric, validate_batch_group,
    validate_headers, validate_routing_key,
};

/// The embedded queue: per-lane FIFO queues in memory, with unsettled tracking, the prefetch
/// bound, the delivery limit, a dead-letter queue and recorded events. Nothing survives the
/// process. Clones share the same queues.
#[derive(Clone)]
pub struct MemoryQueue {
    shared: Arc<Shared>,
}

struct Shared {
    config: QueueConfig,
    state: Mutex<State>,
    /// Woken whenever a delivery may have become available.
    changed: Notify,
}

#[derive(Default)]
struct State {
    lanes: BTreeMap<Lane, VecDeque<Stored>>,
    dead: VecDeque<Stored>,
    events: Vec<(String, Message)>,
    consumers: HashMap<u64, Unsettled>,
    /// What each consumer takes.
    subscriptions: HashMap<u64, Vec<Source>>,
    /// Consumers of every batch group (`["*"]`, for `userimport dev`).
    every_group: std::collections::HashSet<u64>,
    next_id: u64,
    closed: bool,
}

struct Stored {
    message: Message,
    /// Returns to the queue so far (RabbitMQ's `x-delivery-count`).
    returns: u32,
    /// For a dead letter: where it came from and why.
    death: Option<(Lane, DeadLetterReason)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Source {
    Lane(Lane),
    Dead,
}

impl Source {
    fn label(&self) -> &'static str {
        match self {
            Source::Lane(lane) => lane.label(),
            Source::Dead => "dead",
        }
    }
}

/// One consumer's unsettled deliveries, by delivery id.
#[derive(Default)]
struct Unsettled(BTreeMap<u64, (Source, Stored)>);

impl Unsettled {
    fn count(&self, source: &Source) -> usize {
        self.0.values().filter(|(s, _)| s == source).count()
    }
}

impl MemoryQueue {
    /// An empty queue.
    pub fn new(config: QueueConfig) -> Self {
        Self {
            shared: Arc::new(Shared {
                config,
                state: Mutex::new(State::default()),
                changed: Notify::new(),
            }),
        }
    }

    /// The events published so far, oldest first (a test helper).
    pub fn events(&self) -> Vec<(String, Message)> {
        self.shared.lock().events.clone()
    }

    /// How many messages wait in `lane`, not counting unsettled ones (a test helper).
    pub fn ready(&self, lane: &Lane) -> usize {
        self.shared.lock().lanes.get(lane).map_or(0, VecDeque::len)
    }

    /// How many dead letters wait, not counting unsettled ones (a test helper).
    pub fn dead_letters_ready(&self) -> usize {
        self.shared.lock().dead.len()
    }
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock leaves the state consistent (every change is one
        // step), so a poisoned lock is still usable.
        self.state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Puts a message back where it came from, counting the return; past the delivery limit a
    /// lane's message goes to the dead-letter queue instead.
    fn put_back(&self, state: &mut State, source: Source, mut stored: Stored) {
        stored.returns = stored.returns.saturating_add(1);
        match source {
            Source::Lane(lane) if stored.returns > self.config.delivery_limit => {
                metric::dead_lettered("delivery_limit");
                dead_letter(state, lane, DeadLetterReason::DeliveryLimit, stored);
            }
            // Like a quorum queue on RabbitMQ 3.10, a returned message goes first.
            Source::Lane(lane) => state.lanes.entry(lane).or_default().push_front(stored),
            Source::Dead => state.dead.push_front(stored),
        }
    }

    fn settle(
        &self,
        consumer_id: u64,
        delivery_id: u64,
        settlement: Settlement,
    ) -> Result<(), QueueError> {
        let mut state = self.lock();
        let (source, stored) = state
            .consumers
            .get_mut(&consumer_id)
            .and_then(|unsettled| unsettled.0.remove(&delivery_id))
            .ok_or(QueueError::Closed)?;
        let label = source.label();
        match settlement {
            Settlement::Ack => metric::acked(label),
            Settlement::Retry => {
                metric::retried(label);
                self.put_back(&mut state, source, stored);
            }
            Settlement::Reject => match source {
                Source::Lane(lane) => {
                    metric::dead_lettered("rejected");
                    dead_letter(&mut state, lane, DeadLetterReason::Rejected, stored);
                }
                // The dead-letter queue has no dead-letter exchange of its own.
                Source::Dead => {}
            },
        }
        drop(state);
        self.changed.notify_waiters();
        Ok(())
    }
}

fn dead_letter(state: &mut State, lane: Lane, reason: DeadLetterReason, stored: Stored) {
    state.dead.push_back(Stored {
        message: stored.message,
        returns: 0,
        death: Some((lane, reason)),
    });
}

#[async_trait]
impl ChunkQueue for MemoryQueue {
    async fn publish(&self, lane: &Lane, message: Message) -> Result<(), QueueError> {
        validate_batch_group(&lane.batch_group)?;
        validate_headers(&message)?;
        let mut state = self.shared.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        state
            .lanes
            .entry(lane.clone())
            .or_default()
            .push_back(Stored {
                message,
                returns: 0,
                death: None,
            });
        drop(state);
        metric::published(lane.label());
        self.shared.changed.notify_waiters();
        Ok(())
    }

    async fn consume(&self, batch_groups: &[String]) -> Result<Box<dyn Consumer>, QueueError> {
        if batch_groups == [EVERY_GROUP] {
            let mut consumer = self.consumer(Vec::new(), 1);
            consumer.every_group = true;
            self.shared.lock().every_group.insert(consumer.id);
            return Ok(Box::new(consumer));
        }
        let groups = distinct_batch_groups(batch_groups)?;
        // Critical lanes first: the consumer looks at them in this order.
        let sources = [true, false]
            .into_iter()
            .flat_map(|critical| {
                groups
                    .iter()
                    .map(move |group| Source::Lane(Lane::new(group.clone(), critical)))
            })
            .collect();
        Ok(Box::new(self.consumer(sources, groups.len())))
    }

    async fn consume_dead_letters(&self) -> Result<Box<dyn Consumer>, QueueError> {
        Ok(Box::new(self.consumer(vec![Source::Dead], 1)))
    }

    async fn consumers(&self, lane: &Lane) -> Result<u32, QueueError> {
        let wanted = Source::Lane(lane.clone());
        let state = self.shared.lock();
        let count = state
            .subscriptions
            .iter()
            .filter(|(id, sources)| sources.contains(&wanted) || state.every_group.contains(id))
            .count();
        Ok(u32::try_from(count).unwrap_or(u32::MAX))
    }

    async fn publish_event(&self, routing_key: &str, message: Message) -> Result<(), QueueError> {
        validate_routing_key(routing_key)?;
        validate_headers(&message)?;
        let mut state = self.shared.lock();
        if state.closed {
            return Err(QueueError::Closed);
        }
        state.events.push((routing_key.to_owned(), message));
        drop(state);
        metric::event_published();
        Ok(())
    }

    async fn close(&self) {
        self.shared.lock().closed = true;
        self.shared.changed.notify_waiters();
    }
}

impl MemoryQueue {
    fn consumer(&self, sources: Vec<Source>, tier_len: usize) -> MemoryConsumer {
        let mut state = self.shared.lock();
        let id = state.next_id;
        state.next_id += 1;
        state.consumers.insert(id, Unsettled::default());
        state.subscriptions.insert(id, sources.clone());
        MemoryConsumer {
            shared: self.shared.clone(),
            id,
            sources,
            tier_len,
            turn: 0,
            every_group: false,
        }
    }
}

struct MemoryConsumer {
    shared: Arc<Shared>,
    id: u64,
    /// Critical lanes, then normal lanes (each tier `tier_len` long), or the dead-letter queue.
    sources: Vec<Source>,
    tier_len: usize,
    /// Rotates the first lane looked at within a tier, so batch groups take turns.
    turn: usize,
    /// Takes every batch group's lanes, whichever exist now (`sources` is empty then).
    every_group: bool,
}

impl MemoryConsumer {
    fn take(&mut self, state: &mut State) -> Option<Delivery> {
        let prefetch = usize::from(self.shared.config.prefetch);
        let turn = self.turn;
        self.turn = self.turn.wrapping_add(1);
        // Every group: the lanes that exist now, critical ones first.
        let (sources, tier_len) = if self.every_group {
            let critical: Vec<Source> = state
                .lanes
                .keys()
                .filter(|lane| lane.critical)
                .map(|lane| Source::Lane(lane.clone()))
                .collect();
            let normal = state
                .lanes
                .keys()
                .filter(|lane| !lane.critical)
                .map(|lane| Source::Lane(lane.clone()));
            let mut all = critical;
            all.extend(normal);
            (all, 1)
        } else {
            (self.sources.clone(), self.tier_len)
        };
        let order: Vec<&Source> = if self.every_group {
            // Critical lanes, then normal ones, each in turn.
            sources.iter().collect()
        } else {
            sources
                .chunks(tier_len)
                .flat_map(|tier| (0..tier.len()).map(move |i| &tier[(i + turn) % tier.len()]))
                .collect()
        };
        for source in order {
            let unsettled = state.consumers.get(&self.id)?;
            if unsettled.count(source) >= prefetch {
                continue;
            }
            let waiting = match source {
                Source::Lane(lane) => state.lanes.get_mut(lane),
                Source::Dead => Some(&mut state.dead),
            };
            let Some(stored) = waiting.and_then(VecDeque::pop_front) else {
                continue;
            };
            let delivery_id = state.next_id;
            state.next_id += 1;
            let (lane, dead_letter_reason) = match (source, &stored.death) {
                (Source::Lane(lane), _) => (Some(lane.clone()), None),
                (Source::Dead, Some((lane, reason))) => (Some(lane.clone()), Some(reason.clone())),
                (Source::Dead, None) => (None, None),
            };
            let delivery = Delivery {
                payload: stored.message.payload.clone(),
                headers: stored.message.headers.clone(),
                lane,
                delivery_count: stored.returns.saturating_add(1),
                dead_letter_reason,
                settler: Settler(Some(Box::new(MemorySettler {
                    shared: self.shared.clone(),
                    consumer_id: self.id,
                    delivery_id,
                }))),
            };
            metric::delivered(source.label());
            state
                .consumers
                .get_mut(&self.id)?
                .0
                .insert(delivery_id, (source.clone(), stored));
            return Some(delivery);
        }
        None
    }
}

#[async_trait]
impl Consumer for MemoryConsumer {
    async fn next(&mut self) -> Option<Result<Delivery, QueueError>> {
        let shared = self.shared.clone();
        loop {
            let mut changed = pin!(shared.changed.notified());
            // Registers for wake-ups before looking, so a change in between is not missed.
            changed.as_mut().enable();
            {
                let mut state = shared.lock();
                if state.closed {
                    return None;
                }
                if let Some(delivery) = self.take(&mut state) {
                    return Some(Ok(delivery));
                }
            }
            changed.await;
        }
    }
}

impl Drop for MemoryConsumer {
    /// A consumer that goes away (a crashed worker) puts its unsettled deliveries back.
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.subscriptions.remove(&self.id);
        state.every_group.remove(&self.id);
        if let Some(unsettled) = state.consumers.remove(&self.id) {
            // Latest first, as each goes to the front: the oldest ends up first again.
            for (source, stored) in unsettled.0.into_values().rev() {
                self.shared.put_back(&mut state, source, stored);
            }
        }
        drop(state);
        self.shared.changed.notify_waiters();
    }
}

struct MemorySettler {
    shared: Arc<Shared>,
    consumer_id: u64,
    delivery_id: u64,
}

#[async_trait]
impl Settle for MemorySettler {
    async fn settle(self: Box<Self>, settlement: Settlement) -> Result<(), QueueError> {
        self.shared
            .settle(self.consumer_id, self.delivery_id, settlement)
    }

    fn abandon(self: Box<Self>) {
        // Gone already if its consumer went away first; then it is back in its queue.
        let _ = self
            .shared
            .settle(self.consumer_id, self.delivery_id, Settlement::Retry);
    }
}
