//! Datagrams by the batch: `recvmmsg` and `sendmmsg` over the tunnel's UDP socket. Under
//! load the packet threads then wake and cross into the kernel once per batch rather than
//! once per packet, which on a small machine is most of what the tunnel costs.

use std::io;
use std::mem::{size_of, zeroed};
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, SocketAddrV4, SocketAddrV6, UdpSocket};
use std::os::fd::AsRawFd;

/// Datagrams per system call.
pub const BATCH: usize = 32;
/// Room for one datagram: the underlay's 1500 bytes and then some (a longer one is cut and
/// dropped: no WireGuard peer of ours sends it).
pub const SLOT: usize = 2048;

fn to_storage(addr: SocketAddr) -> (libc::sockaddr_storage, libc::socklen_t) {
    // SAFETY: sockaddr_storage is plain data; all zeroes is a valid (unspecified) value.
    let mut storage: libc::sockaddr_storage = unsafe { zeroed() };
    let len = match addr {
        SocketAddr::V4(a) => {
            let sin = libc::sockaddr_in {
                sin_family: libc::AF_INET as libc::sa_family_t,
                sin_port: a.port().to_be(),
                sin_addr: libc::in_addr {
                    s_addr: u32::from(*a.ip()).to_be(),
                },
                sin_zero: [0; 8],
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in, sin) };
            size_of::<libc::sockaddr_in>()
        }
        SocketAddr::V6(a) => {
            let sin6 = libc::sockaddr_in6 {
                sin6_family: libc::AF_INET6 as libc::sa_family_t,
                sin6_port: a.port().to_be(),
                sin6_flowinfo: a.flowinfo(),
                sin6_addr: libc::in6_addr {
                    s6_addr: a.ip().octets(),
                },
                sin6_scope_id: a.scope_id(),
            };
            // SAFETY: sockaddr_storage is larger than, and aligned for, sockaddr_in6.
            unsafe { std::ptr::write(&mut storage as *mut _ as *mut libc::sockaddr_in6, sin6) };
            size_of::<libc::sockaddr_in6>()
        }
    };
    (storage, len as libc::socklen_t)
}

fn from_storage(storage: &libc::sockaddr_storage) -> Option<SocketAddr> {
    match i32::from(storage.ss_family) {
        libc::AF_INET => {
            // SAFETY: the kernel wrote a sockaddr_in (ss_family says so).
            let sin = unsafe { &*(storage as *const _ as *const libc::sockaddr_in) };
            Some(SocketAddr::V4(SocketAddrV4::new(
                Ipv4Addr::from(u32::from_be(sin.sin_addr.s_addr)),
                u16::from_be(sin.sin_port),
            )))
        }
        libc::AF_INET6 => {
            // SAFETY: the kernel wrote a sockaddr_in6 (ss_family says so).
            let sin6 = unsafe { &*(storage as *const _ as *const libc::sockaddr_in6) };
            Some(SocketAddr::V6(SocketAddrV6::new(
                Ipv6Addr::from(sin6.sin6_addr.s6_addr),
                u16::from_be(sin6.sin6_port),
                sin6.sin6_flowinfo,
                sin6.sin6_scope_id,
            )))
        }
        _ => None,
    }
}

/// Linux's `UDP_GRO` (include/uapi/linux/udp.h): the socket takes datagrams the kernel
/// coalesced (a GSO send arriving whole over a veth, or GRO on the receiving device), with
/// their segment size in a control message.
const UDP_GRO: libc::c_int = 104;
/// Room for one received buffer: a coalesced run of datagrams can be up to 64 KiB.
const RECV_SLOT: usize = 65_536;
/// Buffers per `recvmmsg` (each may hold a run of datagrams).
const RECV_BATCH: usize = 16;

/// Asks the kernel to hand `socket` coalesced runs of datagrams ([`Received`] cuts them up
/// again). A kernel without UDP GRO leaves the socket as it was; that is no error.
pub fn accept_coalesced(socket: &UdpSocket) {
    let on: libc::c_int = 1;
    // SAFETY: setsockopt reads an int of the given size from a live local.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_UDP,
            UDP_GRO,
            (&on as *const libc::c_int).cast(),
            size_of::<libc::c_int>() as libc::socklen_t,
        );
    }
}

/// What one `recvmmsg` brought: up to [`RECV_BATCH`] buffers, each one datagram or a run
/// of datagrams of one size from one sender (cut up by [`Received::get`]).
pub struct Received {
    slots: Vec<Vec<u8>>,
    from: Vec<libc::sockaddr_storage>,
    controls: Vec<Control>,
    lens: Vec<usize>,
    /// The run's datagram size, when the kernel coalesced the buffer.
    segment: Vec<Option<usize>>,
    truncated: Vec<bool>,
    count: usize,
}

impl Received {
    pub fn new() -> Received {
        Received {
            slots: vec![vec![0u8; RECV_SLOT]; RECV_BATCH],
            // SAFETY: plain data, all zeroes valid.
            from: vec![unsafe { zeroed() }; RECV_BATCH],
            controls: vec![Control([0; 32]); RECV_BATCH],
            lens: vec![0; RECV_BATCH],
            segment: vec![None; RECV_BATCH],
            truncated: vec![false; RECV_BATCH],
            count: 0,
        }
    }

    /// Waits for one buffer (the socket's read timeout applies), then takes what else is
    /// queued, up to [`RECV_BATCH`]. Returns how many buffers.
    pub fn recv(&mut self, socket: &UdpSocket) -> io::Result<usize> {
        let mut iovs: Vec<libc::iovec> = self
            .slots
            .iter_mut()
            .map(|s| libc::iovec {
                iov_base: s.as_mut_ptr().cast(),
                iov_len: RECV_SLOT,
            })
            .collect();
        // SAFETY: mmsghdr is plain data; the pointers are filled in below.
        let mut headers: Vec<libc::mmsghdr> =
            (0..RECV_BATCH).map(|_| unsafe { zeroed() }).collect();
        for (i, h) in headers.iter_mut().enumerate() {
            h.msg_hdr.msg_name = (&mut self.from[i] as *mut libc::sockaddr_storage).cast();
            h.msg_hdr.msg_namelen = size_of::<libc::sockaddr_storage>() as libc::socklen_t;
            h.msg_hdr.msg_iov = &mut iovs[i];
            h.msg_hdr.msg_iovlen = 1;
            h.msg_hdr.msg_control = self.controls[i].0.as_mut_ptr().cast();
            h.msg_hdr.msg_controllen = self.controls[i].0.len();
        }
        // SAFETY: `headers` holds RECV_BATCH valid mmsghdrs whose buffers (slots,
        // addresses, iovecs, control buffers) outlive the call.
        let n = unsafe {
            libc::recvmmsg(
                socket.as_raw_fd(),
                headers.as_mut_ptr(),
                RECV_BATCH as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            self.count = 0;
            return Err(io::Error::last_os_error());
        }
        self.count = n as usize;
        for (i, h) in headers.iter().take(self.count).enumerate() {
            self.lens[i] = h.msg_len as usize;
            self.truncated[i] = h.msg_hdr.msg_flags & libc::MSG_TRUNC != 0;
            self.segment[i] = segment_size(&h.msg_hdr);
        }
        Ok(self.count)
    }

    /// The datagrams of buffer `i` of the last batch and their sender; `None` if the
    /// buffer was cut short or came from no IP address.
    pub fn get(&self, i: usize) -> Option<(std::slice::Chunks<'_, u8>, SocketAddr)> {
        if i >= self.count || self.truncated[i] {
            return None;
        }
        let data = &self.slots[i][..self.lens[i]];
        let size = self.segment[i].unwrap_or(data.len()).max(1);
        Some((data.chunks(size), from_storage(&self.from[i])?))
    }
}

/// The segment size of a coalesced buffer, from its `UDP_GRO` control message.
fn segment_size(header: &libc::msghdr) -> Option<usize> {
    // SAFETY: the kernel filled msg_control up to msg_controllen; CMSG_FIRSTHDR/NXTHDR
    // stay within it.
    unsafe {
        let mut cmsg = libc::CMSG_FIRSTHDR(header);
        while !cmsg.is_null() {
            if (*cmsg).cmsg_level == libc::SOL_UDP && (*cmsg).cmsg_type == UDP_GRO {
                let size = std::ptr::read_unaligned(libc::CMSG_DATA(cmsg).cast::<libc::c_int>());
                return usize::try_from(size).ok().filter(|&s| s > 0);
            }
            cmsg = libc::CMSG_NXTHDR(header, cmsg);
        }
    }
    None
}

/// Linux's `UDP_SEGMENT` (include/uapi/linux/udp.h): a send of several datagrams of one
/// size in one buffer, cut by the kernel (UDP GSO, Linux 4.18).
const UDP_SEGMENT: libc::c_int = 103;
/// Segments in one GSO send at most (the kernel's limit was 64 before 5.x).
const MAX_SEGMENTS: usize = 64;

/// Datagrams gathered to go out together: one `sendmmsg`, in which each run of datagrams of
/// one size to one address is a single GSO send. Everything after the kernel's UDP layer
/// (routing, the device, the receiver's stack on a veth) then handles a run once.
pub struct Outgoing {
    slots: Vec<[u8; SLOT]>,
    to: Vec<(SocketAddr, libc::sockaddr_storage, libc::socklen_t)>,
    lens: Vec<usize>,
    count: usize,
    /// Sends use GSO until the kernel refuses it once (no checksum offload on the route's
    /// device, say); then one datagram a message.
    gso: bool,
}

/// A control message buffer, aligned for `cmsghdr`.
#[derive(Clone, Copy)]
#[repr(C, align(8))]
struct Control([u8; 32]);

impl Outgoing {
    pub fn new() -> Outgoing {
        Outgoing {
            slots: vec![[0u8; SLOT]; BATCH],
            to: Vec::with_capacity(BATCH),
            lens: vec![0; BATCH],
            count: 0,
            gso: true,
        }
    }

    pub fn is_full(&self) -> bool {
        self.count == BATCH
    }

    /// The next free slot, for `fill` to write a datagram into; it returns the datagram's
    /// length and destination, or `None` to leave the slot free.
    pub fn push_with(&mut self, fill: impl FnOnce(&mut [u8]) -> Option<(usize, SocketAddr)>) {
        if self.is_full() {
            return;
        }
        if let Some((len, to)) = fill(&mut self.slots[self.count]) {
            self.lens[self.count] = len;
            let (storage, socklen) = to_storage(to);
            self.to.push((to, storage, socklen));
            self.count += 1;
        }
    }

    /// The runs from datagram `from` on: (first, end) of datagrams to one address, all of
    /// the first one's size but the last, which may be shorter (what GSO can cut).
    fn runs(&self, from: usize) -> Vec<(usize, usize)> {
        let mut runs = Vec::new();
        let mut i = from;
        while i < self.count {
            let mut end = i + 1;
            if self.gso {
                while end < self.count
                    && end - i < MAX_SEGMENTS
                    && self.to[end].0 == self.to[i].0
                    && self.lens[end] <= self.lens[i]
                {
                    end += 1;
                    if self.lens[end - 1] < self.lens[i] {
                        break;
                    }
                }
            }
            runs.push((i, end));
            i = end;
        }
        runs
    }

    /// Sends what was gathered. A datagram the kernel refuses is dropped: losses are
    /// WireGuard's and TCP's to recover, as on any UDP path.
    pub fn flush(&mut self, socket: &UdpSocket) {
        let mut next = 0;
        while next < self.count {
            let runs = self.runs(next);
            let mut iovs: Vec<libc::iovec> = (0..self.count)
                .map(|i| libc::iovec {
                    iov_base: self.slots[i].as_mut_ptr().cast(),
                    iov_len: self.lens[i],
                })
                .collect();
            let mut controls = vec![Control([0; 32]); runs.len()];
            // SAFETY: plain data; the pointers are filled in below.
            let mut headers: Vec<libc::mmsghdr> =
                runs.iter().map(|_| unsafe { zeroed() }).collect();
            for (k, &(first, end)) in runs.iter().enumerate() {
                let h = &mut headers[k].msg_hdr;
                let (_, addr, len) = &mut self.to[first];
                h.msg_name = (addr as *mut libc::sockaddr_storage).cast();
                h.msg_namelen = *len;
                h.msg_iov = &mut iovs[first];
                h.msg_iovlen = end - first;
                if end - first > 1 {
                    h.msg_control = controls[k].0.as_mut_ptr().cast();
                    // SAFETY: CMSG_SPACE of a u16 (24 bytes) fits the 32-byte buffer.
                    h.msg_controllen =
                        unsafe { libc::CMSG_SPACE(size_of::<u16>() as u32) } as usize;
                    // SAFETY: msg_control/msg_controllen describe a buffer with room for one
                    // cmsghdr and its u16, aligned for cmsghdr.
                    unsafe {
                        let cmsg = libc::CMSG_FIRSTHDR(h);
                        (*cmsg).cmsg_level = libc::SOL_UDP;
                        (*cmsg).cmsg_type = UDP_SEGMENT;
                        (*cmsg).cmsg_len = libc::CMSG_LEN(size_of::<u16>() as u32) as usize;
                        std::ptr::write_unaligned(
                            libc::CMSG_DATA(cmsg).cast::<u16>(),
                            self.lens[first] as u16,
                        );
                    }
                }
            }
            // SAFETY: `headers` are valid mmsghdrs whose buffers (slots, addresses, iovecs,
            // control messages) outlive the call.
            let n = unsafe {
                libc::sendmmsg(
                    socket.as_raw_fd(),
                    headers.as_mut_ptr(),
                    headers.len() as libc::c_uint,
                    0,
                )
            };
            if n > 0 {
                next = runs[n as usize - 1].1;
                continue;
            }
            let error = io::Error::last_os_error().raw_os_error();
            let (first, end) = runs[0];
            if self.gso && end - first > 1 && matches!(error, Some(libc::EIO | libc::EINVAL)) {
                // GSO refused on this path: from now on, one datagram a message.
                self.gso = false;
            } else {
                // The first run failed (no route, buffer full): skip it, try the rest.
                next = end;
            }
        }
        self.count = 0;
        self.to.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    /// Sends five 3-byte datagrams, a 2-byte one (all to `to`) and one to `other`, in one
    /// flush; returns what `to`'s socket received, datagram by datagram, and how many
    /// buffers that took.
    fn round(coalesce: bool) -> (Vec<Vec<u8>>, usize) {
        let a = UdpSocket::bind("127.0.0.1:0").unwrap();
        let b = UdpSocket::bind("127.0.0.1:0").unwrap();
        let c = UdpSocket::bind("127.0.0.1:0").unwrap();
        for s in [&b, &c] {
            s.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        }
        if coalesce {
            accept_coalesced(&b);
        }
        let (to, other) = (b.local_addr().unwrap(), c.local_addr().unwrap());
        let mut out = Outgoing::new();
        for i in 0..5u8 {
            out.push_with(|slot| {
                slot[..3].copy_from_slice(&[i, i, i]);
                Some((3, to))
            });
        }
        // A shorter one ends the run (GSO cuts equal sizes, the last may be short), and one
        // to another address is a run of its own.
        out.push_with(|slot| {
            slot[..2].copy_from_slice(&[9, 9]);
            Some((2, to))
        });
        out.push_with(|slot| {
            slot[..3].copy_from_slice(&[7, 7, 7]);
            Some((3, other))
        });
        out.push_with(|_| None);
        assert_eq!(out.runs(0), vec![(0, 6), (6, 7)]);
        out.flush(&a);
        let mut buf = [0u8; 16];
        assert_eq!(c.recv(&mut buf).unwrap(), 3);
        let mut got = Received::new();
        let (mut seen, mut buffers) = (Vec::new(), 0);
        while seen.len() < 6 {
            let n = got.recv(&b).unwrap();
            buffers += n;
            for i in 0..n {
                let (datagrams, from) = got.get(i).unwrap();
                assert_eq!(from, a.local_addr().unwrap());
                seen.extend(datagrams.map(<[u8]>::to_vec));
            }
        }
        (seen, buffers)
    }

    #[test]
    fn a_batch_goes_out_and_comes_back_whole_and_in_order() {
        let mut want: Vec<Vec<u8>> = (0..5u8).map(|i| vec![i, i, i]).collect();
        want.push(vec![9, 9]);
        let (plain, buffers) = round(false);
        assert_eq!(plain, want, "each datagram whole, in order");
        assert_eq!(buffers, 6, "one datagram a buffer without coalescing");
        let (coalesced, buffers) = round(true);
        assert_eq!(coalesced, want, "cut up again from the coalesced run");
        assert!(
            buffers < 6,
            "the GSO run arrived coalesced ({buffers} buffers)"
        );
    }
}
