//! One call of this process at a time may be making an import id's binding (issue 17).
//!
//! The first chunks of a batch job reach the registry together, and each finds its import id
//! unbound. The first to insert the binding holds that row until its whole import commits; the
//! others' inserts of the same id waited on it inside Postgres, each holding a connection and
//! an open transaction. So every call passes its import id's gate before it begins: a call that
//! finds the binding made opens the gate at once, and a call that makes it keeps the gate
//! closed until its transaction has ended. The calls behind it then read the committed binding
//! and wait on nobody. Replicas do not share gates; between them the unique index works as
//! before.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::{Mutex as AsyncMutex, OwnedMutexGuard};

/// The gates of the import ids that calls of this process are passing or waiting at.
#[derive(Debug, Default)]
pub(super) struct Gates {
    by_import_id: Mutex<HashMap<String, Arc<AsyncMutex<()>>>>,
}

/// A passed gate: closed to other calls of the same import id until opened or dropped.
pub(super) struct Gate<'a> {
    gates: &'a Gates,
    guard: Option<OwnedMutexGuard<()>>,
}

impl Gates {
    /// Waits until no other call of this process holds `import_id`'s gate, and takes it.
    pub(super) async fn pass(&self, import_id: &str) -> Gate<'_> {
        let gate = self.lock().entry(import_id.to_owned()).or_default().clone();
        Gate {
            gates: self,
            guard: Some(gate.lock_owned().await),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<String, Arc<AsyncMutex<()>>>> {
        self.by_import_id
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }
}

impl Gate<'_> {
    /// Lets the next call of this import id through.
    pub(super) fn open(&mut self) {
        if self.guard.take().is_some() {
            // A gate that only the map refers to has nobody at it (a waiter clones it under
            // the map's lock), including one a cancelled waiter left.
            self.gates
                .lock()
                .retain(|_, gate| Arc::strong_count(gate) > 1);
        }
    }
}

impl Drop for Gate<'_> {
    fn drop(&mut self) {
        self.open();
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn a_call_waits_at_its_import_ids_gate_until_the_holder_opens_it_and_others_pass() {
        let gates = Gates::default();
        let mut first = gates.pass("job-1").await;
        let other = tokio::time::timeout(Duration::from_millis(50), gates.pass("job-2")).await;
        assert!(other.is_ok(), "another import id passes at once");
        drop(other);
        let waiting = tokio::time::timeout(Duration::from_millis(50), gates.pass("job-1")).await;
        assert!(
            waiting.is_err(),
            "the same import id waits while the gate is held"
        );
        first.open();
        let second = tokio::time::timeout(Duration::from_millis(50), gates.pass("job-1")).await;
        assert!(second.is_ok(), "passes once the holder opened the gate");
        drop(second);
        assert!(
            gates.lock().is_empty(),
            "no gate is kept once nobody is at it"
        );
    }
}
