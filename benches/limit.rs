//! Cost of `Limits::check` with many organisations: the per-request price of rate limiting.

use caregate::config::{Class, ClassLimit, RateLimits};
use caregate::limit::Limits;
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;

fn orgs(n: usize) -> Vec<String> {
    // ODS-like codes in a scrambled order, so lookups do not walk memory in insertion order.
    let mut x: u64 = 0x2545_f491_4f6c_dd1d;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            format!("{}{:05}", (b'A' + (x % 26) as u8) as char, x % 100_000)
        })
        .collect()
}

fn bench(c: &mut Criterion) {
    let epr = ClassLimit {
        // High enough that the benchmark measures passing checks, as most requests are.
        requests_per_second: Some(1e6),
        burst: Some(1_000_000),
        max_concurrent: None,
        bytes_per_second: None,
    };
    let image = ClassLimit {
        max_concurrent: Some(1_000),
        bytes_per_second: Some(200 << 20),
        ..epr
    };
    let cfg = RateLimits {
        classes: [(Class::Epr, epr), (Class::Image, image)].into_iter().collect(),
        overrides: Vec::new(),
    };
    let limits = Limits::new(&cfg);
    let keys = orgs(10_000);
    for k in &keys {
        let _ = limits.check(k, Class::Epr);
        let _ = limits.check(k, Class::Image);
    }
    let mut g = c.benchmark_group("limit_check_10k_orgs");
    for (name, class) in [
        ("rate", Class::Epr),
        ("rate_concurrency_bandwidth", Class::Image),
        ("unlimited", Class::Other),
    ] {
        let mut i = 0usize;
        g.bench_function(name, |b| {
            b.iter(|| {
                i = (i + 7919) % keys.len();
                black_box(limits.check(black_box(&keys[i]), class).is_ok())
            })
        });
    }
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
