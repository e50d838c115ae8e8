//! Cost of `clinical::parse` on typical requests (it runs on every request).

use caregate::clinical::{parse, Options};
use criterion::{criterion_group, criterion_main, Criterion};
use http::{HeaderMap, HeaderValue, Method};
use std::hint::black_box;

fn bench(c: &mut Criterion) {
    let mut h = HeaderMap::new();
    h.insert("accept", HeaderValue::from_static("application/fhir+json"));
    h.insert(
        "x-request-id",
        HeaderValue::from_static("7b0c1c3e-6b1f-4c59-9d43-1d1b5e8f2a11"),
    );
    let mut g = c.benchmark_group("clinical_parse");
    g.bench_function("fhir_read", |b| {
        b.iter(|| {
            parse(
                &Method::GET,
                black_box("/fhir/Patient/9990000018"),
                None,
                black_box(&h),
                &Options::default(),
            )
        })
    });
    g.bench_function("identifier_search", |b| {
        b.iter(|| {
            parse(
                &Method::GET,
                black_box("/fhir/Patient"),
                black_box(Some(
                    "identifier=https%3A%2F%2Ffhir.nhs.uk%2FId%2Fnhs-number%7C9990000018&_format=json",
                )),
                black_box(&h),
                &Options::default(),
            )
        })
    });
    g.bench_function("dicomweb_retrieve", |b| {
        b.iter(|| {
            parse(
                &Method::GET,
                black_box("/dicomweb/studies/1.2.826.0.1.3680043.8.498.1/series/1.2.826.0.1.3680043.8.498.2/instances"),
                None,
                black_box(&h),
                &Options::default(),
            )
        })
    });
    g.bench_function("not_clinical", |b| {
        b.iter(|| {
            parse(
                &Method::GET,
                black_box("/api/v1/status"),
                None,
                black_box(&h),
                &Options::default(),
            )
        })
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
