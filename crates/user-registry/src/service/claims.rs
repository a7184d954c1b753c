//! The user ids this process's import transactions are about to insert (issue 17).
//!
//! Two concurrent imports that both find a base id free (neither sees the other's uncommitted
//! row) both insert it, and the second then waits on the first's row lock until that commits,
//! only to skip the row and number it in a second round; with common names at a million users
//! every chunk waited on others that way, and pairs of them deadlocked. So before inserting an
//! id, a transaction claims it here; an id another transaction of this process holds is
//! treated as taken (its user gets the next number of the base's family instead, from a
//! counter no two transactions share). Claims are released when the transaction has ended.
//!
//! The unique index stays the authority: two registry replicas do not see each other's
//! claims, and a racing insert there is sorted out as before, by waiting and a further round.

use std::collections::HashSet;
use std::sync::{Mutex, PoisonError};

/// The ids held by this process's open import transactions.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    keys: Mutex<HashSet<String>>,
}

impl InFlight {
    /// A transaction's claims, released when dropped: drop it after the commit.
    pub(super) fn hold(&self) -> Held<'_> {
        Held {
            in_flight: self,
            mine: HashSet::new(),
        }
    }
}

/// One transaction's claims.
pub(super) struct Held<'a> {
    in_flight: &'a InFlight,
    mine: HashSet<String>,
}

impl Held<'_> {
    /// Claims `key` (a user key) for this transaction: false when this transaction has
    /// already handed it out or another transaction of this process holds it.
    pub(super) fn claim(&mut self, key: &str) -> bool {
        if self.mine.contains(key) {
            return false;
        }
        let mut keys = self
            .in_flight
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if !keys.insert(key.to_owned()) {
            return false;
        }
        drop(keys);
        self.mine.insert(key.to_owned());
        true
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut keys = self
            .in_flight
            .keys
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for key in &self.mine {
            keys.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_is_held_by_one_transaction_at_a_time_and_free_again_when_it_ends() {
        let in_flight = InFlight::default();
        let mut first = in_flight.hold();
        let mut second = in_flight.hold();
        assert!(first.claim("john.smith"));
        assert!(
            !first.claim("john.smith"),
            "handed out once within a transaction"
        );
        assert!(!second.claim("john.smith"), "held by the first");
        assert!(second.claim("john.smith2"));
        drop(first);
        assert!(second.claim("john.smith"), "free once the first has ended");
        drop(second);
        assert!(in_flight.keys.lock().unwrap().is_empty());
    }
}
