//! Cost of loading organisations from an NHS ODS CSV extract (`[identity] organisations_csv`):
//! paid at start-up and on every reload, so 10k practices (about England's count) must load in
//! well under a second.

use caregate::directory::{load_ods_csv, parse_ods_csv};
use criterion::{criterion_group, criterion_main, Criterion};
use std::fmt::Write as _;
use std::hint::black_box;

/// `n` practices in the epraccur layout (27 quoted columns), one in 20 closed, spread over 42
/// commissioners.
fn epraccur(n: usize) -> String {
    let mut s = String::with_capacity(n * 260);
    for i in 0..n {
        let status = if i % 20 == 19 { "C" } else { "A" };
        let _ = writeln!(
            s,
            "\"P{i:05}\",\"THE PRACTICE NUMBER {i}\",\"Y56\",\"QMJ\",\"1 HIGH STREET\",\"\",\"LONDON\",\"\",\"\",\
             \"N1 {d}AA\",\"19740401\",\"\",\"{status}\",\"B\",\"{icb:02}X\",\"20130401\",\"\",\"020 7000 0000\",\"\",\"\",\
             \"\",\"0\",\"\",\"{icb:02}X\",\"\",\"4\",\"\"",
            d = i % 10,
            icb = i % 42,
        );
    }
    s
}

fn bench(c: &mut Criterion) {
    let text = epraccur(10_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("epraccur.csv");
    std::fs::write(&path, &text).unwrap();
    assert_eq!(load_ods_csv(&path).unwrap().len(), 9_500);

    let mut g = c.benchmark_group("ods_csv_10k_practices");
    g.bench_function("parse", |b| {
        b.iter(|| black_box(parse_ods_csv(black_box(&text)).unwrap().len()))
    });
    g.bench_function("load_file", |b| {
        b.iter(|| black_box(load_ods_csv(black_box(&path)).unwrap().len()))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
