//! Group-to-role rules: members of directory group G get role R, in company C or
//! in every company. A rule's grants are its own in the registry; see [`crate::rules`].

/// A stored rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RoleRule {
    pub rule_id: String,
    /// Directory group object id (lower-case GUID).
    pub group_id: String,
    /// Registry role id (upper-case).
    pub role_id: String,
    /// Company code (upper-case), or empty for every company.
    pub company: String,
    pub created_by: String,
    pub created_at_ms: i64,
    /// Being removed: it grants nothing, and goes once its grants are revoked.
    pub removing: bool,
}

/// One grant written or removed by a rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RuleChange {
    pub rule_id: String,
    pub role_id: String,
    pub company: String,
    pub object_id: String,
    pub user_id: String,
    pub granted: bool,
}

/// Most changes a report lists; the counts are always complete.
pub const LISTED_RULE_CHANGES: usize = 10_000;

/// What rules granted and revoked (or would, in a dry run).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RuleChanges {
    pub granted: u64,
    pub revoked: u64,
    pub listed: Vec<RuleChange>,
    pub truncated: bool,
}

impl RuleChanges {
    pub fn push(&mut self, change: RuleChange) {
        if change.granted {
            self.granted += 1;
        } else {
            self.revoked += 1;
        }
        if self.listed.len() < LISTED_RULE_CHANGES {
            self.listed.push(change);
        } else {
            self.truncated = true;
        }
    }

    pub fn merge(&mut self, other: RuleChanges) {
        self.granted += other.granted;
        self.revoked += other.revoked;
        self.truncated |= other.truncated;
        for change in other.listed {
            if self.listed.len() < LISTED_RULE_CHANGES {
                self.listed.push(change);
            } else {
                self.truncated = true;
            }
        }
    }
}
