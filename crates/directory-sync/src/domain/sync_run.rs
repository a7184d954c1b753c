//! Sync rounds and what they did.

/// Full reads every user; delta reads the changes since the stored delta link.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SyncMode {
    Full,
    Delta,
}

service_runtime::text_enum!(SyncMode { Full => "full", Delta => "delta" });

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
        }
    }
}
