//! The tenant's directory: users (with soft and hard deletion), groups and the change log
//! that delta rounds are served from.

use std::collections::HashMap;
use std::hash::{DefaultHasher, Hasher};

use crate::groups::{EmulatedGroup, GroupMember};
use crate::synthetic::EmulatedUser;

/// What a mutation did to a user.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChangeKind {
    /// The user was created.
    Created,
    /// A property changed (name, UPN, enabled...).
    Updated,
    /// Moved to the deleted items (restorable).
    SoftDeleted,
    /// Brought back from the deleted items.
    Restored,
    /// Deleted permanently.
    HardDeleted,
}

/// One entry of the change log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    /// Sequence number, from 1, increasing by one per change.
    pub seq: u64,
    /// Object id of the changed user.
    pub user_id: String,
    /// What happened.
    pub kind: ChangeKind,
}

/// Property changes for [`Emulator::update_user`](crate::Emulator::update_user); `None`
/// leaves a property as it is.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UserUpdate {
    /// New `displayName`.
    pub display_name: Option<String>,
    /// New `userPrincipalName` (must stay unique).
    pub user_principal_name: Option<String>,
    /// New `mail` (`Some(None)` clears it).
    pub mail: Option<Option<String>>,
    /// New `givenName`.
    pub given_name: Option<Option<String>>,
    /// New `surname`.
    pub surname: Option<Option<String>>,
    /// Enable or disable the account.
    pub account_enabled: Option<bool>,
    /// New `userType`.
    pub user_type: Option<String>,
}

/// Where a user is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Life {
    Active,
    SoftDeleted,
    HardDeleted,
}

pub(crate) struct Slot {
    pub(crate) user: EmulatedUser,
    pub(crate) life: Life,
}

/// Users in a stable order (slots never move, so page offsets stay valid), lookups by id
/// and by UPN, groups, and the change log.
pub(crate) struct Directory {
    slots: Vec<Slot>,
    /// Every slot that is not hard-deleted.
    by_id: KeyIndex,
    /// Every slot that is not hard-deleted (soft-deleted users keep their UPN).
    by_upn: KeyIndex,
    changes: Vec<(u64, u32, ChangeKind)>,
    groups: Vec<EmulatedGroup>,
    group_index: HashMap<String, usize>,
}

impl Directory {
    pub(crate) fn new(
        users: Vec<EmulatedUser>,
        groups: Vec<EmulatedGroup>,
    ) -> anyhow::Result<Self> {
        let by_id = KeyIndex::build(users.iter().map(|u| u.id.as_str()));
        let by_upn = KeyIndex::build(users.iter().map(|u| u.user_principal_name.as_str()));
        let mut directory = Self {
            slots: users
                .into_iter()
                .map(|user| Slot {
                    user,
                    life: Life::Active,
                })
                .collect(),
            by_id,
            by_upn,
            changes: Vec::new(),
            groups: Vec::new(),
            group_index: HashMap::new(),
        };
        if let Some(duplicate) = directory
            .by_id
            .first_duplicate(|i| &directory.slots[i].user.id)
        {
            anyhow::bail!("duplicate user id {duplicate:?}");
        }
        if let Some(duplicate) = directory
            .by_upn
            .first_duplicate(|i| &directory.slots[i].user.user_principal_name)
        {
            anyhow::bail!("duplicate userPrincipalName {duplicate:?}");
        }
        for group in groups {
            directory.add_group(group)?;
        }
        Ok(directory)
    }

    pub(crate) fn slots(&self) -> &[Slot] {
        &self.slots
    }

    /// The active users in serving order.
    pub(crate) fn active_users(&self) -> impl Iterator<Item = &EmulatedUser> {
        self.slots
            .iter()
            .filter(|s| s.life == Life::Active)
            .map(|s| &s.user)
    }

    pub(crate) fn deleted_users(&self) -> impl Iterator<Item = &EmulatedUser> {
        self.slots
            .iter()
            .filter(|s| s.life == Life::SoftDeleted)
            .map(|s| &s.user)
    }

    /// Finds an active user by object id or userPrincipalName, both case-insensitively.
    pub(crate) fn find(&self, id_or_upn: &str) -> Option<&EmulatedUser> {
        self.position(id_or_upn)
            .map(|i| &self.slots[i])
            .filter(|slot| slot.life == Life::Active)
            .map(|slot| &slot.user)
    }

    /// The object id of the user (active or soft-deleted) with this object id or UPN.
    pub(crate) fn object_id_of(&self, id_or_upn: &str) -> Option<String> {
        self.position(id_or_upn)
            .filter(|&i| self.slots[i].life != Life::HardDeleted)
            .map(|i| self.slots[i].user.id.clone())
    }

    fn position(&self, id_or_upn: &str) -> Option<usize> {
        self.by_id
            .find(id_or_upn, |i| &self.slots[i].user.id)
            .or_else(|| {
                self.by_upn
                    .find(id_or_upn, |i| &self.slots[i].user.user_principal_name)
            })
    }

    fn position_by_id(&self, id: &str) -> anyhow::Result<usize> {
        self.by_id
            .find(id, |i| &self.slots[i].user.id)
            .ok_or_else(|| anyhow::anyhow!("no user with id {id:?}"))
    }

    /// The latest change's sequence number (0 before any change).
    pub(crate) fn seq(&self) -> u64 {
        self.changes.last().map_or(0, |c| c.0)
    }

    pub(crate) fn changes(&self) -> Vec<Change> {
        self.changes
            .iter()
            .map(|(seq, slot, kind)| Change {
                seq: *seq,
                user_id: self.slots[*slot as usize].user.id.clone(),
                kind: *kind,
            })
            .collect()
    }

    /// Slots changed in `(from, upto]`, each once, ordered by their last change.
    pub(crate) fn changed_since(&self, from: u64, upto: u64) -> Vec<usize> {
        let start = self.changes.partition_point(|c| c.0 <= from);
        let end = self.changes.partition_point(|c| c.0 <= upto);
        let window = &self.changes[start..end];
        let mut last: HashMap<u32, usize> = HashMap::new();
        for (i, (_, slot, _)) in window.iter().enumerate() {
            last.insert(*slot, i);
        }
        let mut ordered: Vec<(usize, u32)> = last.into_iter().map(|(slot, i)| (i, slot)).collect();
        ordered.sort_unstable();
        ordered.into_iter().map(|(_, slot)| slot as usize).collect()
    }

    fn log(&mut self, slot: usize, kind: ChangeKind) -> u64 {
        let seq = self.seq() + 1;
        self.changes.push((seq, slot as u32, kind));
        seq
    }

    pub(crate) fn create(&mut self, user: EmulatedUser) -> anyhow::Result<u64> {
        anyhow::ensure!(!user.id.trim().is_empty(), "empty user id");
        anyhow::ensure!(
            self.by_id
                .find(&user.id, |i| &self.slots[i].user.id)
                .is_none(),
            "duplicate user id {:?}",
            user.id
        );
        self.ensure_upn_free(&user.user_principal_name, None)?;
        let slot = self.slots.len();
        self.by_id.insert(&user.id, slot);
        self.by_upn.insert(&user.user_principal_name, slot);
        self.slots.push(Slot {
            user,
            life: Life::Active,
        });
        Ok(self.log(slot, ChangeKind::Created))
    }

    fn ensure_upn_free(&self, upn: &str, except: Option<usize>) -> anyhow::Result<()> {
        anyhow::ensure!(!upn.trim().is_empty(), "empty userPrincipalName");
        match self
            .by_upn
            .find(upn, |i| &self.slots[i].user.user_principal_name)
        {
            Some(other) if Some(other) != except => {
                anyhow::bail!("userPrincipalName {upn:?} is taken")
            }
            _ => Ok(()),
        }
    }

    pub(crate) fn update(&mut self, id: &str, update: UserUpdate) -> anyhow::Result<u64> {
        let slot = self.position_by_id(id)?;
        anyhow::ensure!(
            self.slots[slot].life == Life::Active,
            "user {id:?} is deleted"
        );
        if let Some(upn) = &update.user_principal_name {
            self.ensure_upn_free(upn, Some(slot))?;
            let old = self.slots[slot].user.user_principal_name.clone();
            self.by_upn.remove(&old, slot);
            self.by_upn.insert(upn, slot);
        }
        let user = &mut self.slots[slot].user;
        let UserUpdate {
            display_name,
            user_principal_name,
            mail,
            given_name,
            surname,
            account_enabled,
            user_type,
        } = update;
        if let Some(v) = display_name {
            user.display_name = v;
        }
        if let Some(v) = user_principal_name {
            user.user_principal_name = v;
        }
        if let Some(v) = mail {
            user.mail = v;
        }
        if let Some(v) = given_name {
            user.given_name = v;
        }
        if let Some(v) = surname {
            user.surname = v;
        }
        if let Some(v) = account_enabled {
            user.account_enabled = v;
        }
        if let Some(v) = user_type {
            user.user_type = v;
        }
        Ok(self.log(slot, ChangeKind::Updated))
    }

    pub(crate) fn soft_delete(&mut self, id: &str) -> anyhow::Result<u64> {
        let slot = self.position_by_id(id)?;
        anyhow::ensure!(
            self.slots[slot].life == Life::Active,
            "user {id:?} is not active"
        );
        self.slots[slot].life = Life::SoftDeleted;
        Ok(self.log(slot, ChangeKind::SoftDeleted))
    }

    pub(crate) fn restore(&mut self, id: &str) -> anyhow::Result<u64> {
        let slot = self.position_by_id(id)?;
        anyhow::ensure!(
            self.slots[slot].life == Life::SoftDeleted,
            "user {id:?} is not in the deleted items"
        );
        self.slots[slot].life = Life::Active;
        Ok(self.log(slot, ChangeKind::Restored))
    }

    /// Deletes permanently, from the active users or the deleted items.
    pub(crate) fn hard_delete(&mut self, id: &str) -> anyhow::Result<u64> {
        let slot = self.position_by_id(id)?;
        let (id, upn) = {
            let user = &self.slots[slot].user;
            (user.id.clone(), user.user_principal_name.clone())
        };
        self.by_id.remove(&id, slot);
        self.by_upn.remove(&upn, slot);
        self.slots[slot].life = Life::HardDeleted;
        for group in &mut self.groups {
            group
                .members
                .retain(|m| !matches!(m, GroupMember::User(u) if u.eq_ignore_ascii_case(&id)));
        }
        Ok(self.log(slot, ChangeKind::HardDeleted))
    }

    // ---- groups ----

    pub(crate) fn groups(&self) -> &[EmulatedGroup] {
        &self.groups
    }

    pub(crate) fn add_group(&mut self, group: EmulatedGroup) -> anyhow::Result<()> {
        let key = group.id.to_lowercase();
        anyhow::ensure!(!key.trim().is_empty(), "empty group id");
        anyhow::ensure!(
            !self.group_index.contains_key(&key),
            "duplicate group id {:?}",
            group.id
        );
        self.group_index.insert(key, self.groups.len());
        self.groups.push(group);
        Ok(())
    }

    pub(crate) fn group(&self, id: &str) -> Option<&EmulatedGroup> {
        self.group_index
            .get(&id.to_lowercase())
            .map(|i| &self.groups[*i])
    }

    pub(crate) fn group_mut(&mut self, id: &str) -> anyhow::Result<&mut EmulatedGroup> {
        let i = *self
            .group_index
            .get(&id.to_lowercase())
            .ok_or_else(|| anyhow::anyhow!("no group with id {id:?}"))?;
        Ok(&mut self.groups[i])
    }

    /// Adds a direct member to a group.
    pub(crate) fn add_group_member(
        &mut self,
        group_id: &str,
        member: GroupMember,
    ) -> anyhow::Result<()> {
        self.group_mut(group_id)?.members.push(member);
        Ok(())
    }

    /// Removes a direct member from a group; `Ok(false)` if it was not a member.
    pub(crate) fn remove_group_member(
        &mut self,
        group_id: &str,
        member_id: &str,
    ) -> anyhow::Result<bool> {
        let group = self.group_mut(group_id)?;
        let before = group.members.len();
        group
            .members
            .retain(|m| !m.id().eq_ignore_ascii_case(member_id));
        Ok(group.members.len() != before)
    }

    /// The transitive members of a group: each object once, depth first in member order;
    /// nested groups are listed too, as Graph does. Users that are not active are left out.
    pub(crate) fn transitive_members(&self, group_id: &str) -> Vec<MemberObject<'_>> {
        let mut out = Vec::new();
        let mut seen: std::collections::HashSet<String> = std::collections::HashSet::new();
        if let Some(group) = self.group(group_id) {
            seen.insert(group.id.to_lowercase());
            self.walk(group, &mut seen, &mut out);
        }
        out
    }

    fn walk<'a>(
        &'a self,
        group: &'a EmulatedGroup,
        seen: &mut std::collections::HashSet<String>,
        out: &mut Vec<MemberObject<'a>>,
    ) {
        for member in &group.members {
            if !seen.insert(member.id().to_lowercase()) {
                continue;
            }
            match member {
                GroupMember::User(id) => {
                    if let Some(user) = self
                        .by_id
                        .find(id, |i| &self.slots[i].user.id)
                        .map(|i| &self.slots[i])
                        .filter(|slot| slot.life == Life::Active)
                    {
                        out.push(MemberObject::User(&user.user));
                    }
                }
                GroupMember::Group(id) => {
                    if let Some(nested) = self.group(id) {
                        out.push(MemberObject::Other {
                            odata_type: "#microsoft.graph.group",
                            id: &nested.id,
                            display_name: &nested.display_name,
                        });
                        self.walk(nested, seen, out);
                    }
                }
                other => {
                    let (odata_type, id, display_name) = other.describe();
                    out.push(MemberObject::Other {
                        odata_type,
                        id,
                        display_name,
                    });
                }
            }
        }
    }
}

/// A directory object among a group's transitive members.
pub(crate) enum MemberObject<'a> {
    User(&'a EmulatedUser),
    Other {
        odata_type: &'static str,
        id: &'a str,
        display_name: &'a str,
    },
}

/// A case-insensitive lookup from key to position, stored as sorted (hash, position) pairs
/// (12 bytes a user instead of a `HashMap<String, _>` copy of every key).
struct KeyIndex {
    entries: Vec<(u64, u32)>,
}

impl KeyIndex {
    fn build<'a>(keys: impl Iterator<Item = &'a str>) -> Self {
        let mut entries: Vec<(u64, u32)> = keys
            .enumerate()
            .map(|(position, key)| (fold_hash(key), position as u32))
            .collect();
        entries.sort_unstable();
        Self { entries }
    }

    fn insert(&mut self, key: &str, position: usize) {
        let entry = (fold_hash(key), position as u32);
        let at = self.entries.partition_point(|e| *e < entry);
        self.entries.insert(at, entry);
    }

    fn remove(&mut self, key: &str, position: usize) {
        let entry = (fold_hash(key), position as u32);
        if let Ok(at) = self.entries.binary_search(&entry) {
            self.entries.remove(at);
        }
    }

    fn find<'a>(&self, key: &str, key_at: impl Fn(usize) -> &'a String) -> Option<usize> {
        let hash = fold_hash(key);
        let start = self.entries.partition_point(|(h, _)| *h < hash);
        self.entries[start..]
            .iter()
            .take_while(|(h, _)| *h == hash)
            .map(|(_, position)| *position as usize)
            .find(|position| eq_fold(key_at(*position), key))
    }

    fn first_duplicate<'a>(&self, key_at: impl Fn(usize) -> &'a String) -> Option<&'a String> {
        let mut start = 0;
        while start < self.entries.len() {
            let hash = self.entries[start].0;
            let end = start + self.entries[start..].partition_point(|(h, _)| *h == hash);
            let run = &self.entries[start..end];
            for (i, (_, a)) in run.iter().enumerate() {
                for (_, b) in &run[i + 1..] {
                    let key = key_at(*a as usize);
                    if eq_fold(key, key_at(*b as usize)) {
                        return Some(key);
                    }
                }
            }
            start = end;
        }
        None
    }
}

fn fold_hash(key: &str) -> u64 {
    let mut hasher = DefaultHasher::new();
    for c in key.chars().flat_map(char::to_lowercase) {
        hasher.write_u32(u32::from(c));
    }
    hasher.finish()
}

fn eq_fold(a: &str, b: &str) -> bool {
    a.chars()
        .flat_map(char::to_lowercase)
        .eq(b.chars().flat_map(char::to_lowercase))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::synthetic_users;

    #[test]
    fn users_are_found_by_id_and_by_user_principal_name_in_any_case() {
        let users = synthetic_users(300, "contoso.com");
        let directory = Directory::new(users.clone(), Vec::new()).unwrap();
        for user in &users {
            assert_eq!(directory.find(&user.id.to_uppercase()), Some(user));
            assert_eq!(
                directory.find(&user.user_principal_name.to_uppercase()),
                Some(user)
            );
        }
        assert_eq!(directory.find("nobody@contoso.com"), None);
    }

    #[test]
    fn a_directory_with_duplicate_user_principal_names_is_refused() {
        let mut users = synthetic_users(3, "contoso.com");
        users[2].user_principal_name = users[0].user_principal_name.to_uppercase();
        assert!(Directory::new(users, Vec::new()).is_err());
    }

    #[test]
    fn mutations_keep_lookups_right_and_log_each_change_once() {
        let users = synthetic_users(5, "contoso.com");
        let mut directory = Directory::new(users.clone(), Vec::new()).unwrap();
        let a = users[0].id.clone();
        let b = users[1].id.clone();
        directory
            .update(
                &a,
                UserUpdate {
                    user_principal_name: Some("renamed@contoso.com".to_owned()),
                    ..UserUpdate::default()
                },
            )
            .unwrap();
        assert!(directory.find(&users[0].user_principal_name).is_none());
        assert_eq!(directory.find("RENAMED@contoso.com").unwrap().id, a);
        directory.soft_delete(&b).unwrap();
        assert!(directory.find(&b).is_none());
        assert!(directory.soft_delete(&b).is_err());
        directory.restore(&b).unwrap();
        assert!(directory.find(&b).is_some());
        directory.hard_delete(&b).unwrap();
        assert!(directory.find(&b).is_none());
        assert!(directory.restore(&b).is_err());
        // The freed UPN can be taken by a new user.
        let mut new = users[1].clone();
        new.id = "00000000-0000-4000-8000-00000000000a".to_owned();
        directory.create(new).unwrap();
        assert_eq!(directory.seq(), 5);
        assert_eq!(directory.changed_since(0, 5), vec![0, 1, 5]);
        assert_eq!(directory.changed_since(2, 4), vec![1]);
    }
}
