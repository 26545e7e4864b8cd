//! Heap bytes the tokenizer keeps: counting needs only the vocabulary's bytes and a rank table,
//! not tiktoken-rs's three maps (~24 MiB of an idle worker's RSS). Counted by a global allocator:
//! allocation sizes are deterministic, so this is a budget test, not a timing one.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

use meshchat_worker::tokenizer::Tokenizer;

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards to the system allocator and only counts sizes.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same layout as asked for.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        LIVE.fetch_add(new_size as isize - layout.size() as isize, Ordering::Relaxed);
        // SAFETY: allocated above with this layout.
        unsafe { System.realloc(ptr, layout, new_size) }
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// cl100k has 100,256 tokens (~0.7 MB of bytes): the tables may take at most 4 MiB.
const BUDGET: isize = 4 << 20;

#[test]
fn the_loaded_tokenizer_keeps_a_compact_vocabulary() {
    let before = LIVE.load(Ordering::Relaxed);
    let tokenizer = Tokenizer::new("cl100k_base").expect("bundled encoding");
    let kept = LIVE.load(Ordering::Relaxed) - before;
    assert_eq!(tokenizer.count("hello world"), 2);
    let core = tiktoken_rs::cl100k_base().expect("bundled encoding");
    let theirs = LIVE.load(Ordering::Relaxed) - before - kept;
    eprintln!("heap kept: ours {kept} bytes, tiktoken-rs CoreBPE {theirs} bytes");
    drop(core);
    assert!(
        kept > 0 && kept <= BUDGET,
        "tokenizer keeps {kept} heap bytes (budget {BUDGET})"
    );
}
