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
