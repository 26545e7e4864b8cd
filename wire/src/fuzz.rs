//! What the fuzz targets run (`fuzz/`, `make fuzz`), here so unit tests replay every input the
//! fuzzer ever found troublesome (`fuzz/regressions/`) on the stable toolchain.

use std::fmt::Debug;

use crate::{
    AssignmentTable, ChatRecord, ConversationSnapshot, MeshEvent, PresenceEvent, Record, ReplyChunk, decode,
    encode,
};

/// Decodes `data` as every record kind read from Kafka; whatever decodes must encode again and
/// decode to the same value (a record a worker accepts, it can also write back: snapshots do).
pub fn records(data: &[u8]) {
    roundtrip::<ChatRecord>(data);
    roundtrip::<ConversationSnapshot>(data);
    roundtrip::<ReplyChunk>(data);
    roundtrip::<PresenceEvent>(data);
    roundtrip::<MeshEvent>(data);
    roundtrip::<AssignmentTable>(data);
}

fn roundtrip<R: Record + PartialEq + Debug>(data: &[u8]) {
    if let Ok(record) = decode::<R>(data) {
        assert_round_trip(&record);
    }
}

/// `record` encodes, and its encoding decodes to the same value.
#[allow(clippy::panic)]
pub fn assert_round_trip<R: Record + PartialEq + Debug>(record: &R) {
    let bytes = match encode(record) {
        Ok(b) => b,
        Err(e) => panic!("decoded but cannot encode: {e}: {record:?}"),
    };
    match decode::<R>(&bytes) {
        Ok(back) => assert_eq!(&back, record, "changed by a round trip"),
        Err(e) => panic!("its own encoding does not decode: {e}: {record:?}"),
    }
}

#[cfg(test)]
mod tests {
    /// Every seed and every input the fuzzer found troublesome, replayed.
    #[test]
    fn fuzz_seeds_and_regressions_replay() {
        let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz");
        let mut n = 0;
        for dir in ["seeds/records", "regressions/records"] {
            for entry in std::fs::read_dir(root.join(dir)).expect("fuzz dir") {
                let path = entry.expect("entry").path();
                super::records(&std::fs::read(&path).expect("input"));
                n += 1;
            }
        }
        assert!(n >= 3, "the seeds are there");
    }
}
