//! Topology: the exchanges, lanes and dead-letter queues, declared once per connection.

use super::*;

#[derive(Clone, Copy)]
pub(super) enum Declaration<'a> {
    /// The dead-letter exchange and queue and the events exchange.
    Base,
    Lane(&'a str),
}

pub(super) fn text(value: &str) -> AMQPValue {
    AMQPValue::LongString(LongString::from(value))
}

pub(super) fn lane_arguments(config: &QueueConfig) -> FieldTable {
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

pub(super) fn dead_letter_queue_arguments() -> FieldTable {
    let mut arguments = FieldTable::default();
    arguments.insert("x-queue-type".into(), text("quorum"));
    arguments
}

pub(super) fn durable_queue() -> QueueDeclareOptions {
    QueueDeclareOptions {
        durable: true,
        ..QueueDeclareOptions::default()
    }
}

/// Declares a lane's queue and returns how many messages wait in it.
pub(super) async fn declare_lane_queue(
    channel: &Channel,
    config: &QueueConfig,
    queue: &str,
) -> lapin::Result<u32> {
    let declared = channel
        .queue_declare(queue.into(), durable_queue(), lane_arguments(config))
        .await?;
    Ok(declared.message_count())
}

pub(super) async fn declare_base(channel: &Channel, config: &QueueConfig) -> lapin::Result<()> {
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
pub(super) async fn ready_count(channel: &Channel, queue: &str) -> lapin::Result<u32> {
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

pub(super) fn soft_error(error: &lapin::Error) -> Option<&AMQPSoftError> {
    match error.kind() {
        lapin::ErrorKind::ProtocolError(amqp) => match amqp.kind() {
            AMQPErrorKind::Soft(soft) => Some(soft),
            AMQPErrorKind::Hard(_) => None,
        },
        _ => None,
    }
}

/// Sorts a broker error into what the caller must decide.
pub(super) fn classify(error: lapin::Error) -> QueueError {
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
pub(super) fn error_chain(error: &(dyn std::error::Error + 'static)) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}
