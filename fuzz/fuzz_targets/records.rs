//! Kafka record decoding: every record kind a worker reads.
#![no_main]
libfuzzer_sys::fuzz_target!(|data: &[u8]| meshchat_wire::fuzz::records(data));
