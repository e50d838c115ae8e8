//! Auditor-side throughput: `audit verify` (records/s, with checkpoint signatures) and `audit
//! query` / `audit export` over a generated trail. Trail size: CAREGATE_BENCH_RECORDS (default
//! 200,000).

// The tests' trail generator; the bench uses a part of it.
#[allow(dead_code)]
#[path = "../tests/support/trail_gen.rs"]
mod trail_gen;

use std::hint::black_box;

use caregate::audit::{export, query, verify};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use ring::signature::KeyPair;

fn bench(c: &mut Criterion) {
    let n: u64 = std::env::var("CAREGATE_BENCH_RECORDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(200_000);
    let dir = tempfile::tempdir().expect("tempdir");
    let key = trail_gen::new_key();
    trail_gen::bulk(dir.path(), &key, n);
    let raw = key.public_key().as_ref().to_vec();
    let records = verify::verify(dir.path(), Some(&raw), &Default::default())
        .expect("intact")
        .records;

    let mut g = c.benchmark_group("audit_read");
    g.sample_size(10);
    g.throughput(Throughput::Elements(records));
    g.bench_function("verify", |b| {
        b.iter(|| verify::verify(dir.path(), Some(&raw), &Default::default()).expect("intact"))
    });
    // Every row matches: the join and the JSON output at their most expensive.
    g.bench_function("query_all_json", |b| {
        b.iter(|| {
            let f = query::Filters::default();
            query::query(dir.path(), &f, query::Format::Json, &mut std::io::sink()).expect("query")
        })
    });
    // The common audit question: one patient in a large trail (10% of requests here).
    g.bench_function("query_patient_table", |b| {
        b.iter(|| {
            let f = query::Filters {
                patient: Some(black_box("9990000042").into()),
                ..Default::default()
            };
            query::query(dir.path(), &f, query::Format::Table, &mut std::io::sink()).expect("query")
        })
    });
    g.bench_function("export_patient_fhir", |b| {
        b.iter(|| {
            let f = query::Filters {
                patient: Some(black_box("9990000042").into()),
                ..Default::default()
            };
            export::export_fhir(dir.path(), &f, &mut std::io::sink()).expect("export")
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
