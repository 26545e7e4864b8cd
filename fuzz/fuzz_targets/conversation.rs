//! A conversation fed arbitrary records, then snapshotted within a byte bound and restored.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meshchat_worker::fuzz::conversation(data));
