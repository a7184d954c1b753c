//! What a round asks of the registry and import-worker, and what they answer, in
//! directory-sync's own terms (`clients.rs` converts at the edge; `grpc.rs` reports them).

/// A registry change one mirror user's state asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UserChange {
    pub tenant_id: String,
    pub object_id: String,
    pub name: Option<String>,
    pub network_alias: Option<String>,
    pub enabled: Option<bool>,
    /// Set for a hard-deleted user, cleared for one the directory holds again.
    pub deleted_in_directory: Option<bool>,
    /// Delete the registry user (the opt-in policy for hard-deleted users).
    pub delete: bool,
}

/// What the registry did (or would do) with one change.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UpdateKind {
    Updated,
    Unchanged,
    NotFound,
    Failed,
    Deleted,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpdateOutcome {
    pub object_id: String,
    pub kind: UpdateKind,
    pub user_id: String,
    /// The fields that changed (`enabled`, `name`, …).
    pub changed: Vec<String>,
    pub reason: String,
    /// Whether the user is enabled afterwards.
    pub enabled: bool,
}

/// What an import did with one user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ImportKind {
    Created,
    AlreadyPresent,
    Skipped,
    Failed,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImportOutcome {
    pub object_id: String,
    pub kind: ImportKind,
    pub user_id: String,
    pub reason: String,
    pub note: String,
}

/// A role granted or revoked by a group-to-role rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleChange {
    pub rule_id: String,
    pub role_id: String,
    pub company: String,
    pub object_id: String,
    pub user_id: String,
    pub granted: bool,
}

/// What reconciling the rules did (or would do); `changes` may be cut short (`truncated`).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleChanges {
    pub granted: u64,
    pub revoked: u64,
    pub changes: Vec<RuleChange>,
    pub truncated: bool,
}
