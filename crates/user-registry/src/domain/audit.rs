//! The audit trail: what changed a user, who asked, when, and through which job or request.
//! Every change and its event are written in one transaction, so neither exists without the
//! other. `detail` holds the changed fields as JSON — values the registry holds anyway; no
//! credential ever reaches the registry, so none can reach its trail.

/// What an audit event records.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Import,
    RoleGrant,
    RoleRevoke,
    Rename,
    Enable,
    Disable,
    /// Directory attributes (name, alias) applied to a user, or its hard deletion marked.
    Update,
    /// The user was deleted (the opt-in policy for users hard-deleted in the directory).
    Delete,
}

impl Action {
    pub const ALL: [Self; 8] = [
        Self::Import,
        Self::RoleGrant,
        Self::RoleRevoke,
        Self::Rename,
        Self::Enable,
        Self::Disable,
        Self::Update,
        Self::Delete,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Import => "import",
            Self::RoleGrant => "role.grant",
            Self::RoleRevoke => "role.revoke",
            Self::Rename => "rename",
            Self::Enable => "enable",
            Self::Disable => "disable",
            Self::Update => "update",
            Self::Delete => "delete",
        }
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|a| a.as_str() == raw.trim())
    }
}

/// A recorded change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuditEvent {
    pub event_id: i64,
    pub at_ms: i64,
    pub actor: String,
    pub action: String,
    pub user_id: String,
    pub via: String,
    pub detail: String,
    /// The service identity that acted for `actor` (`''` when the actor called directly).
    pub service: String,
}
