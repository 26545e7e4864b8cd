use super::{commit_metadata, fence_of_commit};

#[test]
fn commit_metadata_round_trips_and_tolerates_foreign_commits() {
    for e in [0, 1, 7, u64::MAX] {
        assert_eq!(fence_of_commit(&commit_metadata(e)), e);
    }
    // commits written before fences were recorded, or by other tools
    assert_eq!(fence_of_commit(""), 0);
    assert_eq!(fence_of_commit("fence=x"), 0);
    assert_eq!(fence_of_commit("something else"), 0);
}

#[test]
fn reading_starts_at_the_commit_and_its_fence_or_at_the_log_start() {
    use super::commit_start;
    use rdkafka::{Offset, TopicPartitionList};
    let mut tpl = TopicPartitionList::new();
    let mut e = tpl.add_partition("m", 0);
    e.set_offset(Offset::Offset(40)).expect("offset");
    e.set_metadata(commit_metadata(3));
    tpl.add_partition("m", 1)
        .set_offset(Offset::Offset(5))
        .expect("offset");
    tpl.add_partition("m", 2);
    assert_eq!(commit_start(&tpl, "m", 0, 10), (40, 3));
    // committed before retention removed it: start at the log start, no fence known
    assert_eq!(commit_start(&tpl, "m", 1, 10), (10, 0));
    // never committed
    assert_eq!(commit_start(&tpl, "m", 2, 0), (0, 0));
    assert_eq!(commit_start(&tpl, "m", 7, 0), (0, 0));
}
