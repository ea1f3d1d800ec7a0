//! Fuzzes the row cache's file decoder: a damaged or hostile file is refused (or, with its
//! checksum redone, decoded), never a panic or an allocation the file does not justify.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wepoq_reconciler::row_cache::codec;

fuzz_target!(|data: &[u8]| {
    // As found on disk (the checksum almost always refuses it) ...
    let _ = codec::decode("k", data);
    // ... and with a valid checksum, so the decoder behind it is exercised too.
    let _ = codec::decode("k", &codec::with_checksum(data.to_vec()));
});
