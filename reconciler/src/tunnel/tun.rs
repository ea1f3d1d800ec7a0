//! A TUN device in a private network namespace of this process. The namespace holds the
//! tunnel's inner addresses, so they never meet the host's routes; it lives as long as the
//! returned [`Netns`] (and the devices whose underlay it is) and dies with the process.

use std::fs::{File, OpenOptions};
use std::os::fd::AsRawFd;
use std::os::unix::fs::OpenOptionsExt;

use crate::attach::netns::Netns;

const TUNSETIFF: libc::c_ulong = 0x4004_54ca;
const IFF_TUN: libc::c_short = 0x0001;
const IFF_NO_PI: libc::c_short = 0x1000;

#[repr(C)]
struct IfReq {
    name: [u8; libc::IFNAMSIZ],
    flags: libc::c_short,
    _pad: [u8; 22],
}

fn open_tun(name: &str) -> std::io::Result<File> {
    let file = OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_CLOEXEC)
        .open("/dev/net/tun")?;
    let mut req = IfReq {
        name: [0; libc::IFNAMSIZ],
        flags: IFF_TUN | IFF_NO_PI,
        _pad: [0; 22],
    };
    let bytes = name.as_bytes();
    if bytes.len() >= libc::IFNAMSIZ {
        return Err(std::io::Error::other(format!(
            "interface name {name} too long"
        )));
    }
    req.name[..bytes.len()].copy_from_slice(bytes);
    // SAFETY: TUNSETIFF reads an ifreq; `req` is one, alive for the call.
    let rc = unsafe { libc::ioctl(file.as_raw_fd(), TUNSETIFF, &mut req) };
    if rc < 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(file)
}

/// A new network namespace with a TUN device `name` in it. A short-lived thread unshares
/// (only that thread changes namespace), opens the TUN there and hands both back.
pub fn private_namespace_with_tun(name: &str) -> std::io::Result<(Netns, File)> {
    let name = name.to_owned();
    std::thread::Builder::new()
        .name("wepoq-tunnel-ns".into())
        .spawn(move || {
            nix::sched::unshare(nix::sched::CloneFlags::CLONE_NEWNET)?;
            let ns = Netns::from_file(File::open("/proc/thread-self/ns/net")?)?;
            let tun = open_tun(&name)?;
            Ok((ns, tun))
        })?
        .join()
        .map_err(|_| std::io::Error::other("tunnel namespace thread panicked"))?
}
