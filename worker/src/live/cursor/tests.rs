use proptest::prelude::*;

use super::*;

const TOPICS: [Topic; 3] = [Topic::Messages, Topic::Stream, Topic::Users];

#[test]
fn an_id_reads_back_and_bad_ones_are_refused() {
    let c = Cursor {
        messages: 120,
        stream: 4511,
        users: 0,
    };
    assert_eq!(c.to_string(), "120.4511.0");
    assert_eq!("120.4511.0".parse(), Ok(c));
    for bad in [
        "",
        "1.2",
        "1.2.3.4",
        "a.b.c",
        "-1.2.3",
        "1..3",
        "1.2.3 x",
        "99999999999999999999.0.0",
    ] {
        assert_eq!(bad.parse::<Cursor>(), Err(BadCursor), "{bad:?}");
    }
}

/// Offsets of one conversation's records in each log (other conversations' records in between).
fn logs() -> impl Strategy<Value = [Vec<i64>; 3]> {
    let log = prop::collection::btree_set(0i64..400, 0..25).prop_map(|s| s.into_iter().collect::<Vec<_>>());
    [log.clone(), log.clone(), log]
}

/// The events of `logs` from index `from[t]` on, each log in order, interleaved by `picks`.
fn interleave(logs: &[Vec<i64>; 3], from: [usize; 3], to: [usize; 3], picks: &[u8]) -> Vec<Pos> {
    let mut at = from;
    let mut out = Vec::new();
    let mut picks = picks.iter().cycle();
    while (0..3).any(|t| at[t] < to[t]) {
        let mut t = usize::from(*picks.next().unwrap_or(&0)) % 3;
        while at[t] >= to[t] {
            t = (t + 1) % 3;
        }
        out.push(Pos::new(TOPICS[t], logs[t][at[t]]));
        at[t] += 1;
    }
    out
}

fn index_at(log: &[i64], next: i64) -> usize {
    log.iter().position(|&o| o >= next).unwrap_or(log.len())
}

proptest! {
    /// A client that saw some events on one worker and resumes on another (from its last id)
    /// gets every later event once: the second worker's catch-up from the log (which may stop
    /// short of the log's end, leaving a tail to live delivery) and its live events (which
    /// may start before the client's position) merge with no gap and no duplicate.
    #[test]
    fn a_resume_delivers_exactly_the_events_after_the_last_id(
        logs in logs(),
        first in prop::collection::vec(any::<u8>(), 1..60),
        seen in 0usize..80,
        high in [0usize..30, 0usize..30, 0usize..30],
        short in [0usize..5, 0usize..5, 0usize..5],
        back in [0usize..5, 0usize..5, 0usize..5],
        catch_order in prop::collection::vec(any::<u8>(), 1..60),
        live_order in prop::collection::vec(any::<u8>(), 1..60),
    ) {
        let len = [logs[0].len(), logs[1].len(), logs[2].len()];
        // on the first worker: live from the start, the client gone after `seen` events
        let mut a = Merge::new(Cursor::default());
        let mut last = None;
        for pos in interleave(&logs, [0; 3], len, &first).into_iter().take(seen) {
            last = a.offer(pos).or(last);
        }
        let cursor = last.unwrap_or_default();
        let seen_at = TOPICS.map(|t| index_at(&logs[t as usize], cursor.get(t)));
        // on the second: the log's end read after the client came back (at or past what it
        // saw); the catch-up reads up to it, perhaps not quite; live from at most that end
        let h = [0, 1, 2].map(|t| seen_at[t].max(high[t].min(len[t])));
        let catch_to = [0, 1, 2].map(|t| h[t].saturating_sub(short[t]).max(seen_at[t]));
        let live_from = [0, 1, 2].map(|t| catch_to[t].saturating_sub(back[t]));
        let mut b = Merge::new(cursor);
        let mut got: [Vec<i64>; 3] = Default::default();
        let mut ids = vec![cursor];
        let stored = interleave(&logs, seen_at, catch_to, &catch_order);
        let live = interleave(&logs, live_from, len, &live_order);
        for pos in stored.into_iter().chain(live) {
            if let Some(id) = b.offer(pos) {
                got[pos.topic as usize].push(pos.offset);
                ids.push(id);
            }
        }
        for t in 0..3 {
            prop_assert_eq!(&got[t], &logs[t][seen_at[t]..].to_vec(), "log {}", t);
        }
        // ids grow with every event: none twice, each a cursor past the one before
        for w in ids.windows(2) {
            prop_assert!(w[0].within(&w[1]) && w[0] != w[1], "{} then {}", w[0], w[1]);
        }
    }
}
