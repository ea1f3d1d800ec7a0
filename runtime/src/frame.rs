//! The wire format between the stub and its workers: one frame per SOCK_SEQPACKET message.
//!
//! Pure: no I/O, no clock. SEQPACKET keeps message boundaries, so a frame is exactly one
//! message and "incomplete" cannot happen; a short message is an error, not a wait.
//!
//! Layout (all integers big-endian):
//!
//! ```text
//! byte 0      version (1)
//! byte 1      kind: 1 hello (worker -> stub), 2 handoff (stub -> worker, carries one fd),
//!             3 done (worker -> stub), 4 datagram handoff (as 2, the fd being the
//!             service's bound UDP socket itself, systemd's `Accept=no`)
//! hello:      concurrency u32, id_len u8, id bytes (utf-8)
//! handoff:    conn_id u64, accept_unix_ns u64, deadline_unix_ns u64,
//!             remote addr, local addr, fqdn_len u8, fqdn bytes (utf-8)
//! done:       conn_id u64
//! addr:       family u8 (4 or 6), ip (4 or 16 bytes), port u16
//! ```

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};

/// Version byte every frame starts with; a peer speaking another version is refused.
pub const VERSION: u8 = 1;

/// Upper bound of an encoded frame, used to size receive buffers.
pub const MAX_FRAME: usize = 2 + 8 * 3 + 19 * 2 + 1 + 255;

const KIND_HELLO: u8 = 1;
const KIND_HANDOFF: u8 = 2;
const KIND_DONE: u8 = 3;
const KIND_DATAGRAM: u8 = 4;

/// One message between the stub and a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    /// A worker announces itself: the id it was started with and how many connections it takes.
    Hello { worker_id: String, concurrency: u32 },
    /// The stub hands over an accepted connection; the socket travels as SCM_RIGHTS.
    Handoff(Handoff),
    /// A worker finished a connection and has room for another.
    Done { conn_id: u64 },
}

/// What a worker learns about a connection handed to it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Handoff {
    pub conn_id: u64,
    /// When the stub accepted the connection, nanoseconds since the Unix epoch.
    pub accept_unix_ns: u64,
    /// When the worker should give up on the connection, nanoseconds since the Unix epoch.
    pub deadline_unix_ns: u64,
    pub remote: SocketAddr,
    pub local: SocketAddr,
    /// The service's fully qualified name, so one worker binary can serve several services.
    pub fqdn: String,
    /// The socket is the service's bound UDP socket (a listening datagram socket, shared
    /// with the stub), not an accepted connection: `remote` is unspecified, and the worker
    /// keeps it until it is stopped.
    pub datagram: bool,
}

/// Why bytes could not be read as a frame.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame truncated: needed {needed} more bytes")]
    Truncated { needed: usize },
    #[error("unsupported frame version {0}")]
    Version(u8),
    #[error("unknown frame kind {0}")]
    Kind(u8),
    #[error("unknown address family {0}")]
    Family(u8),
    #[error("{field} is not utf-8")]
    Utf8 { field: &'static str },
    #[error("{field} is longer than 255 bytes")]
    TooLong { field: &'static str },
    #[error("{0} trailing bytes after the frame")]
    Trailing(usize),
}

impl Frame {
    /// Appends the encoding of this frame to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) -> Result<(), FrameError> {
        out.push(VERSION);
        match self {
            Frame::Hello {
                worker_id,
                concurrency,
            } => {
                out.push(KIND_HELLO);
                out.extend_from_slice(&concurrency.to_be_bytes());
                put_str(out, worker_id, "worker id")?;
            }
            Frame::Handoff(h) => {
                out.pop();
                encode_handoff(
                    out,
                    h.conn_id,
                    h.accept_unix_ns,
                    h.deadline_unix_ns,
                    h.remote,
                    h.local,
                    &h.fqdn,
                    h.datagram,
                )?;
            }
            Frame::Done { conn_id } => {
                out.pop();
                out.extend_from_slice(&done_bytes(*conn_id));
            }
        }
        Ok(())
    }

    /// Encodes into a fresh buffer.
    pub fn to_bytes(&self) -> Result<Vec<u8>, FrameError> {
        let mut out = Vec::with_capacity(64);
        self.encode(&mut out)?;
        Ok(out)
    }

    /// Decodes exactly one frame; bytes left over are an error since a message is a frame.
    pub fn decode(bytes: &[u8]) -> Result<Frame, FrameError> {
        let mut r = Reader { bytes, pos: 0 };
        let version = r.u8()?;
        if version != VERSION {
            return Err(FrameError::Version(version));
        }
        let frame = match r.u8()? {
            KIND_HELLO => {
                let concurrency = r.u32()?;
                let worker_id = r.string("worker id")?;
                Frame::Hello {
                    worker_id,
                    concurrency,
                }
            }
            kind @ (KIND_HANDOFF | KIND_DATAGRAM) => Frame::Handoff(Handoff {
                conn_id: r.u64()?,
                accept_unix_ns: r.u64()?,
                deadline_unix_ns: r.u64()?,
                remote: r.addr()?,
                local: r.addr()?,
                fqdn: r.string("fqdn")?,
                datagram: kind == KIND_DATAGRAM,
            }),
            KIND_DONE => Frame::Done { conn_id: r.u64()? },
            other => return Err(FrameError::Kind(other)),
        };
        match bytes.len() - r.pos {
            0 => Ok(frame),
            n => Err(FrameError::Trailing(n)),
        }
    }
}

/// Appends a handoff frame built from borrowed parts (the stub encodes one per connection
/// and need not copy its fqdn into a [`Handoff`] to do so). Same bytes as
/// `Frame::Handoff(..).encode`.
#[allow(clippy::too_many_arguments)]
pub fn encode_handoff(
    out: &mut Vec<u8>,
    conn_id: u64,
    accept_unix_ns: u64,
    deadline_unix_ns: u64,
    remote: SocketAddr,
    local: SocketAddr,
    fqdn: &str,
    datagram: bool,
) -> Result<(), FrameError> {
    out.push(VERSION);
    out.push(if datagram {
        KIND_DATAGRAM
    } else {
        KIND_HANDOFF
    });
    out.extend_from_slice(&conn_id.to_be_bytes());
    out.extend_from_slice(&accept_unix_ns.to_be_bytes());
    out.extend_from_slice(&deadline_unix_ns.to_be_bytes());
    put_addr(out, remote);
    put_addr(out, local);
    put_str(out, fqdn, "fqdn")
}

/// A done frame, without allocating. Same bytes as `Frame::Done { conn_id }.encode`.
pub fn done_bytes(conn_id: u64) -> [u8; 10] {
    let mut b = [0u8; 10];
    b[0] = VERSION;
    b[1] = KIND_DONE;
    b[2..].copy_from_slice(&conn_id.to_be_bytes());
    b
}

fn put_str(out: &mut Vec<u8>, s: &str, field: &'static str) -> Result<(), FrameError> {
    let len = u8::try_from(s.len()).map_err(|_| FrameError::TooLong { field })?;
    out.push(len);
    out.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_addr(out: &mut Vec<u8>, addr: SocketAddr) {
    match addr.ip() {
        IpAddr::V4(ip) => {
            out.push(4);
            out.extend_from_slice(&ip.octets());
        }
        IpAddr::V6(ip) => {
            out.push(6);
            out.extend_from_slice(&ip.octets());
        }
    }
    out.extend_from_slice(&addr.port().to_be_bytes());
}

struct Reader<'a> {
    bytes: &'a [u8],
    pos: usize,
}

impl Reader<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], FrameError> {
        let rest = &self.bytes[self.pos..];
        if rest.len() < n {
            return Err(FrameError::Truncated {
                needed: n - rest.len(),
            });
        }
        self.pos += n;
        Ok(&rest[..n])
    }

    fn u8(&mut self) -> Result<u8, FrameError> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, FrameError> {
        Ok(u16::from_be_bytes(self.take(2)?.try_into().unwrap()))
    }

    fn u32(&mut self) -> Result<u32, FrameError> {
        Ok(u32::from_be_bytes(self.take(4)?.try_into().unwrap()))
    }

    fn u64(&mut self) -> Result<u64, FrameError> {
        Ok(u64::from_be_bytes(self.take(8)?.try_into().unwrap()))
    }

    fn string(&mut self, field: &'static str) -> Result<String, FrameError> {
        let len = self.u8()? as usize;
        let raw = self.take(len)?;
        String::from_utf8(raw.to_vec()).map_err(|_| FrameError::Utf8 { field })
    }

    fn addr(&mut self) -> Result<SocketAddr, FrameError> {
        let ip = match self.u8()? {
            4 => {
                let o: [u8; 4] = self.take(4)?.try_into().unwrap();
                IpAddr::V4(Ipv4Addr::from(o))
            }
            6 => {
                let o: [u8; 16] = self.take(16)?.try_into().unwrap();
                IpAddr::V6(Ipv6Addr::from(o))
            }
            other => return Err(FrameError::Family(other)),
        };
        Ok(SocketAddr::new(ip, self.u16()?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn handoff() -> Handoff {
        Handoff {
            conn_id: 0x0102_0304_0506_0708,
            accept_unix_ns: 1_700_000_000_000_000_001,
            deadline_unix_ns: 1_700_000_030_000_000_001,
            remote: "127.0.0.1:54321".parse().unwrap(),
            local: "[::1]:8080".parse().unwrap(),
            fqdn: "vip.srv.result.ovn-vote.ns.ovn.wepoq.net".into(),
            datagram: false,
        }
    }

    #[test]
    fn every_kind_round_trips() {
        let frames = [
            Frame::Hello {
                worker_id: "w-7".into(),
                concurrency: 3,
            },
            Frame::Handoff(handoff()),
            Frame::Handoff(Handoff {
                datagram: true,
                remote: "0.0.0.0:0".parse().unwrap(),
                ..handoff()
            }),
            Frame::Done { conn_id: u64::MAX },
        ];
        for frame in frames {
            let bytes = frame.to_bytes().unwrap();
            assert!(bytes.len() <= MAX_FRAME);
            assert_eq!(Frame::decode(&bytes).unwrap(), frame);
        }
    }

    #[test]
    fn done_layout_is_fixed() {
        let bytes = Frame::Done { conn_id: 258 }.to_bytes().unwrap();
        assert_eq!(bytes, [1, 3, 0, 0, 0, 0, 0, 0, 1, 2]);
    }

    #[test]
    fn handoff_layout_puts_addresses_after_times() {
        let bytes = Frame::Handoff(handoff()).to_bytes().unwrap();
        assert_eq!(&bytes[..2], &[1, 2]);
        assert_eq!(&bytes[2..10], &0x0102_0304_0506_0708u64.to_be_bytes());
        // remote: family 4, 127.0.0.1, port 54321
        assert_eq!(&bytes[26..33], &[4, 127, 0, 0, 1, 0xd4, 0x31]);
        // local: family 6
        assert_eq!(bytes[33], 6);
    }

    #[test]
    fn every_truncation_is_reported_not_panicking() {
        let bytes = Frame::Handoff(handoff()).to_bytes().unwrap();
        for cut in 0..bytes.len() {
            assert!(
                matches!(
                    Frame::decode(&bytes[..cut]),
                    Err(FrameError::Truncated { .. })
                ),
                "cut at {cut}"
            );
        }
    }

    #[test]
    fn bad_input_is_named() {
        assert_eq!(Frame::decode(&[2, 3]), Err(FrameError::Version(2)));
        assert_eq!(Frame::decode(&[1, 9]), Err(FrameError::Kind(9)));
        let mut bytes = Frame::Done { conn_id: 1 }.to_bytes().unwrap();
        bytes.push(0);
        assert_eq!(Frame::decode(&bytes), Err(FrameError::Trailing(1)));
        let mut bad_family = vec![1, 2];
        bad_family.extend_from_slice(&[0; 24]);
        bad_family.push(5);
        assert_eq!(Frame::decode(&bad_family), Err(FrameError::Family(5)));
        let bad_utf8 = [1, 1, 0, 0, 0, 1, 1, 0xff];
        assert_eq!(
            Frame::decode(&bad_utf8),
            Err(FrameError::Utf8 { field: "worker id" })
        );
    }

    #[test]
    fn overlong_strings_are_refused_at_encode() {
        let frame = Frame::Hello {
            worker_id: "x".repeat(256),
            concurrency: 1,
        };
        assert_eq!(
            frame.to_bytes(),
            Err(FrameError::TooLong { field: "worker id" })
        );
    }
}
