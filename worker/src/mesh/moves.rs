//! Moves as people read them: the handoff steps of `chat.events` (assigned, releasing,
//! released, live — written by the balancer, the old owner and the new one) gathered per
//! partition and epoch into one move with its pause, for the mesh page.

use std::collections::BTreeMap;

use meshchat_wire::{HandoffEvent, HandoffStep};
use serde::Serialize;
use time::OffsetDateTime;

/// Where a move stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "camelCase")]
pub enum MoveState {
    /// The new owner has not gone live yet.
    Moving,
    /// The new owner answers.
    Done,
    /// A later move of the partition came before this one finished.
    Superseded,
}

/// One partition's move to a new owner (one ownership epoch).
#[derive(Clone, Debug, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Move {
    /// The partition.
    pub partition: i32,
    /// The new ownership's epoch.
    pub epoch: u64,
    /// The previous owner (empty: none).
    pub from: String,
    /// The new owner.
    pub to: String,
    /// Why the balancer moved it (`requested`, `balance`, `failover`, …), when its step was seen.
    pub reason: Option<String>,
    /// Its first step.
    #[serde(with = "time::serde::rfc3339")]
    pub started_at: OffsetDateTime,
    /// When the new owner went live.
    #[serde(with = "time::serde::rfc3339::option")]
    pub live_at: Option<OffsetDateTime>,
    /// How long the partition's conversations waited for answers: from the old owner no longer
    /// starting answers (or, with no such step — a failover — from the assignment) to the new
    /// owner answering.
    pub pause_ms: Option<u64>,
    /// Records the new owner replayed before going live.
    pub replayed: Option<u64>,
    /// Where it stands.
    pub state: MoveState,
}

/// The moves `events` (oldest first) tell of, oldest first by their first step.
pub fn summarize(events: &[HandoffEvent]) -> Vec<Move> {
    let mut moves: BTreeMap<(i32, u64), Move> = BTreeMap::new();
    let mut stopped: BTreeMap<(i32, u64), OffsetDateTime> = BTreeMap::new();
    for e in events {
        // a step this build does not know says nothing of where a move stands
        if matches!(e.step, HandoffStep::Other(_)) {
            continue;
        }
        let key = (e.partition, e.epoch);
        let m = moves.entry(key).or_insert_with(|| Move {
            partition: e.partition,
            epoch: e.epoch,
            from: e.from.clone(),
            to: e.to.clone(),
            reason: None,
            started_at: e.timestamp,
            live_at: None,
            pause_ms: None,
            replayed: None,
            state: MoveState::Moving,
        });
        m.started_at = m.started_at.min(e.timestamp);
        // the new owner's `live` step names no previous owner; the others do
        if m.from.is_empty() {
            m.from.clone_from(&e.from);
        }
        match &e.step {
            HandoffStep::Assigned(r) => m.reason = Some(r.as_str().to_string()),
            HandoffStep::Releasing | HandoffStep::Released => {
                let at = stopped.entry(key).or_insert(e.timestamp);
                *at = (*at).min(e.timestamp);
            }
            HandoffStep::Live => {
                m.live_at = Some(e.timestamp);
                m.replayed = e.replayed;
                m.state = MoveState::Done;
            }
            HandoffStep::Other(_) => {}
        }
    }
    for (key, m) in &mut moves {
        if let Some(live) = m.live_at {
            let from = stopped.get(key).copied().unwrap_or(m.started_at);
            m.pause_ms = Some(u64::try_from((live - from).whole_milliseconds()).unwrap_or(0));
        }
    }
    // a partition moved again before this move finished: it will not finish
    let latest: BTreeMap<i32, u64> = moves.keys().fold(BTreeMap::new(), |mut acc, (p, e)| {
        let best = acc.entry(*p).or_insert(*e);
        *best = (*best).max(*e);
        acc
    });
    let mut out: Vec<Move> = moves
        .into_values()
        .map(|mut m| {
            if m.state == MoveState::Moving && latest.get(&m.partition).is_some_and(|e| *e > m.epoch) {
                m.state = MoveState::Superseded;
            }
            m
        })
        .collect();
    out.sort_by_key(|m| (m.started_at, m.partition, m.epoch));
    out
}

#[cfg(test)]
mod tests {
    use meshchat_wire::AssignReason;
    use time::Duration;

    use super::*;

    fn step(partition: i32, epoch: u64, step: HandoffStep, at_ms: i64) -> HandoffEvent {
        HandoffEvent {
            v: 1,
            partition,
            epoch,
            from: "node-0".into(),
            to: "node-1".into(),
            step,
            committed_offset: None,
            replayed: None,
            timestamp: OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(at_ms),
        }
    }

    #[test]
    fn a_requested_move_pauses_from_release_to_live() {
        let mut live = step(3, 7, HandoffStep::Live, 1_450);
        live.replayed = Some(12);
        let moves = summarize(&[
            step(3, 7, HandoffStep::Assigned(AssignReason::Requested), 1_000),
            step(3, 7, HandoffStep::Releasing, 1_100),
            step(3, 7, HandoffStep::Released, 1_300),
            live,
        ]);
        assert_eq!(moves.len(), 1);
        let m = &moves[0];
        assert_eq!(
            (m.partition, m.epoch, m.from.as_str(), m.to.as_str()),
            (3, 7, "node-0", "node-1")
        );
        assert_eq!(m.reason.as_deref(), Some("requested"));
        assert_eq!(m.pause_ms, Some(350));
        assert_eq!(m.replayed, Some(12));
        assert_eq!(m.state, MoveState::Done);
        assert_eq!(
            m.started_at,
            OffsetDateTime::UNIX_EPOCH + Duration::milliseconds(1_000)
        );
    }

    #[test]
    fn a_failover_pauses_from_the_assignment_and_steps_may_come_out_of_order() {
        // the new owner's step names no previous owner, and may be read first
        let mut live = step(1, 2, HandoffStep::Live, 2_600);
        live.from = String::new();
        let moves = summarize(&[
            live,
            step(1, 2, HandoffStep::Other("audited".into()), 2_700),
            step(1, 2, HandoffStep::Assigned(AssignReason::Failover), 2_000),
            step(9, 1, HandoffStep::Other("audited".into()), 2_700),
        ]);
        assert_eq!(moves.len(), 1, "unknown steps make no move: {moves:?}");
        assert_eq!(moves[0].from, "node-0");
        assert_eq!(moves[0].pause_ms, Some(600));
        assert_eq!(moves[0].reason.as_deref(), Some("failover"));
    }

    #[test]
    fn unfinished_moves_are_moving_or_superseded_and_moves_come_oldest_first() {
        let moves = summarize(&[
            step(5, 1, HandoffStep::Assigned(AssignReason::Balance), 100),
            step(6, 1, HandoffStep::Assigned(AssignReason::Balance), 50),
            step(5, 2, HandoffStep::Assigned(AssignReason::Failover), 300),
        ]);
        let seen: Vec<(i32, u64, MoveState)> =
            moves.iter().map(|m| (m.partition, m.epoch, m.state)).collect();
        assert_eq!(
            seen,
            vec![
                (6, 1, MoveState::Moving),
                (5, 1, MoveState::Superseded),
                (5, 2, MoveState::Moving)
            ]
        );
        assert!(moves.iter().all(|m| m.pause_ms.is_none()));
    }

    #[test]
    fn the_page_reads_camel_case_with_rfc3339_times() {
        let moves = summarize(&[step(0, 1, HandoffStep::Live, 0)]);
        let json = serde_json::to_value(&moves[0]).expect("serializes");
        assert_eq!(json["state"], "done");
        assert_eq!(json["pauseMs"], 0);
        assert_eq!(json["startedAt"], "1970-01-01T00:00:00Z");
        assert_eq!(json["liveAt"], "1970-01-01T00:00:00Z");
    }
}
