//! Tenants: every conversation belongs to exactly one, and the tenant is part of its identity
//! everywhere. A conversation's Kafka key — and so its partition, its place in the stores, the
//! hub and every cache — is `tenant/id`, except for the default tenant, whose conversations keep
//! the bare id (so conversations written before tenants existed stay where they are, and
//! placement stays murmur2 of the key, as Java producers compute it). Ids and tenant names
//! cannot contain `/` (`[A-Za-z0-9._:-]`), so a key splits back unambiguously.

/// The tenant of records written before tenants existed, and of `--auth none`.
pub const DEFAULT_TENANT: &str = "default";

/// The Kafka key of conversation `id` of `tenant`.
pub fn conversation_key(tenant: &str, id: &str) -> String {
    if tenant == DEFAULT_TENANT || tenant.is_empty() {
        id.to_string()
    } else {
        format!("{tenant}/{id}")
    }
}

/// The tenant and the id of a conversation key.
pub fn split_key(key: &str) -> (&str, &str) {
    key.split_once('/').unwrap_or((DEFAULT_TENANT, key))
}

pub(crate) fn default_tenant() -> String {
    DEFAULT_TENANT.to_string()
}

pub(crate) fn is_default_tenant(t: &str) -> bool {
    t == DEFAULT_TENANT
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_default_tenant_keeps_the_bare_id() {
        assert_eq!(conversation_key(DEFAULT_TENANT, "conv-123"), "conv-123");
        assert_eq!(conversation_key("acme", "conv-123"), "acme/conv-123");
        assert_eq!(split_key("conv-123"), (DEFAULT_TENANT, "conv-123"));
        assert_eq!(split_key("acme/conv-123"), ("acme", "conv-123"));
        // the same id under two tenants is two conversations, usually on two partitions
        assert_ne!(conversation_key("acme", "c"), conversation_key("globex", "c"));
    }

    proptest! {
        #[test]
        fn keys_split_back(tenant in "[A-Za-z0-9._:-]{1,16}", id in "[A-Za-z0-9._:-]{1,32}") {
            let key = conversation_key(&tenant, &id);
            prop_assert_eq!(split_key(&key), (tenant.as_str(), id.as_str()));
        }
    }
}
