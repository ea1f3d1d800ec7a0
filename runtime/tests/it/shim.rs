//! Unmodified programs behind the shim: systemd socket activation and inetd style.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support::{BIN, Stub};

fn exchange(stub: &Stub, send: &[u8]) -> (String, std::net::SocketAddr) {
    let mut s = TcpStream::connect(stub.addr()).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let me = s.local_addr().unwrap();
    s.write_all(send).unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    (out, me)
}

#[test]
fn systemd_mode_puts_the_connection_on_fd_3_with_listen_vars() {
    let script = r#"read line <&3
printf 'got %s\n' "$line" >&3
printf 'pid=%s listen_pid=%s fds=%s names=%s remote=%s:%s ucspi=%s:%s\n' \
  "$$" "$LISTEN_PID" "$LISTEN_FDS" "$LISTEN_FDNAMES" "$REMOTE_ADDR" "$REMOTE_PORT" \
  "$TCPREMOTEIP" "$TCPREMOTEPORT" >&3"#;
    let stub = Stub::start(&[], &[BIN, "shim", "--", "sh", "-c", script]);
    for _ in 0..2 {
        let (out, me) = exchange(&stub, b"hello\n");
        let mut lines = out.lines();
        assert_eq!(lines.next(), Some("got hello"), "{out}");
        let vars: std::collections::HashMap<&str, &str> = lines
            .next()
            .unwrap()
            .split(' ')
            .filter_map(|kv| kv.split_once('='))
            .collect();
        assert_eq!(
            vars["listen_pid"], vars["pid"],
            "LISTEN_PID is the program's pid"
        );
        assert_eq!(vars["fds"], "1");
        assert_eq!(vars["names"], "connection");
        assert_eq!(vars["remote"], me.to_string());
        assert_eq!(vars["ucspi"], me.to_string());
    }
}

#[test]
fn inetd_mode_puts_the_connection_on_stdin_and_stdout() {
    let script = r#"read line; printf 'inetd %s from %s fds=%s\n' "$line" "$REMOTE_PORT" "${LISTEN_FDS:-none}""#;
    let stub = Stub::start(
        &[],
        &[BIN, "shim", "--mode", "inetd", "--", "sh", "-c", script],
    );
    let (out, me) = exchange(&stub, b"ping\n");
    assert_eq!(out, format!("inetd ping from {} fds=none\n", me.port()));
}
