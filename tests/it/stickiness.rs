//! Addresses and MACs are sticky: adding or removing endpoints and services, in any order,
//! never moves another endpoint's address or MAC, nor another side's subnet.

use std::collections::BTreeMap;

use crate::support::compile_text;

/// A tiny deterministic PRNG (xorshift64*), so failures reproduce from the seed.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    pub fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

fn spec(services: &BTreeMap<String, (u32, u32)>) -> String {
    let mut s = String::from("namespace: st\nnetwork: 10.90.0.0/16\nservices:\n");
    for (name, (svr, cli)) in services {
        s.push_str(&format!("  {name}:\n    svr: {{replicas: {svr}, ports: [80/tcp]}}\n    cli: {{replicas: {cli}}}\n"));
    }
    s
}

/// Endpoint port name to (address, MAC) from a compiled namespace's endpoints.
fn addresses(text: &str, lock: Option<&str>) -> (BTreeMap<String, (String, String)>, String) {
    let compiled = compile_text(text, lock).unwrap_or_else(|d| panic!("{d:?}"));
    let ns = &compiled.namespaces[0];
    let map = ns
        .endpoints
        .iter()
        .map(|e| (e.port.clone(), (e.ip.to_string(), e.mac.clone())))
        .collect();
    (map, ns.lock_text.clone())
}

#[test]
fn random_edits_never_move_other_endpoints() {
    for seed in 1..=12 {
        let mut rng = Rng::new(seed);
        let mut services: BTreeMap<String, (u32, u32)> = BTreeMap::new();
        for i in 0..4 {
            services.insert(
                format!("svc{i}"),
                (1 + rng.below(4) as u32, rng.below(6) as u32),
            );
        }
        let (mut before, mut lock) = addresses(&spec(&services), None);
        for step in 0..25 {
            let names: Vec<String> = services.keys().cloned().collect();
            match rng.below(4) {
                0 => {
                    services.insert(
                        format!("svc{}", 10 + step),
                        (1 + rng.below(3) as u32, rng.below(4) as u32),
                    );
                }
                1 if services.len() > 1 => {
                    services.remove(&names[rng.below(names.len() as u64) as usize]);
                }
                _ => {
                    let name = &names[rng.below(names.len() as u64) as usize];
                    let entry = services.get_mut(name).unwrap();
                    // Stay within a /28's room, so the side's subnet never has to grow.
                    entry.0 = 1 + rng.below(8) as u32;
                    entry.1 = rng.below(9) as u32;
                }
            }
            let (after, new_lock) = addresses(&spec(&services), Some(&lock));
            for (port, addr) in &after {
                if let Some(old) = before.get(port) {
                    assert_eq!(old, addr, "seed {seed} step {step}: {port} moved");
                }
            }
            // Same input, same lock: nothing changes, so the lockfile is a fixed point.
            let (_, again) = addresses(&spec(&services), Some(&new_lock));
            assert_eq!(
                again, new_lock,
                "seed {seed} step {step}: lockfile not stable"
            );
            before = after;
            lock = new_lock;
        }
    }
}

#[test]
fn removing_a_service_frees_nothing_used_by_others() {
    let mut services = BTreeMap::new();
    services.insert("a".to_string(), (3, 2));
    services.insert("b".to_string(), (2, 5));
    services.insert("c".to_string(), (1, 1));
    let (full, lock) = addresses(&spec(&services), None);
    services.remove("b");
    let (fewer, _) = addresses(&spec(&services), Some(&lock));
    assert_eq!(fewer.len(), full.len() - 7);
    for (port, addr) in &fewer {
        assert_eq!(
            full.get(port),
            Some(addr),
            "{port} moved when b was removed"
        );
    }
}
