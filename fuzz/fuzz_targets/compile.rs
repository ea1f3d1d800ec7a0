//! Fuzzes the compiler entry point with arbitrary spec and lockfile texts: whatever comes in,
//! the compiler returns diagnostics or a result, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wepoq_compiler::{compile, Input, Sources};

fuzz_target!(|data: &[u8]| {
    // The first NUL splits the input into a spec and a lockfile, so both parsers get fuzzed.
    // Bytes, as the CLI reads them: text that is not UTF-8 is a case to report, too.
    let (spec, lock) = match data.iter().position(|&b| b == 0) {
        Some(at) => (&data[..at], Some(&data[at + 1..])),
        None => (data, None),
    };
    let mut sources = Sources::new();
    let spec = sources.add_bytes("wepoq.yaml", spec.to_vec());
    let lock = lock.map(|l| sources.add_bytes("wepoq.lock", l.to_vec()));
    let _ = compile(&sources, &[Input { spec, lock }]);
});
