//! Compile-time benchmark: generated specs of 1k, 10k and 100k endpoints, compiled from
//! scratch and again with their lockfile; prints time and peak heap for each.
//!
//! Run: `cargo bench -p wepoq-compiler --bench compile`. Targets (issue 2): 10k endpoints in
//! at most 100 ms, growing linearly (100k in at most 1.5 s). Anchor for scale: kustomize
//! builds of 4k resources are reported at 4.8 s.
// A benchmark measures time: the compiler's ban on clocks is for the library, not for this.
#![allow(clippy::disallowed_methods)]

use std::alloc::{GlobalAlloc, Layout};

use mimalloc::MiMalloc;
use std::sync::atomic::{AtomicBool, AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use wepoq_compiler::{Input, Sources, compile};

/// Counts live heap bytes and their high-water mark while `COUNTING` is on, so peak memory
/// is exact; timed runs leave it off, since the counting itself costs time. Underneath is
/// mimalloc, the allocator of the `wepoq` binary, so the figures are the CLI's.
struct Counting;

static COUNTING: AtomicBool = AtomicBool::new(false);
static LIVE: AtomicIsize = AtomicIsize::new(0);
static PEAK: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        let p = unsafe { MiMalloc.alloc(layout) };
        if !p.is_null() && COUNTING.load(Ordering::Relaxed) {
            let size = layout.size() as isize;
            let live = LIVE.fetch_add(size, Ordering::Relaxed) + size;
            PEAK.fetch_max(live, Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, p: *mut u8, layout: Layout) {
        unsafe { MiMalloc.dealloc(p, layout) };
        if COUNTING.load(Ordering::Relaxed) {
            LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// A namespace of `services` services in apps of 20, each with 4 servers and 16 clients
/// (20 endpoints a service), every service's clients also calling the next service.
fn spec(services: usize) -> String {
    let mut s = String::from("namespace: bench\nnetwork: 10.0.0.0/8\napps:\n");
    for app in 0..services.div_ceil(20) {
        s.push_str(&format!("  app{app}:\n    services:\n"));
        for i in 0..20.min(services - app * 20) {
            let next = (i + 1) % 20.min(services - app * 20);
            s.push_str(&format!(
                "      svc{i}:\n        svr:\n          replicas: 4\n          ports: [80/tcp, 443/tcp]\n        cli:\n          replicas: 16\n          calls: [svc{next}]\n"
            ));
        }
    }
    s
}

struct Run {
    best: Duration,
    median: Duration,
    peak: usize,
    rows: usize,
    lock: String,
}

fn compile_once(spec: &str, lock: Option<&str>) -> (Duration, usize, String) {
    let mut sources = Sources::new();
    let spec_id = sources.add("wepoq.yaml", spec);
    let lock_id = lock.map(|l| sources.add("wepoq.lock", l));
    let start = Instant::now();
    let compiled = compile(
        &sources,
        &[Input {
            spec: spec_id,
            lock: lock_id,
        }],
    )
    .expect("generated specs compile");
    let elapsed = start.elapsed();
    let ns = &compiled.namespaces[0];
    (elapsed, ns.rows.len(), ns.lock_text.clone())
}

fn measure(spec: &str, lock: Option<&str>, rounds: usize) -> Run {
    let mut times = Vec::new();
    let (mut rows, mut lock_text) = (0, String::new());
    for _ in 0..rounds {
        let (elapsed, r, l) = compile_once(spec, lock);
        times.push(elapsed);
        (rows, lock_text) = (r, l);
    }
    times.sort();
    // One more run, counted, for the peak heap above what was live before it.
    LIVE.store(0, Ordering::Relaxed);
    PEAK.store(0, Ordering::Relaxed);
    COUNTING.store(true, Ordering::Relaxed);
    let _ = compile_once(spec, lock);
    COUNTING.store(false, Ordering::Relaxed);
    let peak = PEAK.load(Ordering::Relaxed).max(0) as usize;
    Run {
        best: times[0],
        median: times[times.len() / 2],
        peak,
        rows,
        lock: lock_text,
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn main() {
    println!("wepoq compile benchmark (release build, one thread)");
    println!(
        "{:>9} {:>8} {:>8} {:>11} {:>11} {:>11} {:>10} {:>12}  target",
        "endpoints",
        "services",
        "NB rows",
        "fresh p50",
        "locked p50",
        "locked best",
        "peak heap",
        "us/endpoint"
    );
    let mut per_endpoint = Vec::new();
    for (endpoints, rounds) in [(1_000, 9), (10_000, 7), (100_000, 3)] {
        let services = endpoints / 20;
        let text = spec(services);
        let fresh = measure(&text, None, rounds);
        let locked = measure(&text, Some(&fresh.lock), rounds);
        let us = ms(locked.median) * 1e3 / endpoints as f64;
        per_endpoint.push(us);
        let target = match endpoints {
            10_000 => "<= 100 ms",
            100_000 => "<= 1500 ms",
            _ => "-",
        };
        println!(
            "{:>9} {:>8} {:>8} {:>8.1} ms {:>8.1} ms {:>8.1} ms {:>6.1} MiB {:>12.2}  {target}",
            endpoints,
            services,
            locked.rows,
            ms(fresh.median),
            ms(locked.median),
            ms(locked.best),
            locked.peak.max(fresh.peak) as f64 / (1 << 20) as f64,
            us
        );
    }
    println!(
        "linearity: time per endpoint at 100k is {:.2}x that at 10k (1.00 = linear)",
        per_endpoint[2] / per_endpoint[1]
    );
    println!("anchor: kustomize builds of 4k resources are reported at 4.8 s");
}
