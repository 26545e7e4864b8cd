//! What the fuzz targets run (`fuzz/`, `make fuzz`), here so unit tests replay every input the
//! fuzzer ever found troublesome (`fuzz/regressions/`) on the stable toolchain.

use meshchat_wire::{ChatRecord, ConversationSnapshot, SCHEMA_VERSION, UserMessage, decode};
use time::OffsetDateTime;

use crate::store::{Conversation, Keep, SnapshotError};
use crate::validate::{parse_migrate, parse_participant, parse_send};

/// Request bodies: whatever a route accepts becomes a record that encodes and decodes to itself
/// (nothing accepted can fail to be stored); the rest is a clear error.
pub fn request_bodies(data: &[u8]) {
    let _ = parse_participant(data);
    let _ = parse_migrate(data);
    for sender_from_body in [false, true] {
        let Ok(req) = parse_send(data, 32 * 1024, sender_from_body) else {
            continue;
        };
        let record = ChatRecord::UserMessage(UserMessage {
            v: SCHEMA_VERSION,
            id: "msg-fuzz".into(),
            conversation_id: req.conversation_id,
            tenant: "acme".into(),
            user_id: req.user_id.unwrap_or_else(|| "u".into()),
            content: req.content,
            timestamp: req.timestamp.unwrap_or(OffsetDateTime::UNIX_EPOCH),
            accepted_by: "node-0".into(),
            accepted_at: Some(OffsetDateTime::UNIX_EPOCH),
        });
        // an accepted send stores, and reads back unchanged
        meshchat_wire::fuzz::assert_round_trip(&record);
    }
}

/// A conversation fed any sequence of records (`data` split at 0xff bytes, each piece a JSON
/// record): applying never panics, and a snapshot bounded by bytes stays within its bound and
/// restores the unanswered messages.
#[allow(clippy::panic)]
pub fn conversation(data: &[u8]) {
    let Some((&first, rest)) = data.split_first() else {
        return;
    };
    // the first byte picks the limits, so small ones are explored too
    let max_bytes = 2048 + usize::from(first) * 512;
    let keep = Keep {
        entries: usize::from(first % 16) + 1,
        bytes: max_bytes,
        pending: usize::from(first % 8) + 1,
        participants: usize::from(first % 4) + 1,
        interrupt: first % 2 == 1,
    };
    let mut c = Conversation::new("acme/c");
    for (offset, piece) in rest.split(|b| *b == 0xff).enumerate() {
        if let Ok(record) = decode::<ChatRecord>(piece) {
            c.apply(offset as i64, record, 1, keep, 0);
        }
    }
    let snapshot = match c.to_snapshot_within(1, max_bytes) {
        Ok(s) => s,
        Err(SnapshotError::TooLarge { .. }) => return,
        Err(e) => panic!("{e}"),
    };
    assert!(
        snapshot.bytes.len() <= max_bytes,
        "{} > {max_bytes}",
        snapshot.bytes.len()
    );
    let Ok(back) = decode::<ConversationSnapshot>(&snapshot.bytes) else {
        panic!("a snapshot does not decode")
    };
    let restored = Conversation::from_snapshot(back, |_| 1);
    let named: Vec<i64> = restored
        .pending
        .keys()
        .copied()
        .chain(restored.reread.iter().copied())
        .collect();
    assert!(
        c.pending.keys().all(|o| named.contains(o)),
        "an unanswered message was lost"
    );
}

#[cfg(test)]
mod tests {
    /// Every seed and every input the fuzzer found troublesome, replayed.
    #[test]
    fn fuzz_seeds_and_regressions_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        for (target, run) in [
            ("request_bodies", super::request_bodies as fn(&[u8])),
            ("conversation", super::conversation),
        ] {
            let mut n = 0;
            for dir in ["seeds", "regressions"] {
                for entry in std::fs::read_dir(root.join(dir).join(target)).expect("fuzz dir") {
                    run(&std::fs::read(entry.expect("entry").path()).expect("input"));
                    n += 1;
                }
            }
            assert!(n >= 1, "{target}: the seeds are there");
        }
    }
}
