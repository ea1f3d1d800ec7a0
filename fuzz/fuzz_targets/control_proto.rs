//! Fuzzes the stub/agent control protocol: any byte stream, split anywhere, decodes to
//! requests, agent messages or errors, never a panic; a message that decodes encodes again
//! and decodes to itself; the decoder never holds more than one line.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wepoq_runtime::control_proto::{FromAgent, LineDecoder, MAX_LINE, Request, encode};

fuzz_target!(|data: &[u8]| {
    // The first byte picks where reads split the stream, so partial reads are covered.
    let (split, stream) = match data.split_first() {
        Some((s, rest)) => (usize::from(*s).max(1), rest),
        None => return,
    };
    let mut requests = LineDecoder::new();
    let mut replies = LineDecoder::new();
    for part in stream.chunks(split) {
        requests.push(part);
        replies.push(part);
        while let Some(r) = requests.next_message::<Request>() {
            if let Ok(request) = r {
                let again = encode(&request);
                let back: Request = serde_json::from_slice(&again[..again.len() - 1]).unwrap();
                assert_eq!(back, request);
            }
        }
        while let Some(r) = replies.next_message::<FromAgent>() {
            if let Ok(message) = r {
                let again = encode(&message);
                let back: FromAgent = serde_json::from_slice(&again[..again.len() - 1]).unwrap();
                assert_eq!(back, message);
            }
        }
        assert!(requests.pending() <= MAX_LINE + split);
    }
});
