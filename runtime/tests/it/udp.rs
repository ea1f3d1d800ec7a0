//! UDP ports: the stub binds the port and hands the bound socket itself to a worker on the
//! first datagram (systemd's `Accept=no`), and takes it back when the worker is swept.

use std::net::UdpSocket;
use std::time::Duration;

use crate::support::{BIN, Stub};

fn client() -> UdpSocket {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    s
}

fn ask(s: &UdpSocket, to: std::net::SocketAddr, what: &str) -> String {
    s.send_to(what.as_bytes(), to).unwrap();
    let mut buf = [0u8; 1500];
    let (n, from) = s.recv_from(&mut buf).expect("an answer");
    assert_eq!(from, to, "answered from the service's own address");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

#[test]
fn datagrams_start_a_worker_that_gets_the_port_and_a_sweep_gives_it_back() {
    let stub = Stub::start_listening(
        &["127.0.0.1:0/udp", "127.0.0.1:0"],
        &[
            "--idle-timeout",
            "300ms",
            "--sweep-grace",
            "100ms",
            "--pause-after",
            "0",
        ],
        &[BIN, "example-worker"],
    );
    let port = stub.udp[0];
    assert_eq!(
        stub.metric("wepoq_workers_started_total"),
        0.0,
        "nothing before a datagram"
    );
    let c = client();
    for i in 0..5 {
        assert_eq!(ask(&c, port, &format!("ping {i}")), format!("ping {i}"));
    }
    let other = client();
    assert_eq!(ask(&other, port, "from another"), "from another");
    assert_eq!(
        stub.metric("wepoq_udp_handoffs_total"),
        1.0,
        "one worker holds the port"
    );
    assert_eq!(stub.metric("wepoq_workers_started_total"), 1.0);
    assert_eq!(stub.metric("wepoq_handoffs_total{tier=\"cold\"}"), 1.0);

    stub.wait_for("the port's worker swept", Duration::from_secs(5), |s| {
        s.metric("wepoq_workers_swept_total") == 1.0
            && s.metric("wepoq_workers{state=\"idle\"}") == 0.0
            && s.metric("wepoq_workers{state=\"marked\"}") == 0.0
    });
    // Back with the stub: the next datagram waits in the socket and starts a new worker.
    assert_eq!(ask(&c, port, "again"), "again");
    assert_eq!(stub.metric("wepoq_udp_handoffs_total"), 2.0);
    assert_eq!(stub.metric("wepoq_workers_started_total"), 2.0);
}

#[test]
fn the_shim_gives_an_unmodified_program_the_datagram_socket_on_fd_3() {
    if std::process::Command::new("python3")
        .arg("-V")
        .output()
        .is_err()
    {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "python3 is missing and CI=true is set"
        );
        eprintln!("skipping: python3 is missing");
        return;
    }
    // systemd style, Accept=no: fd 3 is the bound socket, named `datagram`.
    let script = r#"
import os, socket
s = socket.socket(fileno=3)
assert s.type == socket.SOCK_DGRAM
while True:
    data, peer = s.recvfrom(1500)
    s.sendto(data + b" " + os.environ["LISTEN_FDNAMES"].encode() + b" " + os.environ["PROTO"].encode(), peer)
"#;
    let stub = Stub::start_listening(
        &["127.0.0.1:0/udp"],
        &["--pause-after", "0"],
        &[BIN, "shim", "--", "python3", "-c", script],
    );
    let c = client();
    assert_eq!(ask(&c, stub.udp[0], "hi"), "hi datagram UDP");
    assert_eq!(ask(&c, stub.udp[0], "again"), "again datagram UDP");
}
