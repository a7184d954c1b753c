//! Sync rounds and what they did.

/// Full reads every user; delta reads the changes since the stored delta link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Full,
    Delta,
    /// Changes Entra pushed over SCIM, gathered over an interval (`scim.round_interval_secs`).
    Scim,
}

service_runtime::text_enum!(SyncMode { Full => "full", Delta => "delta", Scim => "scim" });

/// Where a sync round stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncRunStatus {
    Running,
    Succeeded,
    Failed,
    AwaitingApproval,
    Rejected,
}

service_runtime::text_enum!(SyncRunStatus {
    Running => "running",
    Succeeded => "succeeded",
    Failed => "failed",
    AwaitingApproval => "awaiting_approval",
    Rejected => "rejected",
});

/// One sync round and its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SyncRun {
    pub run_id: String,
    pub mode: SyncMode,
    pub status: SyncRunStatus,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub users_seen: u64,
    pub users_created: u64,
    pub users_updated: u64,
    pub users_removed: u64,
    pub users_rejected: u64,
    pub error: String,
    /// Pages of users or changes read from Graph (group member pages are not counted).
    pub pages_read: u64,
    /// Why a delta round read the whole tenant instead (its mode is then `Full`).
    pub fell_back_from_delta: Option<String>,
}

impl SyncRun {
    pub fn start(run_id: String, mode: SyncMode, now_ms: i64) -> Self {
        Self {
            run_id,
            mode,
            status: SyncRunStatus::Running,
            started_at_ms: now_ms,
            finished_at_ms: 0,
            users_seen: 0,
            users_created: 0,
            users_updated: 0,
            users_removed: 0,
            users_rejected: 0,
            error: String::new(),
            pages_read: 0,
            fell_back_from_delta: None,
        }
    }

    /// True once the run has an outcome (it may still wait for approval).
    pub fn has_ended(&self) -> bool {
        self.status != SyncRunStatus::Running
    }

    /// How long the run took, or has been running at `now_ms`; never negative, whatever the
    /// record holds (an ended run without an end time counts 0, clocks may move back). A run
    /// that has its end time but not yet its outcome (it is being recorded) counts to its end,
    /// so a follower never sees a time so far beyond the duration it then ends with.
    pub fn duration_ms(&self, now_ms: i64) -> i64 {
        let end = match (self.has_ended(), self.finished_at_ms) {
            (false, 0) => now_ms,
            (true, 0) => return 0,
            (_, finished) => finished,
        };
        end.saturating_sub(self.started_at_ms).max(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_are_never_negative() {
        let mut run = SyncRun::start("r".into(), SyncMode::Full, 1_800_000_000_000);
        assert_eq!(
            run.duration_ms(1_800_000_004_000),
            4_000,
            "a running round: so far"
        );
        assert_eq!(
            run.duration_ms(1_799_999_999_000),
            0,
            "a clock behind the start"
        );
        run.finished_at_ms = 1_800_000_003_000;
        assert_eq!(
            run.duration_ms(1_800_000_004_000),
            3_000,
            "a running round that took its end time counts to it"
        );
        run.finished_at_ms = 0;
        run.status = SyncRunStatus::Failed;
        assert_eq!(
            run.duration_ms(1_800_000_009_000),
            0,
            "ended without an end time"
        );
        run.finished_at_ms = 1_800_000_002_500;
        assert_eq!(run.duration_ms(1_900_000_000_000), 2_500);
        run.finished_at_ms = 1_700_000_000_000;
        assert_eq!(
            run.duration_ms(1_900_000_000_000),
            0,
            "an end before the start"
        );
    }
}
