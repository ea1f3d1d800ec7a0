//! A bounded fuzz smoke run inside the test suite (the long run is `cargo fuzz`, see fuzz/):
//! mutated specs and lockfiles must give diagnostics or a result, never a panic.

use std::time::{Duration, Instant};

use crate::stickiness::Rng;
use crate::support::{compile_text, repo};

const TOKENS: &[&str] = &[
    ": ",
    "\n",
    "  ",
    "- ",
    "[",
    "]",
    "{",
    "}",
    ",",
    "'",
    "\"",
    "&a ",
    "*a",
    "!!str ",
    "#",
    "---\n",
    "...\n",
    "~",
    "null",
    "-1",
    "99999999999999999999",
    "0x1f",
    "/",
    "80/tcp",
    "10.0.0.0/8",
    "svr",
    "cli",
    "calls",
    "replicas",
    "\t",
    "é",
    "\u{0}",
    "|\n",
];

fn mutate(rng: &mut Rng, text: &str) -> String {
    let mut bytes: Vec<u8> = text.as_bytes().to_vec();
    for _ in 0..1 + rng.below(4) {
        let at = rng.below(bytes.len() as u64 + 1) as usize;
        match rng.below(4) {
            0 if !bytes.is_empty() => {
                let end = (at + 1 + rng.below(20) as usize).min(bytes.len());
                bytes.drain(at.min(bytes.len())..end.max(at.min(bytes.len())));
            }
            1 => {
                let t = TOKENS[rng.below(TOKENS.len() as u64) as usize];
                bytes.splice(at..at, t.bytes());
            }
            2 if at < bytes.len() => bytes[at] = rng.below(128) as u8,
            _ => bytes.truncate(at),
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

#[test]
fn mutated_inputs_never_panic() {
    let seeds: Vec<String> = [
        "examples/ovn-vote/wepoq.yaml",
        "examples/roominator/wepoq.yaml",
        "tests/data/good-nested-calls/wepoq.yaml",
        // Missing keys read with stand-ins: the path that fills them gets mutated too.
        "tests/data/bad-missing-key-and-more/wepoq.yaml",
    ]
    .iter()
    .map(|p| std::fs::read_to_string(repo().join(p)).unwrap())
    .collect();
    let lock = std::fs::read_to_string(repo().join("examples/ovn-vote/wepoq.lock")).unwrap();
    let mut rng = Rng::new(0x5eed);
    let deadline = Instant::now() + Duration::from_secs(8);
    let mut runs = 0;
    while runs < 3000 && Instant::now() < deadline {
        let spec = mutate(&mut rng, &seeds[runs % seeds.len()]);
        let mutated_lock = (runs % 3 == 0).then(|| mutate(&mut rng, &lock));
        let result = std::panic::catch_unwind(|| {
            compile_text(&spec, mutated_lock.as_deref().or(Some(&lock)))
        });
        assert!(
            result.is_ok(),
            "panic on input:\n{spec}\n--- lock:\n{mutated_lock:?}"
        );
        runs += 1;
    }
    assert!(runs >= 200, "only {runs} runs in the time box");
}

/// The tunnel's untrusted inputs: a credential file (mutated from a real one) and decrypted
/// packets (mutated VXLAN) must give a value or an error, never a panic; the inner filter
/// accepts nothing from another address.
#[test]
fn mutated_credentials_and_inner_packets_never_panic() {
    use std::net::Ipv4Addr;
    use wepoq_reconciler::tunnel::credential::Credential;
    use wepoq_reconciler::tunnel::inner;

    let credential = Credential::example().render();
    // A VXLAN datagram from 100.65.0.3 with VNI 3.
    let mut packet = vec![
        0x45, 0, 0, 58, 0, 0, 0x40, 0, 64, 17, 0, 0, 100, 65, 0, 3, 100, 64, 0, 1,
    ];
    packet.extend([
        0x9c, 0x40, 0x12, 0xb5, 0, 38, 0, 0, 0x08, 0, 0, 0, 0, 0, 3, 0,
    ]);
    packet.extend([0u8; 22]);
    let me = Ipv4Addr::new(100, 65, 0, 3);
    assert!(inner::check(&packet, me, 3).is_ok());
    let mut rng = Rng::new(0xc0ffee);
    for _ in 0..5000 {
        let text = mutate(&mut rng, &credential);
        let parsed = std::panic::catch_unwind(|| Credential::parse(&text).map(|c| c.render()));
        assert!(parsed.is_ok(), "panic on credential:\n{text}");
        let mut p = packet.clone();
        for _ in 0..1 + rng.below(3) {
            if p.is_empty() {
                break;
            }
            let at = rng.below(p.len() as u64) as usize;
            match rng.below(3) {
                0 => p[at] = rng.below(256) as u8,
                1 => p.truncate(at),
                _ => p.insert(at, rng.below(256) as u8),
            }
        }
        let checked = std::panic::catch_unwind(|| inner::check(&p, me, 3));
        assert!(checked.is_ok(), "panic on packet {p:?}");
        if checked.unwrap().is_ok() {
            assert_eq!(
                p[12..16],
                me.octets(),
                "accepted from another address: {p:?}"
            );
        }
    }
}
