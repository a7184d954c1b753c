//! Connections: one slot per role (publishing, consuming), replaced when lost.

use super::*;

/// One connection, replaced when it is lost. Callers that find it lost together wait for one
/// reconnection.
pub(super) struct Slot {
    pub(super) role: &'static str,
    pub(super) url: String,
    /// Shown by `rabbitmqctl list_connections client_properties` and the management UI.
    pub(super) name: String,
    pub(super) state: tokio::sync::Mutex<SlotState>,
}

#[derive(Default)]
pub(super) struct SlotState {
    connection: Option<Arc<Connection>>,
    connected_before: bool,
}

impl Slot {
    pub(super) async fn connection(&self) -> Result<Arc<Connection>, QueueError> {
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

    pub(super) async fn close(&self) {
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
