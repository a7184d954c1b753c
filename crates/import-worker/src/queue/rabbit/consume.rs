//! Consuming: lanes (critical first), deliveries, settling and reconnecting.

use super::*;

/// A queue a consumer reads.
#[derive(Clone)]
pub(super) struct LaneSpec {
    pub(super) queue: String,
    /// `None` for the dead-letter queue.
    pub(super) lane: Option<Lane>,
    pub(super) critical: bool,
    pub(super) label: &'static str,
}

pub(super) struct RabbitConsumer {
    shared: Arc<Shared>,
    /// Critical lanes first.
    specs: Vec<LaneSpec>,
    session: Option<Session>,
    backoff: service_runtime::retry::Backoff,
}

impl RabbitConsumer {
    pub(super) async fn start(
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
    pub(super) async fn pause(&mut self) -> bool {
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
pub(super) struct Session {
    /// Deliveries hold it weakly: once the session is gone, settling one is refused.
    link: Arc<Link>,
    lanes: Vec<SessionLane>,
    /// `lanes[..critical]` are the critical lanes.
    critical: usize,
    /// Rotates the first lane polled within a tier, so batch groups take turns.
    turn: usize,
}

pub(super) struct Link {
    channel: Channel,
    /// One `ready_count` question at a time on the channel.
    asking: tokio::sync::Mutex<()>,
}

impl Link {
    pub(super) async fn ready_count(&self, queue: &str) -> lapin::Result<u32> {
        let _turn = self.asking.lock().await;
        ready_count(&self.channel, queue).await
    }
}

pub(super) struct SessionLane {
    spec: LaneSpec,
    stream: lapin::Consumer,
    state: Arc<LaneState>,
}

#[derive(Default)]
pub(super) struct LaneState {
    /// Deliveries handed out and not settled yet.
    unsettled: AtomicUsize,
    /// Critical deliveries the broker is known to be about to send: while any are, normal
    /// deliveries wait (for at most `CRITICAL_WAIT_LIMIT`).
    expected: AtomicUsize,
}

impl LaneState {
    pub(super) fn expect_one_more(&self, prefetch: usize) {
        let _ = self
            .expected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some((n + 1).min(prefetch))
            });
    }

    pub(super) fn arrived(&self) {
        let _ = self
            .expected
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }

    pub(super) fn settled(&self) {
        let _ = self
            .unsettled
            .fetch_update(Ordering::SeqCst, Ordering::SeqCst, |n| {
                Some(n.saturating_sub(1))
            });
    }
}

impl Session {
    pub(super) async fn open(shared: &Shared, specs: &[LaneSpec]) -> Result<Self, QueueError> {
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
    pub(super) async fn next_delivery(&mut self, config: &QueueConfig) -> anyhow::Result<Delivery> {
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
    pub(super) fn poll_lanes(
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

    pub(super) fn accept(
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
pub(super) fn with_heartbeat(url: &str, secs: u16) -> String {
    if secs == 0 || url.contains("heartbeat=") {
        return url.to_owned();
    }
    let separator = if url.contains('?') { '&' } else { '?' };
    format!("{url}{separator}heartbeat={secs}")
}

/// What a delivery's headers say.
#[derive(Default)]
pub(super) struct Received {
    /// The publisher's headers (none of the broker's `x-` ones).
    headers: BTreeMap<String, String>,
    /// `x-delivery-count`: returns to the queue so far (absent on a first delivery).
    returns: u32,
    first_death_queue: Option<String>,
    first_death_reason: Option<String>,
}

impl Received {
    pub(super) fn read(table: Option<&FieldTable>) -> Self {
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

pub(super) fn string(value: &AMQPValue) -> Option<String> {
    match value {
        AMQPValue::LongString(text) => Some(String::from_utf8_lossy(text.as_bytes()).into_owned()),
        AMQPValue::ShortString(text) => Some(text.as_str().to_owned()),
        AMQPValue::Boolean(flag) => Some(flag.to_string()),
        other => number::<i128>(other).map(|n| n.to_string()),
    }
}

pub(super) fn number<T: TryFrom<i128>>(value: &AMQPValue) -> Option<T> {
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

pub(super) struct RabbitSettler {
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
    pub(super) fn count_outcome(&self, settlement: Settlement) {
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
