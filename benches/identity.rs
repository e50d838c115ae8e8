//! Cost of `identity::identify`: once per connection, right after the handshake, so it is part
//! of the price of every new mTLS connection (scenario C of the side-by-side benchmark).

// The gateway config builder of the tests (plain std); the bench uses a part of it.
#[allow(dead_code)]
#[path = "../tests/support/config.rs"]
mod gateway_config;

use caregate::config::{Config, OrgSource};
use caregate::directory::Directory;
use caregate::identity::identify;
use caregate::pki::{Ca, LeafSpec};
use criterion::{criterion_group, criterion_main, Criterion};
use gateway_config::{Allow, GatewayConfig, Route};
use std::hint::black_box;
use std::path::Path;

/// Three organisations, one of them behind a registered endpoint, found by any of the three
/// sources.
fn config_text() -> String {
    GatewayConfig::new()
        .tls(Path::new(""))
        .org_from(&["san_uri:urn:nhs:ods:", "subject:OU", "endpoint"])
        .endpoint("care.example.org.uk", "8KP42", None)
        .org("A81001", "Example Surgery", &["gp"])
        .org("RXC", "East Sussex Healthcare NHS Trust", &["trust"])
        .org("8KP42", "Example Care Homes Ltd", &["socialcare"])
        .upstream("epr", ["http://127.0.0.1:9080"])
        .route(Route::new("epr-fhir", "/fhir/", "epr", "epr").allow(Allow::groups(&["gp"]).methods(&["GET"])))
        .audit(Path::new("audit"))
        .to_string()
}

fn bench(c: &mut Criterion) {
    let config = Config::from_bytes(Path::new("bench.toml"), config_text().as_bytes()).expect("bench config");
    let dir = Directory::build(&config).expect("directory");
    let sources = config.identity.org_from.clone();
    let ca = Ca::new("bench CA").expect("CA");

    // The three ways a certificate can name its organisation, as the dev PKI issues them.
    let mut san = LeafSpec::client("gpsystem.a81001.example.nhs.uk");
    san.organisation = Some("Example Surgery".into());
    san.uris = vec!["urn:nhs:ods:A81001".into()];
    let mut ou = LeafSpec::client("pas.rxc.example.nhs.uk");
    ou.organisation = Some("East Sussex Healthcare NHS Trust".into());
    ou.org_unit = Some("RXC".into());
    let mut endpoint = LeafSpec::client("care.example.org.uk");
    endpoint.dns_names = vec!["care.example.org.uk".into()];
    let certs = [("san_uri", san), ("subject_ou", ou), ("endpoint", endpoint)]
        .map(|(name, spec)| (name, ca.issue(&spec).expect("leaf").cert_der));

    let mut g = c.benchmark_group("identify");
    for (name, der) in &certs {
        let id = identify(der, &sources, &dir).expect("identity");
        assert!(id.org.is_some(), "{name}: no organisation");
        g.bench_function(*name, |b| {
            b.iter(|| identify(black_box(der), black_box(&sources), &dir))
        });
    }
    // Only the SAN source configured: the common case of a network that issues ODS URIs.
    let only_san = [OrgSource::SanUri("urn:nhs:ods:".into())];
    g.bench_function("san_uri_only_source", |b| {
        b.iter(|| identify(black_box(&certs[0].1), black_box(&only_san), &dir))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
