//! The caller a credential stands for.

use meshchat_wire::conversation_key;
use serde::{Deserialize, Serialize};

/// What a caller may do. Ordered: a higher role has every right of a lower one within its
/// tenant, except that `operator` (the mesh itself) reads no conversation.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The conversations of its tenant it started or takes part in.
    User,
    /// Any conversation of its tenant, `/api/mesh`, migrating its conversations.
    Admin,
    /// The mesh: peers and the operator (`/api/mesh`, migrating partitions and workers).
    Operator,
}

impl Role {
    /// The role named `s` (`user`, `admin`, `operator`).
    pub fn parse(s: &str) -> Option<Role> {
        match s {
            "user" => Some(Role::User),
            "admin" => Some(Role::Admin),
            "operator" => Some(Role::Operator),
            _ => None,
        }
    }

    /// Its name.
    pub fn as_str(self) -> &'static str {
        match self {
            Role::User => "user",
            Role::Admin => "admin",
            Role::Operator => "operator",
        }
    }
}

/// An authenticated caller.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Identity {
    /// Tenant: the namespace of its conversations.
    pub tenant: String,
    /// User id within the tenant; a message's sender.
    pub user: String,
    /// What it may do.
    pub role: Role,
}

impl Identity {
    /// The key of conversation `id` within this caller's tenant.
    pub fn key(&self, id: &str) -> String {
        conversation_key(&self.tenant, id)
    }

    /// May read and write conversations at all.
    pub fn chats(&self) -> bool {
        matches!(self.role, Role::User | Role::Admin)
    }

    /// May see the mesh (`/api/mesh`) and ask for moves.
    pub fn sees_mesh(&self) -> bool {
        matches!(self.role, Role::Admin | Role::Operator)
    }
}
