//! A tiny endpoint program for examples and tests, built into the static runtime binary so
//! that a FROM-scratch image can be a server or a client of the topology with no registry.
//!
//! `serve` answers every TCP connection on its ports with the endpoint's name (an HTTP
//! response when the request looks like HTTP), so a client can tell which server behind a
//! VIP answered. `get` resolves a name the way an endpoint must, through the nameserver in
//! `/etc/resolv.conf` (OVN's DNS at the gateway), without glibc's resolver: a static binary
//! has no NSS, and OVN 23.03 ignores queries that carry EDNS, which this one never sends.

use std::io::{self, Read, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};
use std::time::Duration;

#[derive(Debug, clap::Subcommand)]
pub enum ProbeCommand {
    /// Answer every TCP connection on the ports with this endpoint's name
    Serve {
        /// Ports to listen on (all addresses)
        #[arg(long = "port", required = true)]
        ports: Vec<u16>,
    },
    /// Resolve NAME through /etc/resolv.conf's nameserver, connect to NAME:PORT and print
    /// each answer (COUNT connections)
    Get {
        /// NAME:PORT
        target: String,
        #[arg(long, default_value_t = 1)]
        count: u32,
        /// Time limit for each step (resolve, connect, read), in milliseconds
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
        /// Print the whole answer (an HTTP status line and headers too), not only the body
        #[arg(long)]
        full: bool,
    },
    /// Resolve NAME, send TEXT in one UDP datagram to NAME:PORT and print the answer
    Send {
        /// NAME:PORT
        target: String,
        text: String,
        /// Time limit for each step (resolve, answer), in milliseconds
        #[arg(long, default_value_t = 3000)]
        timeout_ms: u64,
    },
    /// Print NAME's IPv4 addresses as the nameserver in /etc/resolv.conf gives them
    Resolve { name: String },
    /// Print the MAC address of one of this namespace's interfaces
    Mac { interface: String },
    /// Do nothing until stopped (a client container's main process; `docker exec` runs
    /// `get` in it)
    Wait,
}

pub fn run(command: ProbeCommand) -> io::Result<()> {
    exit_on_sigterm();
    match command {
        ProbeCommand::Mac { interface } => {
            let path = format!("/sys/class/net/{interface}/address");
            print!("{}", std::fs::read_to_string(path)?);
            Ok(())
        }
        ProbeCommand::Wait => loop {
            std::thread::park();
        },
        ProbeCommand::Serve { ports } => serve(&ports),
        ProbeCommand::Get {
            target,
            count,
            timeout_ms,
            full,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            for _ in 0..count {
                let answer = get(resolve_target(&target, timeout)?, timeout)?;
                let body = answer
                    .split_once("\r\n\r\n")
                    .map_or(answer.as_str(), |(_, b)| b);
                println!("{}", if full { answer.trim() } else { body.trim() });
            }
            Ok(())
        }
        ProbeCommand::Send {
            target,
            text,
            timeout_ms,
        } => {
            let timeout = Duration::from_millis(timeout_ms);
            let to = resolve_target(&target, timeout)?;
            let socket = UdpSocket::bind("0.0.0.0:0")?;
            socket.set_read_timeout(Some(timeout))?;
            socket.send_to(text.as_bytes(), to)?;
            let mut buf = [0u8; 1500];
            let (n, from) = socket.recv_from(&mut buf)?;
            println!(
                "{} (from {from})",
                String::from_utf8_lossy(&buf[..n]).trim()
            );
            Ok(())
        }
        ProbeCommand::Resolve { name } => {
            for ip in resolve(&name, Duration::from_secs(3))? {
                println!("{ip}");
            }
            Ok(())
        }
    }
}

/// As a container's first process the probe gets no default action for SIGTERM: without a
/// handler `docker stop` and `docker restart` would wait their 10 s and then kill it.
fn exit_on_sigterm() {
    extern "C" fn exit(_: libc::c_int) {
        // Only async-signal-safe calls here.
        unsafe { libc::_exit(0) };
    }
    // SAFETY: the handler only calls _exit, which is async-signal-safe.
    unsafe {
        libc::signal(libc::SIGTERM, exit as *const () as libc::sighandler_t);
        libc::signal(libc::SIGINT, exit as *const () as libc::sighandler_t);
    }
}

fn invalid(text: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidInput, text)
}

/// This endpoint's name: the container's hostname and domain name (wepoq sets them from the
/// endpoint's FQDN).
fn own_name() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .unwrap_or_default()
            .trim()
            .to_string()
    };
    let host = read("/proc/sys/kernel/hostname");
    match read("/proc/sys/kernel/domainname").as_str() {
        "" | "(none)" => host,
        domain => format!("{host}.{domain}"),
    }
}

fn serve(ports: &[u16]) -> io::Result<()> {
    let name = own_name();
    let mut threads = Vec::new();
    for &port in ports {
        let listener = TcpListener::bind(("0.0.0.0", port))?;
        let name = name.clone();
        threads.push(std::thread::spawn(move || {
            for conn in listener.incoming().flatten() {
                let name = name.clone();
                std::thread::spawn(move || answer(conn, &name));
            }
        }));
    }
    eprintln!("probe: {name} serving on {ports:?}");
    for t in threads {
        let _ = t.join();
    }
    Ok(())
}

fn answer(mut conn: TcpStream, name: &str) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(500)));
    let mut buf = [0u8; 2048];
    let n = conn.read(&mut buf).unwrap_or(0);
    let reply = if buf[..n].starts_with(b"GET ") || buf[..n].starts_with(b"HEAD ") {
        format!(
            "HTTP/1.0 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\r\n{name}\n",
            name.len() + 1
        )
    } else {
        format!("{name}\n")
    };
    let _ = conn.write_all(reply.as_bytes());
}

/// `NAME:PORT` with NAME resolved as an endpoint resolves it.
fn resolve_target(target: &str, timeout: Duration) -> io::Result<SocketAddr> {
    let (name, port) = target
        .rsplit_once(':')
        .and_then(|(n, p)| Some((n, p.parse::<u16>().ok()?)))
        .ok_or_else(|| invalid(format!("`{target}` is not NAME:PORT")))?;
    let ip = resolve(name, timeout)?
        .into_iter()
        .next()
        .ok_or_else(|| invalid(format!("{name} has no address")))?;
    Ok(SocketAddr::from((ip, port)))
}

/// Connects, asks as HTTP/1.0, and returns the whole answer.
fn get(addr: SocketAddr, timeout: Duration) -> io::Result<String> {
    let mut conn = TcpStream::connect_timeout(&addr, timeout)?;
    conn.set_read_timeout(Some(timeout))?;
    conn.write_all(b"GET / HTTP/1.0\r\n\r\n")?;
    let mut answer = String::new();
    conn.read_to_string(&mut answer)?;
    Ok(answer)
}

/// The first `nameserver` of /etc/resolv.conf.
fn nameserver() -> io::Result<Ipv4Addr> {
    let conf = std::fs::read_to_string("/etc/resolv.conf")?;
    conf.lines()
        .filter_map(|l| l.trim().strip_prefix("nameserver"))
        .find_map(|ip| ip.trim().parse().ok())
        .ok_or_else(|| invalid("no IPv4 nameserver in /etc/resolv.conf".into()))
}

pub fn resolve(name: &str, timeout: Duration) -> io::Result<Vec<Ipv4Addr>> {
    if let Ok(ip) = name.parse() {
        return Ok(vec![ip]);
    }
    let server = nameserver()?;
    let socket = UdpSocket::bind("0.0.0.0:0")?;
    socket.set_read_timeout(Some(timeout))?;
    let id = std::process::id() as u16;
    socket.send_to(&query(id, name)?, (server, 53))?;
    let mut buf = [0u8; 1500];
    loop {
        let n = socket.recv(&mut buf)?;
        if let Some(found) = parse_answer(&buf[..n], id) {
            return found.map_err(|rcode| {
                io::Error::new(
                    io::ErrorKind::NotFound,
                    format!("{name}: the nameserver {server} answered rcode {rcode}"),
                )
            });
        }
    }
}

/// An A query with recursion desired and no additional records (no EDNS).
fn query(id: u16, name: &str) -> io::Result<Vec<u8>> {
    let mut q = Vec::with_capacity(name.len() + 18);
    q.extend_from_slice(&id.to_be_bytes());
    q.extend_from_slice(&[0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0]);
    for label in name.trim_end_matches('.').split('.') {
        if label.is_empty() || label.len() > 63 {
            return Err(invalid(format!("`{name}` is not a DNS name")));
        }
        q.push(label.len() as u8);
        q.extend_from_slice(label.as_bytes());
    }
    q.extend_from_slice(&[0, 0, 1, 0, 1]);
    Ok(q)
}

/// The A records of a reply to query `id`; `None` when the datagram is not that reply,
/// `Err(rcode)` when the server refused or found nothing.
fn parse_answer(msg: &[u8], id: u16) -> Option<Result<Vec<Ipv4Addr>, u8>> {
    if msg.len() < 12 || u16::from_be_bytes([msg[0], msg[1]]) != id || msg[2] & 0x80 == 0 {
        return None;
    }
    let rcode = msg[3] & 0x0f;
    if rcode != 0 {
        return Some(Err(rcode));
    }
    let questions = u16::from_be_bytes([msg[4], msg[5]]);
    let answers = u16::from_be_bytes([msg[6], msg[7]]);
    let mut at = 12;
    for _ in 0..questions {
        at = skip_name(msg, at)? + 4;
    }
    let mut found = Vec::new();
    for _ in 0..answers {
        at = skip_name(msg, at)?;
        let header = msg.get(at..at + 10)?;
        let (kind, len) = (
            u16::from_be_bytes([header[0], header[1]]),
            usize::from(u16::from_be_bytes([header[8], header[9]])),
        );
        let data = msg.get(at + 10..at + 10 + len)?;
        if kind == 1 && len == 4 {
            found.push(Ipv4Addr::new(data[0], data[1], data[2], data[3]));
        }
        at += 10 + len;
    }
    if found.is_empty() {
        return Some(Err(3));
    }
    Some(Ok(found))
}

/// The offset just past a (possibly compressed) name.
fn skip_name(msg: &[u8], mut at: usize) -> Option<usize> {
    loop {
        let len = *msg.get(at)?;
        match len {
            0 => return Some(at + 1),
            l if l & 0xc0 == 0xc0 => return Some(at + 2),
            l => at += 1 + usize::from(l),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_a_records_of_its_own_reply_only() {
        let q = query(7, "vip.svr.result.ns.wepoq.net").unwrap();
        let mut reply = q.clone();
        reply[2] = 0x81;
        reply[3] = 0x80;
        reply[7] = 2;
        for ip in [[10, 64, 0, 20], [10, 64, 0, 21]] {
            reply.extend_from_slice(&[0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 60, 0, 4]);
            reply.extend_from_slice(&ip);
        }
        assert_eq!(
            parse_answer(&reply, 7),
            Some(Ok(vec![
                Ipv4Addr::new(10, 64, 0, 20),
                Ipv4Addr::new(10, 64, 0, 21)
            ]))
        );
        assert_eq!(parse_answer(&reply, 8), None, "another query's reply");
        assert_eq!(parse_answer(&q, 7), None, "a query is no reply");
        reply[3] = 0x83;
        assert_eq!(parse_answer(&reply, 7), Some(Err(3)));
        assert_eq!(parse_answer(&reply[..20], 7).and_then(Result::ok), None);
    }

    #[test]
    fn refuses_names_that_are_not_dns_names() {
        assert!(query(1, "a..b").is_err());
        assert!(query(1, &"x".repeat(64)).is_err());
    }
}
