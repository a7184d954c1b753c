//! Jobs: one import (a select import or a batch) with its exact counts and its report.

/// What started a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobKind {
    /// ImportSelected: chosen users, answered in the request.
    Select,
    /// StartBatchImport: every user in scope, through the queue.
    Batch,
    /// RunImportNow: every user in scope, in the request.
    RunNow,
}

/// Where a job stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum JobStatus {
    Queued,
    Planning,
    Running,
    Completed,
    Failed,
    Cancelled,
}

service_runtime::text_enum!(JobKind { Select => "select", Batch => "batch", RunNow => "run_now" });
service_runtime::text_enum!(JobStatus {
    Queued => "queued",
    Planning => "planning",
    Running => "running",
    Completed => "completed",
    Failed => "failed",
    Cancelled => "cancelled",
});
service_runtime::text_enum!(OutcomeKind {
    Created => "created",
    AlreadyPresent => "already_present",
    Skipped => "skipped",
    Failed => "failed",
});

/// What happened to one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Created,
    AlreadyPresent,
    Skipped,
    Failed,
}

/// One user's outcome.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub object_id: String,
    pub kind: OutcomeKind,
    pub user_id: String,
    pub reason: String,
    pub note: String,
}

impl Outcome {
    pub fn skipped(object_id: impl Into<String>, reason: impl Into<String>) -> Self {
        Self {
            object_id: object_id.into(),
            kind: OutcomeKind::Skipped,
            user_id: String::new(),
            reason: reason.into(),
            note: String::new(),
        }
    }
}

/// Exact counts: every user of a job is in exactly one.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    pub created: u64,
    pub already_present: u64,
    pub skipped: u64,
    pub failed: u64,
}

impl Counts {
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut counts = Self::default();
        for outcome in outcomes {
            match outcome.kind {
                OutcomeKind::Created => counts.created += 1,
                OutcomeKind::AlreadyPresent => counts.already_present += 1,
                OutcomeKind::Skipped => counts.skipped += 1,
                OutcomeKind::Failed => counts.failed += 1,
            }
        }
        counts
    }

    pub fn total(&self) -> u64 {
        self.created + self.already_present + self.skipped + self.failed
    }
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    pub company: String,
    pub created_by: String,
    pub planned: u64,
    pub counts: Counts,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub error: String,
}
