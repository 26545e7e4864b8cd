//! The conversation index in memory: every conversation of every tenant, ordered most recent
//! first per tenant and per user, so a page of a caller's list is a range read. Pure.
//!
//! Sized for a million conversations per worker: strings once each (a key, a title), users
//! as numbers, one ordered set per tenant and one per user.

use std::cmp::Reverse;
use std::collections::{BTreeSet, HashMap};
use std::fmt;
use std::ops::Bound;
use std::str::FromStr;

use hashbrown::HashTable;
use meshchat_wire::{IndexEntry, split_key};

/// A place in an ordering: most recent first, ties by a hash of the key (the same on every
/// worker, so a cursor from one is good on another).
type Rank = (Reverse<i64>, u64, u32);

#[derive(Debug)]
struct Slot {
    key: Box<str>,
    title: Box<str>,
    tenant: u32,
    participants: Participants,
    last_ms: i64,
    count: u64,
    tie: u64,
}

/// Users taking part: most conversations have one, kept inline.
#[derive(Debug)]
enum Participants {
    One(u32),
    Many(Box<[u32]>),
}

impl Participants {
    fn as_slice(&self) -> &[u32] {
        match self {
            Participants::One(u) => std::slice::from_ref(u),
            Participants::Many(us) => us,
        }
    }
}

/// Where a page ended: the next page starts after it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct ListCursor {
    last_ms: i64,
    tie: u64,
}

/// A cursor a client sent that is not one.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("not a cursor this API gave out")]
pub struct BadListCursor;

impl fmt::Display for ListCursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}.{:016x}", self.last_ms, self.tie)
    }
}

impl FromStr for ListCursor {
    type Err = BadListCursor;

    fn from_str(s: &str) -> Result<Self, BadListCursor> {
        let (ms, tie) = s.split_once('.').ok_or(BadListCursor)?;
        if ms.is_empty() || ms.len() > 19 || tie.len() != 16 {
            return Err(BadListCursor);
        }
        Ok(Self {
            last_ms: ms.parse().map_err(|_| BadListCursor)?,
            tie: u64::from_str_radix(tie, 16).map_err(|_| BadListCursor)?,
        })
    }
}

/// One conversation as a list shows it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Listed {
    /// Conversation id.
    pub id: String,
    /// The first message's beginning.
    pub title: String,
    /// Latest message or reply, Unix milliseconds.
    pub last_activity_ms: i64,
    /// Messages and replies.
    pub message_count: u64,
    /// Users who take part.
    pub participants: Vec<String>,
}

/// A page of a list.
#[derive(Debug, PartialEq, Eq)]
pub struct Page {
    /// Most recent first.
    pub items: Vec<Listed>,
    /// Where the next page starts, if there is one.
    pub next: Option<ListCursor>,
    /// How many the whole list holds.
    pub total: usize,
}

/// Every conversation known, by key.
#[derive(Debug, Default)]
pub struct ConversationIndex {
    slots: Vec<Option<Slot>>,
    free: Vec<u32>,
    /// Slots by key, hashed by their `tie` (the key's hash): no second copy of the key.
    by_key: HashTable<u32>,
    tenants: Interner,
    users: Interner,
    by_tenant: HashMap<u32, BTreeSet<Rank>>,
    by_user: HashMap<(u32, u32), BTreeSet<Rank>>,
}

#[derive(Debug, Default)]
struct Interner {
    ids: HashMap<Box<str>, u32>,
    names: Vec<Box<str>>,
}

impl Interner {
    fn intern(&mut self, name: &str) -> u32 {
        if let Some(&id) = self.ids.get(name) {
            return id;
        }
        let id = u32::try_from(self.names.len()).unwrap_or(u32::MAX);
        self.names.push(name.into());
        self.ids.insert(name.into(), id);
        id
    }

    fn get(&self, name: &str) -> Option<u32> {
        self.ids.get(name).copied()
    }

    fn name(&self, id: u32) -> &str {
        self.names.get(id as usize).map_or("", |n| n)
    }
}

/// FNV-1a: a hash every worker computes alike (std's may change between Rust releases).
fn tie_of(key: &str) -> u64 {
    key.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

// === impl ConversationIndex ===

impl ConversationIndex {
    /// Conversations known.
    pub fn len(&self) -> usize {
        self.by_key.len()
    }

    fn slot_of(&self, key: &str) -> Option<u32> {
        let slots = &self.slots;
        self.by_key
            .find(tie_of(key), |&at| {
                slots
                    .get(at as usize)
                    .is_some_and(|s| s.as_ref().is_some_and(|s| &*s.key == key))
            })
            .copied()
    }

    /// Takes an entry of conversation `key`. An entry that says less than the one held (fewer
    /// messages, or as many and older) is an earlier writer's — a deposed owner's — and is
    /// ignored; returns whether it was taken.
    pub fn upsert(&mut self, key: &str, e: &IndexEntry) -> bool {
        if let Some(at) = self.slot_of(key)
            && let Some(Some(held)) = self.slots.get(at as usize)
            && (e.message_count, e.last_activity_ms) < (held.count, held.last_ms)
        {
            return false;
        }
        self.remove(key);
        let tenant = self.tenants.intern(&e.tenant);
        let participants = match e.participants.as_slice() {
            [one] => Participants::One(self.users.intern(one)),
            many => Participants::Many(many.iter().map(|u| self.users.intern(u)).collect()),
        };
        let slot = Slot {
            key: key.into(),
            title: e.title.as_str().into(),
            tenant,
            participants,
            last_ms: e.last_activity_ms,
            count: e.message_count,
            tie: tie_of(key),
        };
        let at = match self.free.pop() {
            Some(at) => at,
            None => {
                self.slots.push(None);
                u32::try_from(self.slots.len() - 1).unwrap_or(u32::MAX)
            }
        };
        let rank = (Reverse(slot.last_ms), slot.tie, at);
        self.by_tenant.entry(tenant).or_default().insert(rank);
        for &u in slot.participants.as_slice() {
            self.by_user.entry((tenant, u)).or_default().insert(rank);
        }
        let tie = slot.tie;
        if let Some(s) = self.slots.get_mut(at as usize) {
            *s = Some(slot);
        }
        // in its slot first: a growing table rehashes every entry, this one included
        let slots = &self.slots;
        self.by_key.insert_unique(tie, at, |&s| {
            slots
                .get(s as usize)
                .and_then(Option::as_ref)
                .map_or(0, |s| s.tie)
        });
        true
    }

    /// Forgets conversation `key` (deleted).
    pub fn remove(&mut self, key: &str) {
        let Some(at) = self.slot_of(key) else { return };
        if let Ok(found) = self.by_key.find_entry(tie_of(key), |&s| s == at) {
            found.remove();
        }
        let Some(slot) = self.slots.get_mut(at as usize).and_then(Option::take) else {
            return;
        };
        let rank = (Reverse(slot.last_ms), slot.tie, at);
        if let Some(set) = self.by_tenant.get_mut(&slot.tenant) {
            set.remove(&rank);
        }
        for &u in slot.participants.as_slice() {
            if let Some(set) = self.by_user.get_mut(&(slot.tenant, u)) {
                set.remove(&rank);
            }
        }
        self.free.push(at);
    }

    /// A page of `tenant`'s conversations (those `user` takes part in, when given), most
    /// recent first, after `after`, at most `limit`.
    pub fn list(&self, tenant: &str, user: Option<&str>, after: Option<ListCursor>, limit: usize) -> Page {
        let empty = BTreeSet::new();
        let set = self
            .tenants
            .get(tenant)
            .and_then(|t| match user {
                None => self.by_tenant.get(&t),
                Some(u) => self.users.get(u).and_then(|u| self.by_user.get(&(t, u))),
            })
            .unwrap_or(&empty);
        let from = after.map_or(Bound::Unbounded, |c| {
            Bound::Excluded((Reverse(c.last_ms), c.tie, u32::MAX))
        });
        let mut ranks = set.range((from, Bound::Unbounded));
        let mut items = Vec::new();
        let mut last = None;
        for &(_, _, at) in ranks.by_ref().take(limit) {
            if let Some(Some(s)) = self.slots.get(at as usize) {
                items.push(self.listed(s));
                last = Some(ListCursor {
                    last_ms: s.last_ms,
                    tie: s.tie,
                });
            }
        }
        Page {
            next: ranks.next().and(last),
            items,
            total: set.len(),
        }
    }

    fn listed(&self, s: &Slot) -> Listed {
        Listed {
            id: split_key(&s.key).1.to_string(),
            title: s.title.to_string(),
            last_activity_ms: s.last_ms,
            message_count: s.count,
            participants: s
                .participants
                .as_slice()
                .iter()
                .map(|&u| self.users.name(u).to_string())
                .collect(),
        }
    }
}

#[cfg(test)]
mod tests;
