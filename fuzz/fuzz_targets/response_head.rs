//! Response heads as the proxy's own HTTP/1 server writes them.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| hypache::server::fuzzing::response_head(data));
