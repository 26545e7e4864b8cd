//! Consumer group ids. Only the owners' group holds commits; the others name clients that assign
//! partitions themselves, so the broker's logs and metrics tell which client asked.

/// The owners of one mesh: their offset commits (with the fence before each, see
/// [`super::commit_metadata`]) are where a take-over and a starting fan-out begin reading.
pub fn owners(topic_prefix: &str) -> String {
    format!("{topic_prefix}meshchat-owners")
}

/// One worker's live fan-out.
pub fn fanout(node_id: &str) -> String {
    format!("meshchat-fanout-{node_id}")
}

/// A worker's view of the mesh (assignment tables and events).
pub const MESH_VIEW: &str = "meshchat-mesh-watch";
/// Every worker's reader of the conversation index.
pub const INDEX: &str = "meshchat-index";
/// A worker's lag queries.
pub const LAG: &str = "meshchat-lag";
/// A worker's Kafka reachability probe.
pub const PROBE: &str = "meshchat-probe";
/// Metadata queries (partition counts).
pub const METADATA: &str = "meshchat-meta";
/// Reads of a conversation's log by a worker that does not own it.
pub const LOG_READ: &str = "meshchat-logread";
/// The balancer's reader of heartbeats and migrate requests.
pub const BALANCER: &str = "meshchat-balancer";
/// The balancer's metadata and table reads.
pub const BALANCER_METADATA: &str = "meshchat-balancer-meta";
