//! Hands freed heap pages back to the OS. glibc keeps pages freed below live allocations; after
//! a large one-off structure is dropped (the tokenizer's start-up tables, ~300 K small chunks)
//! it does not return them by itself. This crate holds the one `unsafe` call MeshChat makes, so
//! every other crate can `forbid(unsafe_code)`.
#![deny(unsafe_code)]

/// Returns free heap memory to the OS where the allocator allows it (glibc on Linux); a no-op
/// elsewhere.
pub fn release_free_heap() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    #[allow(unsafe_code)]
    // SAFETY: malloc_trim only releases free memory inside glibc's heaps; it takes no pointers.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn releasing_free_memory_is_safe_to_call_any_time() {
        let big: Vec<Vec<u8>> = (0..1000).map(|i| vec![0u8; 64 + i]).collect();
        drop(big);
        super::release_free_heap();
        super::release_free_heap();
    }
}
