//! Heap bytes the tokenizer keeps: counting needs only the vocabulary's bytes and a rank table,
//! not tiktoken-rs's three maps (~24 MiB of an idle worker's RSS). Counted by a global allocator:
//! allocation sizes are deterministic, so this is a budget test, not a timing one.

mod counting;

use meshchat_worker::Tokenizer;

/// cl100k has 100,256 tokens (~0.7 MB of bytes): the tables may take at most 4 MiB.
const BUDGET: isize = 4 << 20;

#[test]
fn the_loaded_tokenizer_keeps_a_compact_vocabulary() {
    let before = counting::live();
    let tokenizer = Tokenizer::new("cl100k_base").expect("bundled encoding");
    let kept = counting::live() - before;
    assert_eq!(tokenizer.count("hello world"), 2);
    let core = tiktoken_rs::cl100k_base().expect("bundled encoding");
    let theirs = counting::live() - before - kept;
    eprintln!("heap kept: ours {kept} bytes, tiktoken-rs CoreBPE {theirs} bytes");
    drop(core);
    assert!(
        kept > 0 && kept <= BUDGET,
        "tokenizer keeps {kept} heap bytes (budget {BUDGET})"
    );
}
