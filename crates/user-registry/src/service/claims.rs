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
//! A released claim is not free for everyone at once: a transaction that began before the id's
//! holder committed may have read the registry before that commit, found the id free, and would
//! insert it into a unique violation (and run its whole transaction again: 2–4 % of a 1M batch's
//! chunks did). So a commit is remembered, by the number of commits before it, until every
//! transaction that began earlier has ended; for those the id stays taken.
//!
//! The unique index stays the authority: two registry replicas do not see each other's
//! claims, and a racing insert there is sorted out as before, by waiting and a further round.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard, PoisonError};

/// The ids held by this process's open import transactions, and those committed while some
/// of them were open.
#[derive(Debug, Default)]
pub(super) struct InFlight {
    state: Mutex<State>,
}

#[derive(Debug, Default)]
struct State {
    /// Held by open transactions.
    held: HashSet<String>,
    /// Committed ids, by the commit count (`commits`) that their commit made.
    committed: HashMap<String, u64>,
    /// Commits recorded so far.
    commits: u64,
    /// Open transactions, counted by the commit count when they began.
    open: BTreeMap<u64, usize>,
}

impl InFlight {
    /// A transaction's claims, released when dropped: take it before the transaction reads
    /// which ids are taken, call [`Held::committed`] after its commit, drop it after that.
    pub(super) fn hold(&self) -> Held<'_> {
        let mut state = self.lock();
        let since = state.commits;
        *state.open.entry(since).or_default() += 1;
        Held {
            in_flight: self,
            since,
            mine: HashSet::new(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// One transaction's claims.
pub(super) struct Held<'a> {
    in_flight: &'a InFlight,
    /// The commit count when this transaction began: ids committed after it are taken for it.
    since: u64,
    mine: HashSet<String>,
}

impl Held<'_> {
    /// Claims `key` (a user key) for this transaction: false when this transaction has
    /// already handed it out, another transaction of this process holds it, or one committed
    /// it after this transaction began.
    pub(super) fn claim(&mut self, key: &str) -> bool {
        if self.mine.contains(key) {
            return false;
        }
        let mut state = self.in_flight.lock();
        if state
            .committed
            .get(key)
            .is_some_and(|&commit| commit > self.since)
        {
            return false;
        }
        if !state.held.insert(key.to_owned()) {
            return false;
        }
        drop(state);
        self.mine.insert(key.to_owned());
        true
    }

    /// Records that this transaction committed its ids; call it after the commit.
    pub(super) fn committed(&mut self) {
        let mut state = self.in_flight.lock();
        state.commits += 1;
        let commit = state.commits;
        for key in &self.mine {
            state.committed.insert(key.clone(), commit);
        }
    }
}

impl Drop for Held<'_> {
    fn drop(&mut self) {
        let mut state = self.in_flight.lock();
        for key in &self.mine {
            state.held.remove(key);
        }
        if let Some(count) = state.open.get_mut(&self.since) {
            *count -= 1;
            if *count == 0 {
                state.open.remove(&self.since);
            }
        }
        // A commit matters only to transactions that began before it.
        match state.open.keys().next().copied() {
            Some(oldest) => state.committed.retain(|_, commit| *commit > oldest),
            None => state.committed.clear(),
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
        assert!(
            second.claim("john.smith"),
            "free once the first has ended without committing"
        );
        drop(second);
        let state = in_flight.lock();
        assert!(state.held.is_empty() && state.open.is_empty());
    }

    #[test]
    fn an_id_committed_after_a_transaction_began_stays_taken_for_it_and_is_forgotten_after() {
        let in_flight = InFlight::default();
        let mut first = in_flight.hold();
        // Began before the first committed: its read may have missed the first's row.
        let mut earlier = in_flight.hold();
        assert!(first.claim("john.smith"));
        first.committed();
        drop(first);
        assert!(
            !earlier.claim("john.smith"),
            "committed after this transaction began"
        );
        // Began after the commit: its read sees the row, so the claim is not what stops it.
        let mut later = in_flight.hold();
        assert!(later.claim("john.smith"));
        drop(later);
        drop(earlier);
        let state = in_flight.lock();
        assert!(
            state.committed.is_empty() && state.held.is_empty() && state.open.is_empty(),
            "nothing is remembered once no transaction is open: {state:?}"
        );
    }
}
