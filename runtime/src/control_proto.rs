//! The control protocol between a stub and the host agent that runs its workers.
//!
//! Newline-delimited JSON over the agent's `control.sock` (SOCK_STREAM) in the stub's
//! bind-mounted run directory. The stub asks (`hello`, `spawn`, `stop`, `pause`, `resume`,
//! each with the stub's own `id`); the agent answers each request once, by id, and reports
//! worker ends on its own (`exited` events, no id). Shared by both sides: the agent (in the
//! reconciler crate) uses these types too, so this module must stay free of I/O and of any
//! dependency the runtime may not have. Also home of [`RuntimeLabel`], the pool settings the
//! stub container carries.
//!
//! ```text
//! stub  -> agent  {"op":"hello","id":1,"endpoint":"s1.svr.vote.ovn-vote.ns.wepoq.net"}
//! agent -> stub   {"id":1,"ok":true}
//! stub  -> agent  {"op":"spawn","id":2,"concurrency":1}
//! agent -> stub   {"id":2,"ok":true,"worker_id":"c-3f2a","start_us":91234}
//! stub  -> agent  {"op":"pause","id":3,"worker_id":"c-3f2a"}
//! agent -> stub   {"id":3,"error":"no such worker"}
//! stub  -> agent  {"op":"resume","id":4,"worker_id":"c-3f2a"}
//! agent -> stub   {"id":4,"ok":true,"unpause_us":10874}
//! agent -> stub   {"event":"exited","worker_id":"c-3f2a","why":"exit code 137"}
//! ```

use serde::{Deserialize, Serialize};

use crate::shim::ShimMode;

/// The agent's socket, in the stub's run directory.
pub const CONTROL_SOCKET: &str = "control.sock";
/// The stub's worker socket, in the same directory.
pub const STUB_SOCKET: &str = "stub.sock";
/// The stub container's label carrying its [`RuntimeLabel`] as JSON.
pub const RUNTIME_LABEL: &str = "wepoq.net/runtime";
/// Longest line either side accepts; a longer one is an error, not a reason to grow.
pub const MAX_LINE: usize = 64 * 1024;

/// A request from the stub. Every request carries the stub's counter `id`; the agent
/// answers each with exactly one [`Reply`] of the same id.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "op", rename_all = "snake_case")]
pub enum Request {
    /// Sent first on every (re)connect. The agent then reports, with `exited` events or by
    /// removing them, the workers it holds for this stub, so a restarted stub (or agent)
    /// loses nothing.
    Hello { id: u64, endpoint: String },
    /// Start one worker; the agent names it (`worker_id` in the reply). Answered once the
    /// worker is started (or unpaused), not once it registered on the stub's socket.
    Spawn { id: u64, concurrency: u32 },
    /// Remove a worker (a sweep). Stopping one that already ended is not an error.
    Stop { id: u64, worker_id: String },
    /// Freeze an idle worker: no CPU until resumed.
    Pause { id: u64, worker_id: String },
    /// Thaw a paused worker.
    Resume { id: u64, worker_id: String },
}

impl Request {
    pub fn id(&self) -> u64 {
        match self {
            Request::Hello { id, .. }
            | Request::Spawn { id, .. }
            | Request::Stop { id, .. }
            | Request::Pause { id, .. }
            | Request::Resume { id, .. } => *id,
        }
    }
}

/// The agent's answer to one request: `{"id":N,"ok":true[,"worker_id":"W"][,steps]}` or
/// `{"id":N,"error":"why"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Reply {
    pub id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ok: Option<bool>,
    /// The new worker's id, in the answer to `spawn`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub worker_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the agent's Docker calls took, in microseconds, in the answers to `spawn`
    /// (`create_us` only when no pre-created container was ready, `start_us`) and to
    /// `resume` (`unpause_us`); the stub puts them in its per-connection record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub create_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub start_us: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub unpause_us: Option<u64>,
}

impl Reply {
    pub fn ok(id: u64) -> Reply {
        Reply {
            id,
            ok: Some(true),
            worker_id: None,
            error: None,
            create_us: None,
            start_us: None,
            unpause_us: None,
        }
    }

    pub fn spawned(id: u64, worker_id: impl Into<String>) -> Reply {
        Reply {
            worker_id: Some(worker_id.into()),
            ..Reply::ok(id)
        }
    }

    pub fn error(id: u64, why: impl Into<String>) -> Reply {
        Reply {
            error: Some(why.into()),
            ok: None,
            ..Reply::ok(id)
        }
    }

    /// `Ok(worker_id)` for a success (the id only for `spawn`), `Err(why)` otherwise. A
    /// reply with neither `ok: true` nor an error is an error too.
    pub fn outcome(&self) -> Result<Option<&str>, String> {
        match (&self.error, self.ok) {
            (Some(why), _) => Err(why.clone()),
            (None, Some(true)) => Ok(self.worker_id.as_deref()),
            (None, _) => Err("reply without ok or error".into()),
        }
    }
}

/// What the agent reports without being asked.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "event", rename_all = "snake_case")]
pub enum AgentEvent {
    /// A worker ended (crash, OOM, removed by hand, image failing, or after a `stop`). The
    /// stub treats it as the backend's exit notice.
    Exited { worker_id: String, why: String },
}

/// One line from the agent: an answer or an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FromAgent {
    Reply(Reply),
    Event(AgentEvent),
}

impl Serialize for FromAgent {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match self {
            FromAgent::Reply(r) => r.serialize(s),
            FromAgent::Event(e) => e.serialize(s),
        }
    }
}

impl<'de> Deserialize<'de> for FromAgent {
    // By the discriminating key rather than `untagged`, so a malformed event says what is
    // wrong with it instead of "did not match any variant".
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<FromAgent, D::Error> {
        use serde::de::Error;
        let v = serde_json::Value::deserialize(d)?;
        if v.get("event").is_some() {
            AgentEvent::deserialize(v)
                .map(FromAgent::Event)
                .map_err(D::Error::custom)
        } else if v.get("id").is_some() {
            Reply::deserialize(v)
                .map(FromAgent::Reply)
                .map_err(D::Error::custom)
        } else {
            Err(D::Error::custom(
                "neither a reply (id) nor an event (event)",
            ))
        }
    }
}

/// Why a line could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("line longer than {MAX_LINE} bytes")]
    TooLong,
    #[error("bad message: {0}")]
    Json(String),
}

/// Serializes `message` as one line (JSON plus `\n`).
pub fn encode<T: Serialize>(message: &T) -> Vec<u8> {
    // Only maps with non-string keys fail to serialize, and none of these types has one.
    let mut line = serde_json::to_vec(message).expect("protocol types serialize");
    line.push(b'\n');
    line
}

/// Splits a byte stream into messages, whatever the reads' boundaries: push what arrived,
/// then take messages until `None`.
#[derive(Debug, Default)]
pub struct LineDecoder {
    buf: Vec<u8>,
    /// Start of the next unread line in `buf`.
    start: usize,
    /// Inside an overlong line: bytes are dropped until its end.
    skipping: bool,
}

impl LineDecoder {
    pub fn new() -> LineDecoder {
        LineDecoder::default()
    }

    /// Appends bytes as they came from a read.
    pub fn push(&mut self, bytes: &[u8]) {
        if self.start > 0 && self.start == self.buf.len() {
            self.buf.clear();
            self.start = 0;
        }
        self.buf.extend_from_slice(bytes);
    }

    /// The next complete line decoded as `T`; `None` until more bytes arrive. An error
    /// consumes its line, so the caller may go on (or hang up). Blank lines are skipped.
    pub fn next_message<T: serde::de::DeserializeOwned>(
        &mut self,
    ) -> Option<Result<T, ProtoError>> {
        loop {
            let rest = &self.buf[self.start..];
            let Some(nl) = rest.iter().position(|&b| b == b'\n') else {
                if rest.len() > MAX_LINE {
                    // Drop what we have and the rest of the line when it comes.
                    self.buf.clear();
                    self.start = 0;
                    let first = !self.skipping;
                    self.skipping = true;
                    return first.then_some(Err(ProtoError::TooLong));
                }
                self.compact();
                return None;
            };
            let line = &rest[..nl];
            self.start += nl + 1;
            if std::mem::take(&mut self.skipping) {
                continue;
            }
            if line.len() > MAX_LINE {
                return Some(Err(ProtoError::TooLong));
            }
            if line.iter().all(u8::is_ascii_whitespace) {
                continue;
            }
            return Some(serde_json::from_slice(line).map_err(|e| ProtoError::Json(e.to_string())));
        }
    }

    /// Bytes held for an unfinished line.
    pub fn pending(&self) -> usize {
        self.buf.len() - self.start
    }

    fn compact(&mut self) {
        if self.start > 0 {
            self.buf.drain(..self.start);
            self.start = 0;
        }
    }
}

/// The pool settings of one stub, carried as JSON in its container's `wepoq.net/runtime`
/// label (written by `wepoq apply`, read by the agent).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RuntimeLabel {
    /// The worker image.
    pub image: String,
    /// Overrides the image's command; `None` keeps it.
    #[serde(default)]
    pub command: Option<Vec<String>>,
    /// Workers kept registered even when idle (0: scale to zero).
    #[serde(default = "default_min_warm")]
    pub min_warm: usize,
    #[serde(default = "default_max_workers")]
    pub max_workers: usize,
    /// Connections one worker takes at a time.
    #[serde(default = "default_concurrency")]
    pub concurrency: u32,
    /// Containers created ahead, not started ("stem cells"), so a cold start is a start.
    #[serde(default = "default_precreate")]
    pub precreate: usize,
    /// Idle this long, a warm worker is paused; 0 never pauses.
    #[serde(default = "default_pause_after_ms")]
    pub pause_after_ms: u64,
    /// Idle this long, a worker is marked for sweeping.
    #[serde(default = "default_idle_timeout_ms")]
    pub idle_timeout_ms: u64,
    #[serde(default)]
    pub memory_bytes: Option<i64>,
    #[serde(default)]
    pub nano_cpus: Option<i64>,
    #[serde(default)]
    pub pids_limit: Option<i64>,
    /// `uid:gid` the worker runs as; the stub admits that uid on its socket.
    #[serde(default = "default_user")]
    pub user: String,
    /// `None` for images built on the worker library; otherwise the image's own entrypoint
    /// and command run under wepoq's shim in this mode.
    #[serde(default)]
    pub shim: Option<ShimMode>,
}

fn default_min_warm() -> usize {
    1
}
fn default_max_workers() -> usize {
    8
}
fn default_concurrency() -> u32 {
    1
}
fn default_precreate() -> usize {
    1
}
fn default_pause_after_ms() -> u64 {
    2000
}
fn default_idle_timeout_ms() -> u64 {
    120_000
}
fn default_user() -> String {
    "65534:65534".into()
}

impl RuntimeLabel {
    /// Reads the label's value; the error says which field is wrong.
    pub fn parse(json: &str) -> Result<RuntimeLabel, ProtoError> {
        let label: RuntimeLabel =
            serde_json::from_str(json).map_err(|e| ProtoError::Json(e.to_string()))?;
        if label.image.is_empty() {
            return Err(ProtoError::Json("image is empty".into()));
        }
        if label.concurrency == 0 || label.concurrency > 256 {
            return Err(ProtoError::Json("concurrency must be 1 to 256".into()));
        }
        // A worker running as root would pass both guards of the agent's control socket,
        // which sits in the directory workers share (its mode and SO_PEERCRED uid 0).
        match label.uid() {
            None => {
                return Err(ProtoError::Json(format!(
                    "user {:?} must be a numeric uid[:gid]",
                    label.user
                )));
            }
            Some(0) => {
                return Err(ProtoError::Json(format!(
                    "user {:?} is root: workers run as a non-root uid",
                    label.user
                )));
            }
            Some(_) => {}
        }
        if label.min_warm > label.max_workers {
            return Err(ProtoError::Json(format!(
                "min_warm {} is above max_workers {}",
                label.min_warm, label.max_workers
            )));
        }
        Ok(label)
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("the label serializes")
    }

    /// The uid part of `user`, for the stub's `--allow-uid`.
    pub fn uid(&self) -> Option<u32> {
        self.user.split(':').next()?.parse().ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn requests_have_the_documented_shape() {
        let cases = [
            (
                Request::Hello {
                    id: 1,
                    endpoint: "s1.svr.vote.ovn-vote.ns.wepoq.net".into(),
                },
                r#"{"op":"hello","id":1,"endpoint":"s1.svr.vote.ovn-vote.ns.wepoq.net"}"#,
            ),
            (
                Request::Spawn {
                    id: 2,
                    concurrency: 3,
                },
                r#"{"op":"spawn","id":2,"concurrency":3}"#,
            ),
            (
                Request::Stop {
                    id: 3,
                    worker_id: "w".into(),
                },
                r#"{"op":"stop","id":3,"worker_id":"w"}"#,
            ),
            (
                Request::Pause {
                    id: 4,
                    worker_id: "w".into(),
                },
                r#"{"op":"pause","id":4,"worker_id":"w"}"#,
            ),
            (
                Request::Resume {
                    id: 5,
                    worker_id: "w".into(),
                },
                r#"{"op":"resume","id":5,"worker_id":"w"}"#,
            ),
        ];
        for (request, json) in cases {
            let line = encode(&request);
            assert_eq!(line, format!("{json}\n").as_bytes());
            assert_eq!(serde_json::from_str::<Request>(json).unwrap(), request);
        }
    }

    #[test]
    fn replies_and_events_are_told_apart() {
        let lines = [
            (r#"{"id":7,"ok":true}"#, FromAgent::Reply(Reply::ok(7))),
            (
                r#"{"id":8,"ok":true,"worker_id":"c-1"}"#,
                FromAgent::Reply(Reply::spawned(8, "c-1")),
            ),
            (
                r#"{"id":10,"ok":true,"worker_id":"c-2","create_us":90000,"start_us":88000}"#,
                FromAgent::Reply(Reply {
                    create_us: Some(90_000),
                    start_us: Some(88_000),
                    ..Reply::spawned(10, "c-2")
                }),
            ),
            (
                r#"{"id":11,"ok":true,"unpause_us":10874}"#,
                FromAgent::Reply(Reply {
                    unpause_us: Some(10_874),
                    ..Reply::ok(11)
                }),
            ),
            (
                r#"{"id":9,"error":"no image"}"#,
                FromAgent::Reply(Reply::error(9, "no image")),
            ),
            (
                r#"{"event":"exited","worker_id":"c-1","why":"exit code 137"}"#,
                FromAgent::Event(AgentEvent::Exited {
                    worker_id: "c-1".into(),
                    why: "exit code 137".into(),
                }),
            ),
        ];
        for (json, expected) in lines {
            let got: FromAgent = serde_json::from_str(json).unwrap();
            assert_eq!(got, expected);
            // And back: what the agent writes is what the stub reads.
            assert_eq!(
                String::from_utf8(encode(&got)).unwrap(),
                format!("{json}\n")
            );
        }
        assert_eq!(Reply::spawned(8, "c-1").outcome(), Ok(Some("c-1")));
        assert_eq!(Reply::ok(7).outcome(), Ok(None));
        assert_eq!(Reply::error(9, "x").outcome(), Err("x".into()));
        let neither: Reply = serde_json::from_str(r#"{"id":1}"#).unwrap();
        assert!(neither.outcome().is_err());
        assert!(serde_json::from_str::<FromAgent>(r#"{"hello":1}"#).is_err());
        let bad = serde_json::from_str::<FromAgent>(r#"{"event":"exited"}"#).unwrap_err();
        assert!(bad.to_string().contains("worker_id"), "{bad}");
    }

    #[test]
    fn the_decoder_takes_any_split_of_the_stream() {
        let mut stream = Vec::new();
        for id in 0..5u64 {
            stream.extend(encode(&Request::Spawn { id, concurrency: 1 }));
        }
        for chunk in 1..stream.len() {
            let mut d = LineDecoder::new();
            let mut got = Vec::new();
            for part in stream.chunks(chunk) {
                d.push(part);
                while let Some(r) = d.next_message::<Request>() {
                    got.push(r.unwrap().id());
                }
            }
            assert_eq!(got, [0, 1, 2, 3, 4], "chunks of {chunk}");
            assert_eq!(d.pending(), 0);
        }
    }

    #[test]
    fn bad_and_overlong_lines_are_reported_and_skipped() {
        let mut d = LineDecoder::new();
        d.push(b"{not json}\n\n");
        assert!(matches!(
            d.next_message::<Request>(),
            Some(Err(ProtoError::Json(_)))
        ));
        assert!(
            d.next_message::<Request>().is_none(),
            "the blank line is skipped"
        );
        d.push(&vec![b'x'; MAX_LINE + 10]);
        assert_eq!(d.next_message::<Request>(), Some(Err(ProtoError::TooLong)));
        d.push(&vec![b'x'; MAX_LINE + 10]);
        assert!(
            d.next_message::<Request>().is_none(),
            "one error per overlong line"
        );
        assert!(d.pending() <= MAX_LINE + 10, "nothing held beyond a line");
        d.push(b"yyy\n");
        d.push(&encode(&Request::Stop {
            id: 4,
            worker_id: "w".into(),
        }));
        assert_eq!(d.next_message::<Request>().unwrap().unwrap().id(), 4);
        assert!(d.next_message::<Request>().is_none());
    }

    /// A bounded version of the `control_proto` fuzz target over its seeds: every one-byte
    /// change of every seed, read in chunks of every size up to 8, never panics, and what
    /// decodes re-encodes to itself.
    #[test]
    fn mutated_seeds_decode_or_fail_cleanly() {
        let seeds: [&[u8]; 3] = [
            include_bytes!("../../fuzz/seeds/control_proto/requests"),
            include_bytes!("../../fuzz/seeds/control_proto/agent"),
            include_bytes!("../../fuzz/seeds/control_proto/pause"),
        ];
        let mut decoded = 0;
        for seed in seeds {
            let stream = &seed[1..];
            for pos in 0..stream.len() {
                for flip in [0x01u8, 0x20, 0x80] {
                    let mut bytes = stream.to_vec();
                    bytes[pos] ^= flip;
                    let chunk = pos % 8 + 1;
                    let (mut requests, mut replies) = (LineDecoder::new(), LineDecoder::new());
                    for part in bytes.chunks(chunk) {
                        requests.push(part);
                        replies.push(part);
                        while let Some(r) = requests.next_message::<Request>() {
                            if let Ok(r) = r {
                                decoded += 1;
                                let line = encode(&r);
                                let back: Request =
                                    serde_json::from_slice(&line[..line.len() - 1]).unwrap();
                                assert_eq!(back, r);
                            }
                        }
                        while let Some(m) = replies.next_message::<FromAgent>() {
                            if let Ok(m) = m {
                                decoded += 1;
                                let line = encode(&m);
                                let back: FromAgent =
                                    serde_json::from_slice(&line[..line.len() - 1]).unwrap();
                                assert_eq!(back, m);
                            }
                        }
                    }
                }
            }
        }
        assert!(
            decoded > 100,
            "most one-byte changes still decode: {decoded}"
        );
    }

    #[test]
    fn the_label_reads_the_documented_example_and_defaults_the_rest() {
        let json = r#"{"image":"wepoq/vote:dev","command":null,"min_warm":1,"max_workers":8,"concurrency":1,
          "precreate":1,"pause_after_ms":2000,"idle_timeout_ms":120000,"memory_bytes":67108864,
          "nano_cpus":null,"pids_limit":64,"user":"65534:65534","shim":null}"#;
        let label = RuntimeLabel::parse(json).unwrap();
        assert_eq!(label.memory_bytes, Some(67_108_864));
        assert_eq!(label.pids_limit, Some(64));
        assert_eq!(label.uid(), Some(65534));
        assert_eq!(RuntimeLabel::parse(&label.to_json()).unwrap(), label);
        let minimal = RuntimeLabel::parse(r#"{"image":"x","shim":"systemd"}"#).unwrap();
        assert_eq!(minimal.shim, Some(ShimMode::Systemd));
        assert_eq!(minimal.pause_after_ms, 2000);
        assert_eq!(minimal.min_warm, 1);
        let inetd = RuntimeLabel::parse(r#"{"image":"x","shim":"inetd"}"#).unwrap();
        assert_eq!(inetd.shim, Some(ShimMode::Inetd));
        for (bad, what) in [
            (r#"{"image":""}"#, "image"),
            (r#"{"image":"x","concurrency":0}"#, "concurrency"),
            (r#"{"image":"x","min_warm":9}"#, "min_warm"),
            (r#"{"image":"x","shim":"cgi"}"#, "cgi"),
            (r#"{"min_warm":1}"#, "image"),
            (r#"{"image":"x","user":"0:0"}"#, "root"),
            (r#"{"image":"x","user":"0"}"#, "root"),
            (r#"{"image":"x","user":"nobody"}"#, "numeric"),
        ] {
            let e = RuntimeLabel::parse(bad).unwrap_err().to_string();
            assert!(e.contains(what), "{bad}: {e}");
        }
    }
}
