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

/// The options of D365's batch dialog.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct BatchOptions {
    /// Which queue, and so which worker pool, takes the job's chunks.
    pub batch_group: String,
    /// Only the creator can see or cancel the job.
    pub private: bool,
    /// Its chunks are taken before normal ones; its failure raises an alert.
    pub critical: bool,
    /// A label carried into logs, metrics and events.
    pub monitoring_category: String,
}

/// The batch group a job without one goes to.
pub const DEFAULT_BATCH_GROUP: &str = "default";

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Job {
    pub job_id: String,
    pub kind: JobKind,
    pub status: JobStatus,
    pub company: String,
    pub created_by: String,
    /// The group whose members are imported; `None` for every user.
    pub scope_group: Option<String>,
    pub options: BatchOptions,
    /// Users planned into chunks so far.
    pub planned: u64,
    pub counts: Counts,
    pub chunks_planned: u64,
    pub chunks_done: u64,
    pub chunks_dead_lettered: u64,
    pub planning_done: bool,
    pub cancel_requested: bool,
    pub created_at_ms: i64,
    pub started_at_ms: i64,
    pub finished_at_ms: i64,
    pub error: String,
    /// The W3C `traceparent` of the call that started the job; its planning and chunks
    /// continue that trace.
    pub trace_parent: String,
}

impl Job {
    /// A new job of `kind` as its creator asked for it.
    pub fn new(
        job_id: String,
        kind: JobKind,
        company: String,
        created_by: String,
        now_ms: i64,
    ) -> Self {
        Self {
            job_id,
            kind,
            status: JobStatus::Queued,
            company,
            created_by,
            scope_group: None,
            options: BatchOptions::default(),
            planned: 0,
            counts: Counts::default(),
            chunks_planned: 0,
            chunks_done: 0,
            chunks_dead_lettered: 0,
            planning_done: false,
            cancel_requested: false,
            created_at_ms: now_ms,
            started_at_ms: 0,
            finished_at_ms: 0,
            error: String::new(),
            trace_parent: String::new(),
        }
    }

    /// Whether `principal` may see (and cancel) the job: a private job only its creator.
    pub fn visible_to(&self, principal: &str) -> bool {
        !self.options.private || self.created_by == principal
    }

    /// The batch group whose queue takes the job's chunks.
    pub fn batch_group(&self) -> &str {
        if self.options.batch_group.is_empty() {
            DEFAULT_BATCH_GROUP
        } else {
            &self.options.batch_group
        }
    }
}

impl JobStatus {
    /// Completed, failed or cancelled: nothing more happens to the job.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Cancelled)
    }
}
