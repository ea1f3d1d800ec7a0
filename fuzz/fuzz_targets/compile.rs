//! Fuzzes the compiler entry point with arbitrary spec and lockfile texts: whatever comes in,
//! the compiler returns diagnostics or a result, and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wepoq_compiler::{compile, Input, Sources};

fuzz_target!(|data: &[u8]| {
    // The first NUL splits the input into a spec and a lockfile, so both parsers get fuzzed.
    let text = String::from_utf8_lossy(data);
    let (spec, lock) = match text.split_once('\0') {
        Some((spec, lock)) => (spec, Some(lock)),
        None => (&*text, None),
    };
    let mut sources = Sources::new();
    let spec = sources.add("wepoq.yaml", spec);
    let lock = lock.map(|l| sources.add("wepoq.lock", l));
    let _ = compile(&sources, &[Input { spec, lock }]);
});
