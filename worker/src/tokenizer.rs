//! Token counting with tiktoken's encodings in compact tables.
//!
//! tiktoken-rs's `CoreBPE` keeps three copies of the vocabulary (an encoder map, a decoder map,
//! sorted token bytes): 23.9 MiB resident for cl100k, almost half of an idle worker. Counting needs
//! only "bytes → rank", so the vocabulary is read out of `CoreBPE` once, kept as one byte buffer
//! plus a table of `u32` indices (~2 MiB for cl100k), and `CoreBPE` is dropped. The pre-split
//! pattern, byte-pair merge and special tokens follow tiktoken exactly; the tests compare every
//! count with tiktoken-rs's.

use fancy_regex::Regex;
use hashbrown::HashTable;
use rustc_hash::FxBuildHasher;
use std::hash::BuildHasher;
use tiktoken_rs::CoreBPE;

/// tiktoken's pre-split pattern for cl100k_base (tiktoken-rs keeps it inline).
const CL100K_PATTERN: &str = "'(?i:[sdmt]|ll|ve|re)|[^\\r\\n\\p{L}\\p{N}]?+\\p{L}++|\\p{N}{1,3}+| ?[^\\s\\p{L}\\p{N}]++[\\r\\n]*+|\\s++$|\\s*[\\r\\n]|\\s+(?!\\S)|\\s";

/// The tiktoken encodings a worker can count with.
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum Encoding {
    /// GPT-4 and GPT-3.5's.
    #[value(name = "cl100k_base")]
    Cl100kBase,
    /// GPT-4o's.
    #[value(name = "o200k_base")]
    O200kBase,
}

impl Encoding {
    /// tiktoken's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Cl100kBase => "cl100k_base",
            Self::O200kBase => "o200k_base",
        }
    }
}

/// Counts tokens with a real BPE tokenizer (tiktoken's encodings).
#[derive(Clone)]
pub struct Tokenizer {
    vocab: std::sync::Arc<Vocab>,
}

/// The tokenizer could not be loaded.
#[derive(Debug, thiserror::Error)]
#[error("tokenizer {name:?}: {reason}")]
pub struct TokenizerError {
    name: String,
    reason: String,
}

/// Ordinary tokens in rank order, their lookup table, the pre-split pattern and the special
/// tokens (each counts as one token wherever it appears, as `encode_with_special_tokens` does).
struct Vocab {
    /// Token `i` is `bytes[ends[i - 1]..ends[i]]` (`0..ends[0]` for the first).
    bytes: Vec<u8>,
    ends: Vec<u32>,
    /// Token indices, hashed by their bytes. Index order is rank order, so comparing indices
    /// compares ranks.
    index: HashTable<u32>,
    hasher: FxBuildHasher,
    pattern: Regex,
    specials: Vec<String>,
}

// === impl Tokenizer ===

impl Tokenizer {
    /// Loads `cl100k_base` or `o200k_base`.
    pub fn new(name: &str) -> Result<Self, TokenizerError> {
        let fail = |reason: String| TokenizerError {
            name: name.into(),
            reason,
        };
        let (load, pattern): (fn() -> anyhow::Result<CoreBPE>, _) = match name {
            "cl100k_base" => (tiktoken_rs::cl100k_base, CL100K_PATTERN),
            "o200k_base" => (tiktoken_rs::o200k_base, tiktoken_rs::O200K_BASE_PAT_STR),
            other => {
                return Err(TokenizerError {
                    name: other.into(),
                    reason: "unknown; use cl100k_base or o200k_base".into(),
                });
            }
        };
        let core = load().map_err(|e| fail(e.to_string()))?;
        let pattern = Regex::new(pattern).map_err(|e| fail(e.to_string()))?;
        let vocab = Vocab::from_core(&core, pattern).map_err(fail)?;
        drop(core);
        // CoreBPE's ~300 K small chunks are freed below live allocations, where glibc does not
        // return them by itself (measured: idle worker RSS 42.3 MiB without this, 36.0 MiB with)
        meshchat_heap::release_free_heap();
        Ok(Self {
            vocab: std::sync::Arc::new(vocab),
        })
    }

    /// Tokens in `text`.
    pub fn count(&self, text: &str) -> u32 {
        u32::try_from(self.vocab.count(text)).unwrap_or(u32::MAX)
    }
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Tokenizer")
    }
}

// === impl Vocab ===

impl Vocab {
    /// Reads the ordinary tokens out of `core` in rank order: every rank below the first special
    /// token (cl100k and o200k have one unused rank there, which is skipped; order is all that
    /// counting needs).
    fn from_core(core: &CoreBPE, pattern: Regex) -> Result<Self, String> {
        let specials: Vec<String> = core.special_tokens().into_iter().map(String::from).collect();
        let first_special = specials
            .iter()
            .filter_map(|s| core.encode_with_special_tokens(s).first().copied())
            .min()
            .ok_or("no special token")?;
        let mut vocab = Self {
            bytes: Vec::new(),
            ends: Vec::with_capacity(first_special as usize),
            index: HashTable::new(),
            hasher: FxBuildHasher,
            pattern,
            specials,
        };
        for rank in 0..first_special {
            let Ok(token) = core.decode_bytes(&[rank]) else {
                continue;
            };
            vocab.bytes.extend_from_slice(&token);
            let end = u32::try_from(vocab.bytes.len()).map_err(|_| "vocabulary over 4 GiB")?;
            vocab.ends.push(end);
        }
        vocab.bytes.shrink_to_fit();
        let mut index = HashTable::with_capacity(vocab.ends.len());
        for i in 0..vocab.ends.len() {
            let i = u32::try_from(i).map_err(|_| "too many tokens")?;
            let hash = vocab.hasher.hash_one(vocab.token(i));
            index.insert_unique(hash, i, |&j| vocab.hasher.hash_one(vocab.token(j)));
        }
        vocab.index = index;
        if (0..=255u8).any(|b| vocab.rank(&[b]).is_none()) {
            return Err("a single byte is not a token".into());
        }
        Ok(vocab)
    }

    fn token(&self, i: u32) -> &[u8] {
        let i = i as usize;
        let start = if i == 0 { 0 } else { self.ends[i - 1] as usize };
        &self.bytes[start..self.ends[i] as usize]
    }

    /// The rank-ordered index of `piece`, if it is one token.
    fn rank(&self, piece: &[u8]) -> Option<u32> {
        let hash = self.hasher.hash_one(piece);
        self.index.find(hash, |&i| self.token(i) == piece).copied()
    }

    /// Tokens in `text`: special tokens count one each; the text between them is split by the
    /// pattern and each piece byte-pair merged.
    fn count(&self, text: &str) -> usize {
        let mut total = 0;
        let mut rest = text;
        loop {
            let next = self
                .specials
                .iter()
                .filter_map(|s| rest.find(s).map(|at| (at, s.len())))
                .min();
            let Some((at, len)) = next else {
                return total + self.count_ordinary(rest);
            };
            total += self.count_ordinary(&rest[..at]) + 1;
            rest = &rest[at + len..];
        }
    }

    fn count_ordinary(&self, text: &str) -> usize {
        let mut total = 0;
        let mut searched = 0;
        for m in self.pattern.find_iter(text) {
            match m {
                Ok(m) => {
                    total += self.count_piece(m.as_str().as_bytes());
                    searched = m.end();
                }
                // Only a backtracking limit ends the search early (tiktoken-rs panics there);
                // every byte is at most one
                // token, so the remaining bytes bound the count from above (a context trimmed
                // on it errs towards fewer turns, never over the budget).
                Err(_) => return total + text.len() - searched,
            }
        }
        total
    }

    /// Tokens of one pre-split piece: merge the adjacent pair of lowest rank (leftmost on ties)
    /// until no adjacent pair is a token. Short pieces scan a small array; long ones (a user may
    /// send 32 KiB of one letter) use a heap, so counting stays O(n log n) — as tiktoken does.
    fn count_piece(&self, piece: &[u8]) -> usize {
        if piece.len() <= 1 || self.rank(piece).is_some() {
            return piece.len().min(1);
        }
        if piece.len() >= LONG_PIECE {
            return self.count_long_piece(piece);
        }
        // parts[k] = (start of part k, rank of part k joined with part k + 1)
        let pair = |parts: &[(usize, u32)], k: usize| -> u32 {
            match parts.get(k + 2) {
                Some(&(end, _)) => self.rank(&piece[parts[k].0..end]).unwrap_or(u32::MAX),
                None => u32::MAX,
            }
        };
        let mut parts: Vec<(usize, u32)> = (0..=piece.len()).map(|s| (s, u32::MAX)).collect();
        for k in 0..parts.len() {
            parts[k].1 = pair(&parts, k);
        }
        loop {
            let best = parts
                .iter()
                .enumerate()
                .min_by_key(|&(k, &(_, r))| (r, k))
                .map(|(k, &(_, r))| (k, r));
            let Some((k, r)) = best else { break };
            if r == u32::MAX {
                break;
            }
            parts.remove(k + 1);
            parts[k].1 = pair(&parts, k);
            if k > 0 {
                parts[k - 1].1 = pair(&parts, k - 1);
            }
        }
        // the last entry only marks the end of the piece
        parts.len() - 1
    }

    /// The same merge order with parts in a linked list and candidate pairs in a min-heap of
    /// (rank, start); a popped pair whose start no longer begins that pair is stale (ranks are
    /// unique per byte string, so the rank identifies the pair's span).
    fn count_long_piece(&self, piece: &[u8]) -> usize {
        use std::cmp::Reverse;
        use std::collections::BinaryHeap;
        let n = piece.len();
        // part starting at i ends at next[i]; prev[i] starts the part before it
        let mut next: Vec<usize> = (1..=n).collect();
        let mut prev: Vec<usize> = (0..n).map(|i| i.saturating_sub(1)).collect();
        let mut alive = vec![true; n];
        let rank_at = |next: &[usize], i: usize| -> u32 {
            let j = next[i];
            if j >= n {
                return u32::MAX;
            }
            self.rank(&piece[i..next[j]]).unwrap_or(u32::MAX)
        };
        let mut pair: Vec<u32> = (0..n).map(|i| rank_at(&next, i)).collect();
        let mut heap: BinaryHeap<Reverse<(u32, usize)>> = pair
            .iter()
            .enumerate()
            .filter(|(_, r)| **r != u32::MAX)
            .map(|(i, r)| Reverse((*r, i)))
            .collect();
        let mut parts = n;
        while let Some(Reverse((r, i))) = heap.pop() {
            if !alive[i] || pair[i] != r {
                continue;
            }
            let j = next[i];
            alive[j] = false;
            next[i] = next[j];
            if next[j] < n {
                prev[next[j]] = i;
            }
            parts -= 1;
            for k in [Some(i), (i > 0).then(|| prev[i])].into_iter().flatten() {
                pair[k] = rank_at(&next, k);
                if pair[k] != u32::MAX {
                    heap.push(Reverse((pair[k], k)));
                }
            }
        }
        parts
    }
}

/// Pieces this long are merged with a heap (tiktoken switches at the same length).
const LONG_PIECE: usize = 100;

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::sync::LazyLock;

    /// Ours and tiktoken-rs's, for one encoding.
    type Pair = (Tokenizer, tiktoken_rs::CoreBPE);

    static CL100K: LazyLock<Pair> = LazyLock::new(|| {
        (
            Tokenizer::new("cl100k_base").expect("bundled encoding"),
            tiktoken_rs::cl100k_base().expect("bundled encoding"),
        )
    });

    fn same_as_tiktoken(text: &str) {
        same_in(&CL100K, text);
    }

    fn same_in((ours, theirs): &Pair, text: &str) {
        assert_eq!(
            ours.count(text) as usize,
            theirs.encode_with_special_tokens(text).len(),
            "{text:?}"
        );
    }

    #[test]
    fn counts_like_tiktoken() {
        let (ours, _) = &*CL100K;
        assert_eq!(ours.count("hello world"), 2);
        assert_eq!(ours.count(""), 0);
        for text in [
            "Reply to \"remember me\" (turn 1, 2 messages in context)",
            "  leading and trailing spaces   \n\n\tand tabs\r\n",
            "I'm sure they'll've DONE it; it's 12345678 o'clock",
            "naïve café — 東京 🚀🚀🚀 Ωmega",
            "<|endoftext|>special<|fim_prefix|> in <|endofprompt|>text<|endoftext",
            "fn main() { println!(\"{}\", 0x1f); } // code\n    indented",
            "aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
            "supercalifragilisticexpialidocious antidisestablishmentarianism",
        ] {
            same_as_tiktoken(text);
        }
        // pieces past the heap threshold, and the 32 KiB message an owner must still count fast
        same_as_tiktoken(&"a".repeat(32 * 1024));
        same_as_tiktoken(&"ab1".repeat(500));
        same_as_tiktoken(&"🚀é".repeat(300));
    }

    #[test]
    fn o200k_counts_like_tiktoken() {
        let o200k = (
            Tokenizer::new("o200k_base").expect("bundled encoding"),
            tiktoken_rs::o200k_base().expect("bundled encoding"),
        );
        for text in [
            "hello world",
            "naïve café — 東京 🚀",
            "<|endoftext|>x<|endofprompt|> It's 2026",
        ] {
            same_in(&o200k, text);
        }
    }

    #[test]
    fn unknown_encoding_is_refused_by_name() {
        let e = Tokenizer::new("nope").expect_err("unknown");
        assert!(e.to_string().contains("nope"), "{e}");
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]
        #[test]
        fn any_text_counts_like_tiktoken(
            parts in proptest::collection::vec(prop_oneof![
                "[a-zA-Z ]{0,20}",
                "[0-9 .,]{0,12}",
                "[ \t\r\n]{0,6}",
                "'(s|t|re|ve|m|ll|d|S|LL)",
                "\\PC{0,8}",
                Just("<|endoftext|>".to_string()),
                Just("<|fim_suffix|>".to_string()),
            ], 0..12)
        ) {
            let text = parts.concat();
            let (ours, theirs) = &*CL100K;
            prop_assert_eq!(ours.count(&text) as usize, theirs.encode_with_special_tokens(&text).len());
        }

        #[test]
        fn long_pieces_count_like_tiktoken(word in "[a-zA-Z]{100,400}|[a-c]{100,600}|\\PL{40,120}") {
            let (ours, theirs) = &*CL100K;
            prop_assert_eq!(ours.count(&word) as usize, theirs.encode_with_special_tokens(&word).len());
        }
    }
}
