//! JSON-RPC framing: OVSDB sends JSON values back to back with no delimiter
//!
//! [`parse_frame`] is the pure parser: it takes one value off the front of a buffer or
//! reports that the buffer holds only part of one ("incomplete" is a normal outcome, the
//! caller reads more). [`FrameDecoder`] gives the same answers but remembers how far it
//! scanned, so a large message arriving in many reads is scanned once rather than
//! re-parsed from its start on every read.

use serde_json::Value as Json;

use super::error::Error;

/// Takes one JSON value off the front of `buf`: `Ok(Some((value, consumed)))`, or
/// `Ok(None)` when `buf` is empty, blank or ends inside the value.
pub fn parse_frame(buf: &[u8]) -> Result<Option<(Json, usize)>, Error> {
    let mut stream = serde_json::Deserializer::from_slice(buf).into_iter::<Json>();
    match stream.next() {
        None => Ok(None),
        Some(Ok(value)) => Ok(Some((value, stream.byte_offset()))),
        Some(Err(e)) if e.is_eof() => Ok(None),
        Some(Err(e)) => Err(Error::Decode {
            what: "json-rpc message".into(),
            reason: e.to_string(),
        }),
    }
}

/// Incremental framing state over a growing buffer.
///
/// Feed it the whole unconsumed buffer each time; it resumes scanning where it stopped
/// and only hands the bytes to serde_json once braces balance outside strings.
#[derive(Debug, Default)]
pub struct FrameDecoder {
    scanned: usize,
    depth: usize,
    in_string: bool,
    escaped: bool,
}

impl FrameDecoder {
    pub fn new() -> Self {
        Self::default()
    }

    /// Like [`parse_frame`]; after `Some`, drop `consumed` bytes from the buffer's front
    /// before the next call.
    pub fn decode(&mut self, buf: &[u8]) -> Result<Option<(Json, usize)>, Error> {
        let Some(len) = self.frame_len(buf)? else {
            return Ok(None);
        };
        match parse_frame(&buf[..len])? {
            Some((value, used)) if used == len => Ok(Some((value, used))),
            _ => Err(unbalanced()),
        }
    }

    /// The length of the message at the front of `buf` once it is complete (brackets
    /// balanced outside strings), for a caller that parses it itself; the bytes are not
    /// checked to be JSON. After `Some`, drop that many bytes before the next call.
    pub fn frame_len(&mut self, buf: &[u8]) -> Result<Option<usize>, Error> {
        let mut i = self.scanned;
        while i < buf.len() {
            let b = buf[i];
            i += 1;
            if self.in_string {
                match (self.escaped, b) {
                    (true, _) => self.escaped = false,
                    (false, b'\\') => self.escaped = true,
                    (false, b'"') => self.in_string = false,
                    _ => {}
                }
                continue;
            }
            match b {
                b'"' => self.in_string = true,
                b'{' | b'[' => self.depth += 1,
                b'}' | b']' => {
                    if self.depth == 0 {
                        return Err(unbalanced());
                    }
                    self.depth -= 1;
                    if self.depth == 0 {
                        *self = FrameDecoder::default();
                        return Ok(Some(i));
                    }
                }
                b' ' | b'\t' | b'\r' | b'\n' => {}
                // JSON-RPC messages are objects; anything else at top level is garbage.
                _ if self.depth == 0 => {
                    return Err(Error::Decode {
                        what: "json-rpc message".into(),
                        reason: format!("unexpected byte {:?} between messages", b as char),
                    });
                }
                _ => {}
            }
        }
        self.scanned = i;
        Ok(None)
    }
}

fn unbalanced() -> Error {
    Error::Decode {
        what: "json-rpc message".into(),
        reason: "unbalanced brackets".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn parse_frame_takes_one_value_and_says_incomplete() {
        let buf = br#"{"id":1,"result":[]}{"id":2,"#;
        let (v, used) = parse_frame(buf).unwrap().unwrap();
        assert_eq!(v, json!({"id": 1, "result": []}));
        assert_eq!(&buf[used..], br#"{"id":2,"#);
        assert!(parse_frame(&buf[used..]).unwrap().is_none());
        assert!(parse_frame(b"").unwrap().is_none());
        assert!(parse_frame(b"  \n").unwrap().is_none());
        assert!(parse_frame(b"{]").is_err());
    }

    /// Feeds `input` in chunks of `step` bytes, as reads would, and collects the messages.
    fn feed(input: &[u8], step: usize) -> Vec<Json> {
        let mut decoder = FrameDecoder::new();
        let mut buf = Vec::new();
        let mut out = Vec::new();
        for chunk in input.chunks(step) {
            buf.extend_from_slice(chunk);
            while let Some((v, used)) = decoder.decode(&buf).unwrap() {
                buf.drain(..used);
                out.push(v);
            }
        }
        assert!(
            buf.iter().all(u8::is_ascii_whitespace),
            "left over: {:?}",
            String::from_utf8_lossy(&buf)
        );
        out
    }

    #[test]
    fn decoder_handles_every_split_point() {
        // Brackets and escaped quotes inside strings must not confuse the scanner.
        let msgs = [
            json!({"method": "echo", "params": [], "id": "echo"}),
            json!({"id": 7, "result": [{"rows": [{"name": "a}b]\"{["}]}], "error": null}),
            json!({"method": "update2", "params": ["m", {"T": {}}], "id": null}),
            json!({"s": "back\\slash\\", "u": "\u{e9}t\u{e9}"}),
        ];
        let mut wire = Vec::new();
        for m in &msgs {
            wire.extend_from_slice(serde_json::to_string(m).unwrap().as_bytes());
        }
        wire.extend_from_slice(b"\n");
        for step in 1..=wire.len() {
            assert_eq!(feed(&wire, step), msgs, "split every {step} bytes");
        }
    }

    /// A bounded, deterministic stand-in for the `ovsdb_messages` fuzz target, so CI runs
    /// the same property: mutated server messages decode or fail, never panic.
    #[test]
    fn mutated_server_messages_never_panic() {
        use crate::ovsdb::monitor::MonitorState;
        use crate::ovsdb::{MonitorSpec, Row, Schema, TransactReply};
        let schema: Json = serde_json::from_slice(include_bytes!(
            "../../../fuzz/seeds/ovsdb_messages/schema.json"
        ))
        .unwrap();
        let schema = Schema::from_json(&schema["result"]).unwrap();
        let spec = MonitorSpec::new().table_where(
            "Logical_Switch",
            &["name", "ports", "external_ids"],
            Vec::new(),
        );
        let seeds: [&[u8]; 5] = [
            include_bytes!("../../../fuzz/seeds/ovsdb_messages/monitor.json"),
            include_bytes!("../../../fuzz/seeds/ovsdb_messages/transact-reply.json"),
            include_bytes!("../../../fuzz/seeds/ovsdb_messages/unicode-reply.json"),
            include_bytes!("../../../fuzz/seeds/ovsdb_messages/failed-reply.json"),
            include_bytes!("../../../fuzz/seeds/ovsdb_messages/schema.json"),
        ];
        let mut state = 0x2545_f491_4f6c_dd1d_u64;
        let mut next = move |n: usize| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state % n.max(1) as u64) as usize
        };
        for round in 0..40000 {
            let mut bytes = seeds[round % seeds.len()].to_vec();
            for _ in 0..1 + next(4) {
                let at = next(bytes.len());
                match next(4) {
                    0 => {
                        bytes[at] =
                            [b'"', b'[', b']', b'{', b'}', b',', b':', 0xc3, 0xa9, b'1'][next(10)]
                    }
                    1 => bytes.insert(at, [0xc3, 0xa9, b'\\', b'"', b'x'][next(5)]),
                    2 => drop(bytes.remove(at)),
                    _ => {
                        let end = (at + next(64)).min(bytes.len());
                        let chunk = bytes[at..end].to_vec();
                        bytes.splice(
                            at..at,
                            chunk.iter().cycle().take(chunk.len() * next(8)).copied(),
                        );
                    }
                }
            }
            let mut decoder = FrameDecoder::new();
            let mut rest = &bytes[..];
            let monitor = MonitorState::new("m".into(), "OVN_Northbound", &schema, &spec).unwrap();
            while let Ok(Some((message, used))) = decoder.decode(rest) {
                rest = &rest[used..];
                if let Some(updates) = message.get("params").and_then(|p| p.get(1)) {
                    let _ = monitor.apply(updates);
                }
                if let Some(result) = message.get("result") {
                    let _ = monitor.reset(result);
                    // The decoder from text agrees with the tree decoder, and is no laxer.
                    let text = result.to_string();
                    for n_ops in [1, 3] {
                        match (
                            TransactReply::from_str(&text, n_ops),
                            TransactReply::from_json(result, n_ops),
                        ) {
                            (Ok(typed), Ok(tree)) => assert_eq!(typed, tree, "{text}"),
                            (Ok(typed), Err(e)) => panic!(
                                "typed decoder accepted what the tree refused ({e}): {typed:?} from {text}"
                            ),
                            (Err(_), _) => {}
                        }
                    }
                    let _ = Schema::from_json(result);
                    let _ = Row::from_json(result);
                }
            }
        }
    }

    #[test]
    fn decoder_refuses_garbage_between_messages() {
        let mut d = FrameDecoder::new();
        assert!(d.decode(b"x{}").is_err());
        let mut d = FrameDecoder::new();
        assert!(d.decode(b"}").is_err());
    }
}
