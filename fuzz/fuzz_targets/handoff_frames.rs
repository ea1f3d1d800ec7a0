//! Fuzzes the stub/worker frames: what the stub reads from workers and workers from the
//! stub. Any input decodes to a frame or an error, never a panic; a frame that decodes
//! encodes again.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wepoq_runtime::frame::Frame;

fuzz_target!(|data: &[u8]| {
    if let Ok(frame) = Frame::decode(data) {
        let _ = frame.to_bytes();
    }
});
