//! A plain level-triggered epoll set, an eventfd and a timerfd: all the dispatcher thread
//! waits on.
//!
//! Level-triggered on purpose: the loop does one accept or one receive per ready descriptor
//! and per wakeup, and epoll reports it again if more is waiting, so no call ever ends in
//! `EAGAIN` just to learn that a queue is empty (edge-triggered readiness, as tokio's, needs
//! that extra call on every connection).

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// An epoll instance.
#[derive(Debug)]
pub struct Poller {
    fd: OwnedFd,
}

fn check(r: libc::c_int) -> io::Result<libc::c_int> {
    if r < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

impl Poller {
    pub fn new() -> io::Result<Poller> {
        // SAFETY: plain syscall; the returned descriptor is owned at once.
        let fd = check(unsafe { libc::epoll_create1(libc::EPOLL_CLOEXEC) })?;
        Ok(Poller {
            // SAFETY: epoll_create1 just returned it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    /// Watches `fd` for readability (and hang-up), reporting `token`.
    pub fn add(&self, fd: RawFd, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: (libc::EPOLLIN | libc::EPOLLRDHUP) as u32,
            u64: token,
        };
        // SAFETY: `ev` is a valid epoll_event for the duration of the call.
        check(unsafe { libc::epoll_ctl(self.fd.as_raw_fd(), libc::EPOLL_CTL_ADD, fd, &mut ev) })?;
        Ok(())
    }

    /// Stops watching `fd` (closing the last copy of a descriptor does this too).
    pub fn remove(&self, fd: RawFd) {
        // SAFETY: a null event is allowed for EPOLL_CTL_DEL.
        unsafe {
            libc::epoll_ctl(
                self.fd.as_raw_fd(),
                libc::EPOLL_CTL_DEL,
                fd,
                std::ptr::null_mut(),
            )
        };
    }

    /// Waits for readiness; fills `out` with the tokens of ready descriptors. `None` waits
    /// forever.
    pub fn wait(&self, events: &mut Vec<u64>, timeout: Option<Duration>) -> io::Result<()> {
        const MAX: usize = 64;
        let mut raw = [libc::epoll_event { events: 0, u64: 0 }; MAX];
        let ms = match timeout {
            None => -1,
            Some(d) => d.as_millis().min(i32::MAX as u128) as i32,
        };
        events.clear();
        // SAFETY: `raw` has room for MAX events.
        let n = unsafe { libc::epoll_wait(self.fd.as_raw_fd(), raw.as_mut_ptr(), MAX as i32, ms) };
        if n < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == io::ErrorKind::Interrupted {
                return Ok(());
            }
            return Err(e);
        }
        events.extend(raw[..n as usize].iter().map(|e| e.u64));
        Ok(())
    }
}

/// A counter other threads bump to wake the dispatcher thread.
#[derive(Debug)]
pub struct Waker {
    fd: OwnedFd,
}

impl Waker {
    pub fn new() -> io::Result<Waker> {
        // SAFETY: plain syscall; the returned descriptor is owned at once.
        let fd = check(unsafe { libc::eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK) })?;
        Ok(Waker {
            // SAFETY: eventfd just returned it.
            fd: unsafe { OwnedFd::from_raw_fd(fd) },
        })
    }

    pub fn wake(&self) {
        let one: u64 = 1;
        // SAFETY: writes 8 bytes from a live u64.
        unsafe { libc::write(self.fd.as_raw_fd(), (&one as *const u64).cast(), 8) };
    }

    /// Resets the counter (level-triggered: it stays readable until read).
    pub fn reset(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Waker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// A periodic timer: readable once per period.
#[derive(Debug)]
pub struct Ticker {
    fd: OwnedFd,
}

impl Ticker {
    pub fn new(every: Duration) -> io::Result<Ticker> {
        // SAFETY: plain syscall; the returned descriptor is owned at once.
        let fd = check(unsafe {
            libc::timerfd_create(
                libc::CLOCK_MONOTONIC,
                libc::TFD_CLOEXEC | libc::TFD_NONBLOCK,
            )
        })?;
        // SAFETY: timerfd_create just returned it.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        let spec = libc::timespec {
            tv_sec: every.as_secs() as libc::time_t,
            tv_nsec: every.subsec_nanos() as libc::c_long,
        };
        let its = libc::itimerspec {
            it_interval: spec,
            it_value: spec,
        };
        // SAFETY: `its` is valid for the call; the old value is not wanted.
        check(unsafe { libc::timerfd_settime(fd.as_raw_fd(), 0, &its, std::ptr::null_mut()) })?;
        Ok(Ticker { fd })
    }

    /// Consumes the expirations so far.
    pub fn reset(&self) {
        let mut n: u64 = 0;
        // SAFETY: reads 8 bytes into a live u64.
        unsafe { libc::read(self.fd.as_raw_fd(), (&mut n as *mut u64).cast(), 8) };
    }
}

impl AsRawFd for Ticker {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}
