//! Publishing: confirmed publishes, retried on a new channel within a deadline.

use super::*;

#[derive(Clone, Copy)]
pub(super) enum Target<'a> {
    /// A lane's queue, through the default exchange, mandatory: no queue is an error.
    Lane(&'a str),
    /// The events exchange with a routing key; nobody listening is not an error.
    Event(&'a str, &'a str),
}

pub(super) enum Failure {
    /// The broker returned the message: no queue to route it to.
    Returned(String),
    /// The broker said the exchange does not exist.
    NotFound(QueueError),
    Nacked,
    Failed(QueueError),
}

impl Shared {
    pub(super) fn lock_declared(&self) -> MutexGuard<'_, HashSet<String>> {
        self.declared
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    pub(super) async fn ensure_declared(
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

    pub(super) fn forget_declared(&self, key: &str) {
        self.lock_declared().remove(key);
    }

    /// The channel publishes go through, in confirm mode; a new one if it was lost.
    pub(super) async fn publish_channel(&self) -> Result<Channel, QueueError> {
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
    pub(super) async fn publish_confirmed(
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

    pub(super) async fn try_publish(
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
