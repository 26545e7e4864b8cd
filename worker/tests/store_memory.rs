//! Heap bytes a resident conversation costs the owner's store: one exchange (a user message and
//! its reply, sized like real ones) applied to many conversations, counted by a global allocator.
//! Allocation sizes are deterministic, so this is a budget test, not a timing one; `make bench`
//! measures the whole worker's RSS.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use meshchat_crds::{AgentReply, ChatRecord, UserMessage, partition_for};
use meshchat_worker::store::Store;
use time::OffsetDateTime;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as asked for.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// What a real exchange looks like: UUIDv7 ids, a short question, a fake-LLM-sized answer.
fn exchange(conv: &str, i: usize) -> (ChatRecord, ChatRecord) {
    let msg_id = format!("msg-{:032x}", i as u128 * 7919);
    let user = ChatRecord::UserMessage(UserMessage {
        v: 1,
        id: msg_id.clone(),
        conversation_id: conv.to_string(),
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
    });
    (user, reply)
}

#[test]
fn a_resident_conversation_of_one_exchange_costs_under_two_kib() {
    const N: usize = 20_000;
    let mut store = Store::new(50);
    let before = LIVE.load(Ordering::Relaxed);
    // records are made inside the measured span: their strings are part of what the store holds
    for i in 0..N {
        let conv = format!("resident-{i}");
        let (user, reply) = exchange(&conv, i);
        let p = partition_for(&conv, 24);
        store.apply(p, 2 * i as i64, user, 3);
        store.apply(p, 2 * i as i64 + 1, reply, 12);
    }
    let per_conversation = (LIVE.load(Ordering::Relaxed) - before) / N as isize;
    eprintln!("store: {per_conversation} heap bytes per resident conversation (one exchange)");
    assert_eq!(store.len(), N);
    assert!(
        per_conversation <= 2048,
        "{per_conversation} bytes per resident conversation (budget 2048)"
    );
}
