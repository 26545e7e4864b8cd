use super::*;
use crate::live::fixtures::{chunk, reply, trace, user};
use proptest::prelude::*;

/// The two topics of a conversation with `chunks[i]` chunks for reply i: the messages log
/// (user i at offset 2i, reply i at 2i+1) and the stream.
fn topics(chunks: &[u32]) -> (Vec<(i64, ChatRecord)>, Vec<ReplyChunk>) {
    let mut log = Vec::new();
    let mut stream = Vec::new();
    for (i, n) in chunks.iter().enumerate() {
        let at = 2 * i as i64;
        log.push((at, user(i)));
        log.push((at + 1, reply(i, *n)));
        stream.extend((0..*n).map(|s| chunk(i, at, s)));
    }
    (log, stream)
}

fn expected(chunks: &[u32]) -> Vec<String> {
    let mut want = Vec::new();
    for (i, n) in chunks.iter().enumerate() {
        want.push(format!("M{i}"));
        want.extend((0..*n).map(|s| format!("T{i}.{s}")));
        want.push(format!("R{i}"));
    }
    want
}

#[test]
fn chunk_before_its_message_waits() {
    let now = Instant::now();
    let mut s = Sequencer::new(Duration::from_millis(500));
    assert!(s.on_chunk(0, chunk(0, 0, 0), 0, 0, now).is_empty());
    assert_eq!(trace(&s.on_message(0, user(0), 0, now)), ["M0", "T0.0"]);
}

#[test]
fn reply_before_its_chunks_waits_then_times_out() {
    let now = Instant::now();
    let mut s = Sequencer::new(Duration::from_millis(500));
    s.on_message(0, user(0), 0, now);
    assert!(s.on_message(1, reply(0, 2), 0, now).is_empty());
    assert!(
        s.on_message(2, user(1), 0, now).is_empty(),
        "queued behind the held reply"
    );
    assert_eq!(trace(&s.on_chunk(0, chunk(0, 0, 0), 3, 0, now)), ["T0.0"]);
    assert!(s.on_tick(now + Duration::from_millis(100)).is_empty());
    assert_eq!(trace(&s.on_tick(now + Duration::from_millis(600))), ["R0", "M1"]);
    assert!(
        s.on_chunk(0, chunk(0, 0, 1), 3, 0, now).is_empty(),
        "late chunk of a finished reply is dropped"
    );
}

proptest! {
    /// Any interleaving of the two topics yields message, tokens in order, reply — per turn,
    /// turns in order — when no hold times out.
    #[test]
    fn any_interleaving_is_ordered(chunks in proptest::collection::vec(0u32..5, 1..6), picks in proptest::collection::vec(any::<bool>(), 0..80)) {
        let (log, stream) = topics(&chunks);
        let now = Instant::now();
        let mut s = Sequencer::new(Duration::from_secs(60));
        let (mut li, mut si, mut out) = (0usize, 0usize, Vec::new());
        let mut picks = picks.into_iter();
        while li < log.len() || si < stream.len() {
            let take_log = si >= stream.len() || (li < log.len() && picks.next().unwrap_or(true));
            if take_log {
                let (o, r) = log[li].clone();
                out.extend(s.on_message(o, r, 0, now));
                li += 1;
            } else {
                // the reader's position on chat.messages is the next log offset it will read
                let pos = log.get(li).map_or(log.len() as i64, |(o, _)| *o);
                out.extend(s.on_chunk(si as i64, stream[si].clone(), pos, 0, now));
                si += 1;
            }
        }
        prop_assert_eq!(trace(&out), expected(&chunks));
        prop_assert!(!s.is_waiting());
        // each log's events leave in its order: a client's cursor (live/cursor.rs) only grows
        for topic in [Topic::Messages, Topic::Stream] {
            let offsets: Vec<i64> = out.iter().filter(|e| e.pos.topic == topic).map(|e| e.pos.offset).collect();
            prop_assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{:?}: {:?}", topic, offsets);
        }
    }
}

#[test]
fn a_second_reply_to_a_message_is_never_shown() {
    let now = Instant::now();
    let mut s = Sequencer::new(Duration::from_millis(500));
    s.on_message(0, user(0), 0, now);
    assert_eq!(trace(&s.on_message(1, reply(0, 0), 0, now)), ["R0"]);
    let mut dup = reply(0, 0);
    if let ChatRecord::AgentReply(r) = &mut dup {
        r.id = "r0-dup".into();
    }
    assert!(s.on_message(2, dup, 0, now).is_empty());
    assert!(
        s.on_chunk(0, chunk(0, 0, 0), 3, 0, now).is_empty(),
        "chunks of an answered message are dropped"
    );
}

#[test]
fn a_zombie_reply_and_its_chunks_behind_a_newer_fence_are_never_shown() {
    let now = Instant::now();
    let mut s = Sequencer::new(Duration::from_millis(500));
    assert_eq!(trace(&s.on_message(0, user(0), 2, now)), ["M0"]);
    // written under epoch 1, read after a fence of epoch 2: void
    assert!(s.on_chunk(0, chunk(0, 0, 0), 1, 2, now).is_empty());
    assert!(s.on_message(1, reply(0, 1), 2, now).is_empty());
    // the new owner's reply (epoch 2) counts, and is not a duplicate of the void one
    let mut real = reply(0, 0);
    if let ChatRecord::AgentReply(r) = &mut real {
        r.id = "r0-new".into();
        r.epoch = 2;
    }
    assert_eq!(trace(&s.on_message(2, real, 2, now)), ["R0-new"]);
}

#[test]
fn a_new_owner_starts_the_text_again() {
    let now = Instant::now();
    let mut s = Sequencer::new(Duration::from_millis(500));
    s.on_message(0, user(0), 1, now);
    let moved = |seq: u32| {
        let mut c = chunk(0, 0, seq);
        c.epoch = 2;
        c
    };
    let mut out = s.on_chunk(0, chunk(0, 0, 0), 1, 1, now);
    out.extend(s.on_chunk(1, chunk(0, 0, 1), 1, 1, now));
    // the conversation moved mid-reply: the new owner (epoch 2) answers from the start
    out.extend(s.on_chunk(2, moved(0), 1, 1, now));
    out.extend(s.on_chunk(3, chunk(0, 0, 1), 1, 1, now)); // a late one of epoch 1: dropped
    out.extend(s.on_chunk(4, moved(1), 1, 1, now));
    let mut done = reply(0, 2);
    if let ChatRecord::AgentReply(r) = &mut done {
        r.epoch = 2;
    }
    out.extend(s.on_message(1, done, 2, now));
    assert_eq!(trace(&out), ["T0.0", "T0.1", "T0.0", "T0.1", "R0"]);
    let epochs: Vec<u64> = out
        .iter()
        .filter_map(|e| match &e.event {
            LiveEvent::Token { epoch, .. } => Some(*epoch),
            _ => None,
        })
        .collect();
    assert_eq!(epochs, [1, 1, 2, 2]);
}
