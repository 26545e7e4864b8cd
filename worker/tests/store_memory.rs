//! Heap bytes a resident conversation costs the owner's store: one exchange (a user message and
//! its reply, sized like real ones) applied to many conversations, counted by a global allocator.
//! Allocation sizes are deterministic, so this is a budget test, not a timing one; `make bench`
//! measures the whole worker's RSS.

mod counting;

use meshchat_wire::{AgentReply, ChatRecord, UserMessage, partition_for};
use meshchat_worker::Store;
use time::OffsetDateTime;

/// What a real exchange looks like: UUIDv7 ids, a short question, a fake-LLM-sized answer.
fn exchange(conv: &str, i: usize) -> (ChatRecord, ChatRecord) {
    let msg_id = format!("msg-{:032x}", i as u128 * 7919);
    let user = ChatRecord::UserMessage(UserMessage {
        v: 1,
        id: msg_id.clone(),
        conversation_id: conv.to_string(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        user_id: "user-42".into(),
        content: "remember me".into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        accepted_by: "support-0".into(),
        accepted_at: Some(OffsetDateTime::UNIX_EPOCH),
    });
    let reply = ChatRecord::AgentReply(AgentReply {
        v: 1,
        id: format!("rep-{:032x}", i as u128 * 104_729),
        conversation_id: conv.to_string(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        in_reply_to: msg_id,
        sender: "support".into(),
        content: "Reply to \"remember me\" (turn 1, 2 messages in context)".into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        node: "support-1".into(),
        epoch: 3,
        error: None,
        completion_tokens: 12,
        attempt: 0,
        chunks: 1,
        cancelled: false,
    });
    (user, reply)
}

#[test]
fn a_resident_conversation_of_one_exchange_costs_under_two_kib() {
    const N: usize = 20_000;
    let mut store = Store::new(50);
    let before = counting::live();
    // records are made inside the measured span: their strings are part of what the store holds
    for i in 0..N {
        let conv = format!("resident-{i}");
        let (user, reply) = exchange(&conv, i);
        let p = partition_for(&conv, 24);
        store.apply(p, 2 * i as i64, user, 3);
        store.apply(p, 2 * i as i64 + 1, reply, 12);
    }
    let per_conversation = (counting::live() - before) / N as isize;
    eprintln!("store: {per_conversation} heap bytes per resident conversation (one exchange)");
    assert_eq!(store.len(), N);
    assert!(
        per_conversation <= 2048,
        "{per_conversation} bytes per resident conversation (budget 2048)"
    );
}
