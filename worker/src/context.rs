//! Builds the LLM context from a conversation's history within a token budget.
//! Pure: the tokenizer is passed in as token counts, so trimming is property-tested.

/// Who said a turn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// The system prompt.
    System,
    /// A user message.
    User,
    /// An earlier agent reply.
    Assistant,
}

/// One message of the context with its token count.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Turn {
    /// Speaker.
    pub role: Role,
    /// Text.
    pub content: String,
    /// Tokens of `content` as the tokenizer counts them.
    pub tokens: u32,
}

/// Tokens the chat format adds around every message (role markers), per OpenAI's cookbook.
pub const PER_MESSAGE_OVERHEAD: u32 = 4;

fn cost(turn: &Turn) -> u64 {
    u64::from(turn.tokens) + u64::from(PER_MESSAGE_OVERHEAD)
}

/// The context for answering the last turn of `history`: the system prompt (always kept), then
/// the newest turns that fit in `budget` tokens, oldest dropped first. The newest turn (the
/// message being answered) is always kept, even when it alone exceeds the budget.
pub fn trim_to_budget(system: Option<Turn>, history: &[Turn], budget: u32) -> Vec<Turn> {
    let mut used: u64 = system.as_ref().map_or(0, cost);
    let mut keep = 0usize;
    for (i, turn) in history.iter().rev().enumerate() {
        let next = used + cost(turn);
        if i > 0 && next > u64::from(budget) {
            break;
        }
        used = next;
        keep += 1;
    }
    let start = history.len() - keep;
    system
        .into_iter()
        .chain(history[start..].iter().cloned())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn turn(role: Role, tokens: u32) -> Turn {
        Turn {
            role,
            content: format!("{tokens}"),
            tokens,
        }
    }

    #[test]
    fn drops_oldest_first_and_keeps_system() {
        let sys = turn(Role::System, 10);
        let hist = vec![
            turn(Role::User, 50),
            turn(Role::Assistant, 50),
            turn(Role::User, 20),
        ];
        let out = trim_to_budget(Some(sys.clone()), &hist, 10 + 4 + 50 + 4 + 20 + 4);
        assert_eq!(out, vec![sys, hist[1].clone(), hist[2].clone()]);
    }

    #[test]
    fn newest_turn_survives_a_tiny_budget() {
        let hist = vec![turn(Role::User, 5), turn(Role::User, 500)];
        let out = trim_to_budget(None, &hist, 10);
        assert_eq!(out, vec![hist[1].clone()]);
    }

    fn arb_history() -> impl Strategy<Value = Vec<Turn>> {
        proptest::collection::vec(
            (prop_oneof![Just(Role::User), Just(Role::Assistant)], 0u32..400).prop_map(|(r, t)| turn(r, t)),
            1..40,
        )
    }

    proptest! {
        #[test]
        fn trimmed_context_is_a_suffix_within_budget(
            hist in arb_history(), sys in proptest::option::of(0u32..200), budget in 0u32..4000
        ) {
            let system = sys.map(|t| turn(Role::System, t));
            let out = trim_to_budget(system.clone(), &hist, budget);
            let body = match &system {
                Some(s) => { prop_assert_eq!(&out[0], s); &out[1..] }
                None => &out[..],
            };
            // a suffix of the history, never empty
            prop_assert!(!body.is_empty());
            prop_assert_eq!(body, &hist[hist.len() - body.len()..]);
            // within budget unless only the newest turn is left
            let used: u64 = out.iter().map(cost).sum();
            prop_assert!(used <= u64::from(budget) || body.len() == 1);
            // maximal: one more turn would not fit
            if body.len() < hist.len() {
                let extra = cost(&hist[hist.len() - body.len() - 1]);
                prop_assert!(used + extra > u64::from(budget));
            }
        }
    }
}
