use super::*;
use meshchat_wire::AgentReply;
use proptest::prelude::*;
use time::OffsetDateTime;

fn user(id: &str, user: &str) -> ChatRecord {
    ChatRecord::UserMessage(UserMessage {
        v: 1,
        id: id.into(),
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        user_id: user.into(),
        content: format!("question {id}"),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        accepted_by: "n".into(),
        accepted_at: None,
    })
}

fn reply(to: &str) -> ChatRecord {
    ChatRecord::AgentReply(AgentReply {
        v: 1,
        id: format!("r-{to}"),
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        in_reply_to: to.into(),
        sender: "agent".into(),
        content: format!("answer {to}"),
        timestamp: OffsetDateTime::UNIX_EPOCH,
        node: "n".into(),
        epoch: 1,
        error: None,
        completion_tokens: 2,
        attempt: 0,
        chunks: 1,
        cancelled: false,
    })
}

#[test]
fn answers_one_at_a_time_in_order() {
    let mut c = Conversation::new("c");
    c.apply(0, user("m1", "u"), 1, 100, 0);
    c.apply(1, user("m2", "u"), 1, 100, 0);
    let (o, m) = c.next_to_answer().expect("m1 pending");
    assert_eq!((o, m.id.as_str()), (0, "m1"));
    c.in_flight = Some("m1".into());
    assert!(c.next_to_answer().is_none());
    assert_eq!(c.apply(2, reply("m1"), 1, 100, 0), Applied::Reply);
    assert_eq!(c.next_to_answer().map(|(_, m)| m.id.clone()), Some("m2".into()));
}

#[test]
fn second_reply_is_a_duplicate_and_stale_offsets_are_ignored() {
    let mut c = Conversation::new("c");
    c.apply(5, user("m1", "u"), 1, 100, 0);
    assert_eq!(c.apply(6, reply("m1"), 1, 100, 0), Applied::Reply);
    assert_eq!(c.apply(7, reply("m1"), 1, 100, 0), Applied::DuplicateReply);
    assert_eq!(c.apply(6, reply("m1"), 1, 100, 0), Applied::Stale);
    assert_eq!(c.entries.len(), 2);
}

#[test]
fn eviction_keeps_pending_messages() {
    let mut c = Conversation::new("c");
    c.apply(0, user("m0", "u"), 1, 2, 0);
    c.apply(1, user("m1", "u"), 1, 2, 0);
    c.apply(2, user("m2", "u"), 1, 2, 0);
    assert_eq!(c.entries.len(), 3, "all three are pending");
    c.apply(3, reply("m0"), 1, 2, 0);
    assert_eq!(c.entries.front().map(|e| e.offset), Some(1));
}

#[test]
fn context_turns_skip_error_replies_and_later_messages() {
    let mut c = Conversation::new("c");
    c.apply(0, user("m1", "u"), 3, 100, 0);
    let mut err = reply("m1");
    if let ChatRecord::AgentReply(r) = &mut err {
        r.error = Some(meshchat_wire::ReplyError {
            kind: meshchat_wire::ReplyErrorKind::Timeout,
            message: "t".into(),
            attempts: 3,
        });
    }
    c.apply(1, err, 0, 100, 0);
    c.apply(2, user("m2", "u"), 3, 100, 0);
    c.apply(3, user("m3", "u"), 3, 100, 0);
    let turns = c.turns_until(2);
    assert_eq!(
        turns.iter().map(|t| t.role).collect::<Vec<_>>(),
        vec![Role::User, Role::User]
    );
}

/// A log: user messages m0..mn with replies to some of them placed after their question.
fn arb_log() -> impl Strategy<Value = Vec<ChatRecord>> {
    proptest::collection::vec((any::<bool>(), any::<bool>(), 0u8..3), 1..40).prop_map(|spec| {
        let mut log = Vec::new();
        for (i, (answered, dup, user_n)) in spec.into_iter().enumerate() {
            let id = format!("m{i}");
            log.push(user(&id, &format!("u{user_n}")));
            if answered {
                log.push(reply(&id));
                if dup {
                    log.push(reply(&id));
                }
            }
        }
        log
    })
}

proptest! {
    /// Restoring a snapshot taken at any point and replaying the rest of the log (from any
    /// earlier offset, as after a crash before commit) gives the state of a straight replay.
    #[test]
    fn snapshot_plus_replay_equals_full_replay(log in arb_log(), cut in any::<prop::sample::Index>(), back in 0usize..5, limit in 1usize..50) {
        let mut full = Conversation::new("c");
        for (o, r) in log.iter().enumerate() {
            full.apply(o as i64, r.clone(), 1, limit, 0);
        }
        let cut = cut.index(log.len() + 1);
        let mut first = Conversation::new("c");
        for (o, r) in log.iter().enumerate().take(cut) {
            first.apply(o as i64, r.clone(), 1, limit, 0);
        }
        let mut restored = Conversation::from_snapshot(first.to_snapshot(1), |_| 1);
        for (o, r) in log.iter().enumerate().skip(cut.saturating_sub(back)) {
            restored.apply(o as i64, r.clone(), 1, limit, 0);
        }
        restored.dirty = full.dirty;
        prop_assert_eq!(&restored.pending, &full.pending);
        prop_assert_eq!(&restored.entries, &full.entries);
        prop_assert_eq!(&restored.participants, &full.participants);
        // every user message is either pending or has exactly one reply retained or evicted
        let replies = full.entries.iter().filter(|e| matches!(e.record, ChatRecord::AgentReply(_))).count();
        let users = log.iter().filter(|r| matches!(r, ChatRecord::UserMessage(_))).count();
        prop_assert!(replies + full.pending.len() <= users);
    }
}

fn fence(epoch: u64) -> ChatRecord {
    ChatRecord::EpochFence(meshchat_wire::EpochFence {
        v: 1,
        partition: 0,
        epoch,
        owner: "b".into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
    })
}

fn reply_at(to: &str, epoch: u64) -> ChatRecord {
    let mut r = reply(to);
    if let ChatRecord::AgentReply(a) = &mut r {
        a.epoch = epoch;
    }
    r
}

#[test]
fn replies_older_than_the_fence_are_void() {
    let mut s = Store::new(100);
    s.apply(0, 0, user("m1", "u"), 1);
    s.apply(0, 1, user("m2", "u"), 1);
    // the old owner (epoch 1) answered m1 before the new owner fenced: valid
    assert_eq!(s.apply(0, 2, reply_at("m1", 1), 1), Applied::Reply);
    assert_eq!(s.apply(0, 3, fence(2), 0), Applied::Fence);
    // the zombie's late answer to m2 comes after the fence: void, m2 stays pending
    assert_eq!(s.apply(0, 4, reply_at("m2", 1), 1), Applied::Fenced);
    assert_eq!(s.get("c").map(|c| c.pending.len()), Some(1));
    assert_eq!(s.apply(0, 5, reply_at("m2", 2), 1), Applied::Reply);
    // fences are per partition
    assert_eq!(s.fence(0), 2);
    assert_eq!(s.fence(1), 0);
}

#[test]
fn the_same_id_under_two_tenants_is_two_conversations() {
    let mut s = Store::new(10);
    let mut acme = user("m1", "alice");
    if let ChatRecord::UserMessage(m) = &mut acme {
        m.tenant = "acme".into();
    }
    let plain = user("m2", "bob");
    s.apply(0, 1, acme, 1);
    s.apply(0, 2, plain, 1);
    assert_eq!(s.len(), 2);
    let a = s.get("acme/c").expect("acme's conversation");
    assert_eq!(a.participants, vec!["alice"]);
    assert_eq!(
        s.get("c").expect("the default tenant's").participants,
        vec!["bob"]
    );
    // a snapshot keeps the tenant, and restores under the same key
    let snap = a.to_snapshot(1);
    assert_eq!(
        (snap.conversation_id.as_str(), snap.tenant.as_str(), snap.key()),
        ("c", "acme", "acme/c".to_string())
    );
    let back = Conversation::from_snapshot(snap, |_| 1);
    assert_eq!(back.key, "acme/c");
}

#[test]
fn an_added_participant_joins_without_entering_the_history_and_survives_a_snapshot() {
    let mut c = Conversation::new("c");
    c.apply(10, user("m1", "alice"), 3, 50, 0);
    let add = ChatRecord::ParticipantAdded(meshchat_wire::ParticipantAdded {
        v: 1,
        id: "par-1".into(),
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        user_id: "bob".into(),
        added_by: "alice".into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
    });
    assert_eq!(
        c.apply(11, add.clone(), 0, 50, 0),
        Applied::Participant {
            new_participant: true
        }
    );
    assert_eq!(c.apply(11, add, 0, 50, 0), Applied::Stale);
    assert_eq!(c.participants, vec!["alice".to_string(), "bob".to_string()]);
    assert_eq!(c.entries.len(), 1, "membership, not history");
    assert_eq!(
        c.next_to_answer().map(|(o, _)| o),
        Some(10),
        "nothing to answer added"
    );
    let back = Conversation::from_snapshot(c.to_snapshot(1), |_| 1);
    assert_eq!(back.participants, c.participants);
}

fn sized(record: ChatRecord, bytes: usize) -> ChatRecord {
    match record {
        ChatRecord::UserMessage(mut m) => {
            m.content = "q".repeat(bytes);
            ChatRecord::UserMessage(m)
        }
        ChatRecord::AgentReply(mut r) => {
            r.content = "a".repeat(bytes);
            ChatRecord::AgentReply(r)
        }
        other => other,
    }
}

/// A log of messages of up to 6 KB, some answered.
fn arb_sized_log() -> impl Strategy<Value = Vec<ChatRecord>> {
    prop::collection::vec((0usize..6000, 0usize..6000, any::<bool>()), 1..40).prop_map(|msgs| {
        let mut log = Vec::new();
        for (i, (q, a, answered)) in msgs.into_iter().enumerate() {
            let id = format!("m{i}");
            log.push(sized(user(&id, &format!("u{}", i % 3)), q));
            if answered {
                log.push(sized(reply(&id), a));
            }
        }
        log
    })
}

proptest! {
    /// A snapshot never exceeds its byte limit, and restoring it and replaying the log from
    /// where the commit may be (never past an unanswered message it left out) loses no
    /// unanswered message and no participant.
    #[test]
    fn bounded_snapshot_plus_replay_keeps_every_unanswered_message(
        log in arb_sized_log(),
        cut in any::<prop::sample::Index>(),
        back in 0usize..3,
        max in 4_000usize..40_000,
    ) {
        let keep = Keep { bytes: max, ..Keep::from(200) };
        let mut full = Conversation::new("c");
        for (o, r) in log.iter().enumerate() {
            full.apply(o as i64, r.clone(), 1, keep, 0);
        }
        let cut = cut.index(log.len() + 1);
        let mut first = Conversation::new("c");
        for (o, r) in log.iter().enumerate().take(cut) {
            first.apply(o as i64, r.clone(), 1, keep, 0);
        }
        let snap = first.to_snapshot_within(1, max).expect("a bare snapshot fits");
        prop_assert!(snap.bytes.len() <= max, "{} > {max}", snap.bytes.len());
        let decoded: ConversationSnapshot = meshchat_wire::decode(&snap.bytes).expect("decodes");
        prop_assert_eq!(&decoded, &snap.record);
        // every unanswered message is in the snapshot or named as unstored
        let named: BTreeSet<i64> = decoded.entries.iter().map(|e| e.offset).chain(decoded.unstored.iter().copied()).collect();
        prop_assert!(first.pending.keys().all(|o| named.contains(o)));
        let commit = decoded.unstored.first().map_or(cut as i64, |u| (*u).min(cut as i64));
        let mut restored = Conversation::from_snapshot(decoded, |_| 1);
        let from = (commit as usize).saturating_sub(back);
        for (o, r) in log.iter().enumerate().skip(from) {
            restored.apply(o as i64, r.clone(), 1, keep, 0);
        }
        prop_assert_eq!(&restored.pending, &full.pending);
        prop_assert_eq!(&restored.participants, &full.participants);
        prop_assert!(restored.reread.is_empty());
        prop_assert!(restored.entries.iter().zip(restored.entries.iter().skip(1)).all(|(a, b)| a.offset < b.offset));
    }
}

#[test]
fn a_long_conversation_of_large_messages_snapshots_under_the_record_limit() {
    // the reproduction: 48 messages of 30 KiB and their (echoing) replies
    let keep = Keep {
        bytes: 768 * 1024,
        ..Keep::from(200)
    };
    let mut c = Conversation::new("c");
    for i in 0..48 {
        let id = format!("m{i}");
        c.apply(2 * i, sized(user(&id, "u"), 30 * 1024), 1, keep, 0);
        c.apply(2 * i + 1, sized(reply(&id), 30 * 1024), 1, keep, 0);
    }
    let snap = c.to_snapshot_within(1, 768 * 1024).expect("fits");
    assert!(snap.bytes.len() <= 768 * 1024, "{}", snap.bytes.len());
    assert!(snap.record.unstored.is_empty());
    // the newest history, without gaps, up to the last reply
    let offsets: Vec<i64> = snap.record.entries.iter().map(|e| e.offset).collect();
    assert_eq!(offsets.last(), Some(&95));
    assert!(offsets.len() >= 20, "{}", offsets.len());
    assert!(offsets.windows(2).all(|w| w[1] == w[0] + 1));
    // memory holds no more than a snapshot's worth either
    assert!(c.bytes <= 768 * 1024, "{}", c.bytes);
}

#[test]
fn unanswered_messages_that_do_not_fit_are_named_and_hold_the_commit() {
    let mut c = Conversation::new("c");
    for i in 0..10 {
        c.apply(i, sized(user(&format!("m{i}"), "u"), 3000), 1, 200, 0);
    }
    let snap = c.to_snapshot_within(1, 10_000).expect("fits");
    assert!(snap.bytes.len() <= 10_000);
    assert_eq!(snap.record.entries.len() + snap.record.unstored.len(), 10);
    assert_eq!(snap.record.pending.len(), snap.record.entries.len());
    // the oldest are kept; the newest come back from the log
    assert_eq!(snap.record.entries[0].offset, 0);
    let first_left_out = snap.record.unstored[0];
    let mut back = Conversation::from_snapshot(snap.record, |_| 1);
    assert_eq!(back.holds_commit, Some(first_left_out));
    assert_eq!(back.read_from(), first_left_out);
    for i in first_left_out..10 {
        assert!(matches!(
            back.apply(i, sized(user(&format!("m{i}"), "u"), 3000), 1, 200, 0),
            Applied::UserMessage { .. }
        ));
    }
    assert_eq!(back.pending.len(), 10);
    assert_eq!(
        back.apply(3, user("m3", "u"), 1, 200, 0),
        Applied::Stale,
        "applied once"
    );
}

fn keyed(id: &str, at: i64) -> ChatRecord {
    let mut r = user(id, "u");
    if let ChatRecord::UserMessage(m) = &mut r {
        m.id = format!("{KEYED_ID_PREFIX}{id}");
        m.accepted_at = Some(OffsetDateTime::from_unix_timestamp(at).expect("time"));
    }
    r
}

#[test]
fn a_retried_keyed_message_is_dropped_also_after_a_snapshot_and_for_a_day() {
    let mut c = Conversation::new("c");
    assert!(matches!(
        c.apply(1, keyed("k1", 1000), 1, 50, 0),
        Applied::UserMessage { .. }
    ));
    assert_eq!(c.apply(2, keyed("k1", 1005), 1, 50, 0), Applied::DuplicateMessage);
    assert_eq!((c.entries.len(), c.pending.len()), (1, 1), "stored once");
    // a restored owner still knows it
    let mut back = Conversation::from_snapshot(c.to_snapshot(1), |_| 1);
    assert_eq!(
        back.apply(3, keyed("k1", 2000), 1, 50, 0),
        Applied::DuplicateMessage
    );
    // a day later the key is forgotten (a message of then pushes it out)
    let day = 24 * 3600;
    assert!(matches!(
        back.apply(4, keyed("k2", 1000 + day + 1), 1, 50, 0),
        Applied::UserMessage { .. }
    ));
    assert!(matches!(
        back.apply(5, keyed("k1", 1000 + day + 2), 1, 50, 0),
        Applied::UserMessage { .. }
    ));
    // ordinary ids are not remembered
    assert!(back.keyed.iter().all(|k| k.id.starts_with(KEYED_ID_PREFIX)));
    assert_eq!(back.keyed.len(), 2);
}

#[test]
fn messages_past_a_conversation_limit_are_refused_an_answer_but_wait_for_their_error_reply() {
    let keep = Keep {
        pending: 2,
        participants: 2,
        ..Keep::from(50)
    };
    let mut c = Conversation::new("c");
    let refused = |a: Applied| match a {
        Applied::UserMessage { refused, .. } => refused,
        other => panic!("{other:?}"),
    };
    assert_eq!(refused(c.apply(0, user("m0", "ann"), 1, keep, 0)), None);
    assert_eq!(refused(c.apply(1, user("m1", "bob"), 1, keep, 0)), None);
    // a third unanswered message, from a participant: over the pending cap
    assert_eq!(
        refused(c.apply(2, user("m2", "ann"), 1, keep, 0)),
        Some(RefusedWhy::Pending)
    );
    // a third participant: over that cap, and not made a participant
    assert_eq!(
        refused(c.apply(3, user("m3", "cid"), 1, keep, 0)),
        Some(RefusedWhy::Participants)
    );
    assert_eq!(c.participants, vec!["ann".to_string(), "bob".to_string()]);
    // answers go in order to the accepted ones only; the refused wait for their error replies
    assert_eq!(c.next_to_answer().map(|(o, _)| o), Some(0));
    let waiting: Vec<i64> = c.refused_pending().map(|(o, _, _)| o).collect();
    assert_eq!(waiting, vec![2, 3]);
    // a snapshot keeps the refusals
    let mut back = Conversation::from_snapshot(c.to_snapshot(1), |_| 1);
    assert_eq!(back.refused.len(), 2);
    assert_eq!(back.apply(4, reply("m2"), 1, keep, 0), Applied::Reply);
    assert_eq!(back.apply(5, reply("m3"), 1, keep, 0), Applied::Reply);
    assert!(back.refused.is_empty());
    assert_eq!(back.pending.len(), 2);
    assert_eq!(back.next_to_answer().map(|(o, _)| o), Some(0));
}

fn at(record: ChatRecord, secs: i64) -> ChatRecord {
    let t = OffsetDateTime::from_unix_timestamp(secs).expect("time");
    match record {
        ChatRecord::UserMessage(mut m) => {
            m.conversation_id = format!("c{secs}");
            m.accepted_at = Some(t);
            ChatRecord::UserMessage(m)
        }
        ChatRecord::AgentReply(mut r) => {
            r.conversation_id = format!("c{secs}");
            r.timestamp = t;
            ChatRecord::AgentReply(r)
        }
        other => other,
    }
}

#[test]
fn idle_and_least_recent_conversations_leave_memory_only_when_their_snapshot_holds_everything() {
    let mut s = Store::new(50);
    // five answered conversations, active at t = 100..=104, snapshotted
    for i in 0..5 {
        s.apply(0, 2 * i, at(user(&format!("m{i}"), "u"), 100 + i), 1);
        s.apply(0, 2 * i + 1, at(reply(&format!("m{i}")), 100 + i), 1);
    }
    for c in s.iter_mut() {
        c.dirty = false;
        c.stored_through = c.last_offset;
        c.snapshot_offset = Some(c.last_offset * 10);
    }
    // one with a message waiting, one changed since its snapshot: they stay
    s.apply(0, 20, at(user("w", "u"), 90), 1);
    s.get_mut("c104").expect("c104").dirty = true;
    assert_eq!(s.len(), 6);
    // at t = 160 with 50 s of idleness allowed: 100..=104 are idle but c104 is dirty
    let evicted = s.evict_idle(160, 50, 1000, |_| 3);
    assert_eq!(evicted, 4);
    assert_eq!(s.len(), 2, "the waiting and the dirty one");
    assert_eq!(s.evicted("c100"), Some((3, 10)), "partition and snapshot offset");
    assert_eq!(s.evicted("c90"), None, "held");
    assert_eq!(s.evicted("never"), None);
    // back from its snapshot: no longer evicted
    let mut back = Conversation::new("c100");
    back.last_offset = 1;
    s.restore(back);
    assert_eq!(s.evicted("c100"), None);
    assert_eq!(s.evicted_len(), 3);
    // over the resident cap, the least recently active evictable ones go first
    for c in s.iter_mut() {
        c.dirty = false;
        c.stored_through = c.last_offset;
        c.snapshot_offset = Some(1);
    }
    s.apply(0, 21, at(user("n", "u"), 150), 1);
    s.apply(0, 22, at(reply("n"), 150), 1);
    if let Some(c) = s.get_mut("c150") {
        c.dirty = false;
        c.stored_through = c.last_offset;
        c.snapshot_offset = Some(2);
    }
    let before = s.len();
    let evicted = s.evict_idle(151, 1000, before - 1, |_| 0);
    assert_eq!(evicted, 1);
    assert!(s.get("c150").is_some(), "the most recent stays");
    // a released partition forgets its evicted conversations
    s.forget_evicted(3);
    assert_eq!(s.evicted("c101"), None);
}

fn cancel_request(id: &str) -> ChatRecord {
    ChatRecord::CancelRequest(meshchat_wire::CancelRequest {
        v: 1,
        id: id.into(),
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        requested_by: "ann".into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
    })
}

#[test]
fn a_cancel_stops_the_earliest_waiting_reply_only_and_a_replay_decides_alike() {
    let mut c = Conversation::new("c");
    // nothing waits: nothing to stop
    assert_eq!(
        c.apply(0, cancel_request("x0"), 0, 50, 0),
        Applied::Cancel { target: None }
    );
    c.apply(1, user("m1", "ann"), 1, 50, 0);
    c.apply(2, user("m2", "ann"), 1, 50, 0);
    c.in_flight = Some("m1".into());
    // the reply being generated (m1's) is stopped; m2 is not touched
    assert_eq!(
        c.apply(3, cancel_request("x1"), 0, 50, 0),
        Applied::Cancel {
            target: Some((1, true))
        }
    );
    assert_eq!(c.refused.get(&1), Some(&RefusedWhy::Cancelled));
    assert_eq!(c.entries.len(), 2, "a cancel is not history");
    // a second cancel before m1's reply is written stops m2's, which has not begun
    assert_eq!(
        c.apply(4, cancel_request("x2"), 0, 50, 0),
        Applied::Cancel {
            target: Some((2, false))
        }
    );
    // a cancel never reaches a message sent after it
    c.apply(5, user("m3", "ann"), 1, 50, 0);
    // a snapshot (or a new owner replaying the log) keeps both marks
    let back = Conversation::from_snapshot(c.to_snapshot(1), |_| 1);
    let marked: Vec<(i64, RefusedWhy)> = back.refused.iter().map(|(o, w)| (*o, *w)).collect();
    assert_eq!(
        marked,
        vec![(1, RefusedWhy::Cancelled), (2, RefusedWhy::Cancelled)]
    );
    let mut replayed = Conversation::new("c");
    for (o, r) in [
        (1, user("m1", "ann")),
        (2, user("m2", "ann")),
        (3, cancel_request("x1")),
        (4, cancel_request("x2")),
        (5, user("m3", "ann")),
    ] {
        replayed.apply(o, r, 1, 50, 0);
    }
    assert_eq!(replayed.refused, back.refused);
    assert_eq!(
        replayed.next_to_answer().map(|(o, _)| o),
        Some(5),
        "m3 is answered"
    );
    // the cancelled replies count like any reply
    assert_eq!(replayed.apply(6, reply("m1"), 1, 50, 0), Applied::Reply);
    assert_eq!(replayed.apply(7, reply("m2"), 1, 50, 0), Applied::Reply);
    assert!(replayed.refused.is_empty());
}

#[test]
fn with_interrupt_a_new_message_cancels_the_replies_earlier_ones_wait_for() {
    let keep = Keep {
        interrupt: true,
        ..Keep::from(50)
    };
    let interrupts = |a: Applied| match a {
        Applied::UserMessage { interrupts, .. } => interrupts,
        other => panic!("{other:?}"),
    };
    let mut c = Conversation::new("c");
    assert_eq!(interrupts(c.apply(1, user("m1", "ann"), 1, keep, 0)), vec![]);
    c.in_flight = Some("m1".into());
    // m2 interrupts m1's reply under way
    assert_eq!(
        interrupts(c.apply(2, user("m2", "ann"), 1, keep, 0)),
        vec![(1, true)]
    );
    // m3 comes before m1's cancelled reply is written: m2's, not begun, is cancelled too; m1 is
    // not cancelled twice
    assert_eq!(
        interrupts(c.apply(3, user("m3", "bob"), 1, keep, 0)),
        vec![(2, false)]
    );
    c.apply(4, reply("m1"), 1, keep, 0);
    c.in_flight = None;
    // only the newest is answered; the others wait for their cancelled replies
    assert_eq!(c.next_to_answer().map(|(o, _)| o), Some(3));
    let waiting: Vec<(i64, RefusedWhy)> = c.refused_pending().map(|(o, _, w)| (o, w)).collect();
    assert_eq!(waiting, vec![(2, RefusedWhy::Cancelled)]);
    // enqueue (the default) leaves earlier messages alone
    let mut q = Conversation::new("c");
    q.apply(1, user("m1", "ann"), 1, 50, 0);
    q.in_flight = Some("m1".into());
    assert_eq!(interrupts(q.apply(2, user("m2", "ann"), 1, 50, 0)), vec![]);
    assert!(q.refused.is_empty());
}

fn deleted() -> ChatRecord {
    ChatRecord::ConversationDeleted(meshchat_wire::ConversationDeleted {
        v: 1,
        id: "del-1".into(),
        conversation_id: "c".into(),
        tenant: meshchat_wire::DEFAULT_TENANT.into(),
        deleted_by: "ann".into(),
        timestamp: OffsetDateTime::UNIX_EPOCH,
    })
}

#[test]
fn a_deleted_conversation_is_gone_and_a_later_message_starts_afresh() {
    let mut s = Store::new(50);
    s.apply(0, 0, user("m1", "ann"), 1);
    s.apply(0, 1, reply("m1"), 1);
    s.apply(0, 2, user("m2", "ann"), 1);
    assert_eq!(s.apply(0, 3, deleted(), 0), Applied::Deleted);
    assert!(s.get("c").is_none());
    assert_eq!(s.deleted, vec![(0, "c".to_string())], "tombstones are due");
    // m2's reply, written after the deletion, brings nothing back; nor does a cancel
    assert_eq!(s.apply(0, 4, reply("m2"), 1), Applied::DuplicateReply);
    assert_eq!(
        s.apply(0, 5, cancel_request("x"), 0),
        Applied::Cancel { target: None }
    );
    assert!(s.get("c").is_none());
    s.apply(0, 6, user("m3", "bob"), 1);
    let c = s.get("c").expect("a new conversation");
    assert_eq!(
        (c.entries.len(), c.message_count, c.participants.clone()),
        (1, 1, vec!["bob".to_string()])
    );
    assert_eq!(c.title.as_deref(), Some("question m3"));
    // a reader of the log applying it all to one conversation ends alike
    let mut replayed = Conversation::new("c");
    for (o, r) in [
        (0, user("m1", "ann")),
        (1, reply("m1")),
        (2, user("m2", "ann")),
        (3, deleted()),
    ] {
        replayed.apply(o, r, 1, 50, 0);
    }
    assert!(replayed.entries.is_empty() && replayed.participants.is_empty());
    replayed.apply(6, user("m3", "bob"), 1, 50, 0);
    assert_eq!(replayed.message_count, 1);
}
