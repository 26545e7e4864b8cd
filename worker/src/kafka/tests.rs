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
