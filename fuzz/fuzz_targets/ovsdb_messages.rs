//! Fuzzes what wepoq reads from an OVSDB server: framing of back-to-back JSON-RPC messages,
//! then each message decoded as a transact reply, a row, and a schema. Whatever the server
//! sends, wepoq reports an error and never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use wepoq_reconciler::ovsdb::{FrameDecoder, Row, Schema, TransactReply};

fuzz_target!(|data: &[u8]| {
    let mut decoder = FrameDecoder::new();
    let mut buf = data;
    // Fed in two reads, as a message split across socket reads would be.
    let half = buf.len() / 2;
    let _ = decoder.decode(&buf[..half]);
    while let Ok(Some((message, used))) = decoder.decode(buf) {
        buf = &buf[used..];
        if let Some(result) = message.get("result") {
            let _ = TransactReply::from_str(&result.to_string(), 3);
            let _ = TransactReply::from_json(result, 3);
            let _ = Schema::from_json(result);
            let _ = Row::from_json(result);
        }
    }
});
