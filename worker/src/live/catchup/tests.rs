use super::*;
use crate::live::fixtures::{chunk, reply, trace, user};

/// A conversation in the log: message 0 at offset 10 answered in 4 chunks (stream 100..104,
/// reply at 12); message 1 at 11, sent while reply 0 streamed, answered in 2 (stream
/// 104..106, reply at 15).
fn log() -> (Chunks, Records) {
    let mut chunks: Chunks = (0..4).map(|s| (100 + i64::from(s), chunk(0, 10, s))).collect();
    chunks.extend((0..2).map(|s| (104 + i64::from(s), chunk(1, 11, s))));
    let records = vec![
        (10, user(0), 1),
        (11, user(1), 1),
        (12, reply(0, 4), 1),
        (15, reply(1, 2), 1),
    ];
    (chunks, records)
}

fn after(from: Cursor) -> Vec<String> {
    let (chunks, records) = log();
    let chunks = chunks.into_iter().filter(|(o, _)| *o >= from.stream).collect();
    let records = records
        .into_iter()
        .filter(|(o, _, _)| *o >= from.messages)
        .collect();
    trace(&sequence(16, chunks, records, 1))
}

#[test]
fn a_client_back_mid_reply_gets_the_rest_of_it_then_what_came_after() {
    let from = |messages, stream| Cursor {
        messages,
        stream,
        users: 0,
    };
    // it saw message 0 and two tokens
    assert_eq!(
        after(from(11, 102)),
        ["M1", "T0.2", "T0.3", "R0", "T1.0", "T1.1", "R1"]
    );
    // it saw message 1 too
    assert_eq!(after(from(12, 102)), ["T0.2", "T0.3", "R0", "T1.0", "T1.1", "R1"]);
    // every token of reply 0 but not the reply (released by time on the first worker: here it
    // comes at once)
    assert_eq!(after(from(12, 104)), ["R0", "T1.0", "T1.1", "R1"]);
    // reply 1 half streamed
    assert_eq!(after(from(13, 105)), ["T1.1", "R1"]);
    // from the start
    assert_eq!(
        after(Cursor::default()),
        [
            "M0", "M1", "T0.0", "T0.1", "T0.2", "T0.3", "R0", "T1.0", "T1.1", "R1"
        ]
    );
}

#[test]
fn tokens_of_a_reply_not_written_yet_come_last() {
    // reply 1 still streaming: no final record yet
    let (chunks, mut records) = log();
    records.pop();
    let from = Cursor {
        messages: 11,
        stream: 104,
        users: 0,
    };
    let records = records
        .into_iter()
        .filter(|(o, _, _)| *o >= from.messages)
        .collect();
    let chunks = chunks.into_iter().filter(|(o, _)| *o >= from.stream).collect();
    assert_eq!(
        trace(&sequence(16, chunks, records, 1)),
        ["M1", "R0", "T1.0", "T1.1"]
    );
}
