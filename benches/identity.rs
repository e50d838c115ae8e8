//! Cost of `identity::identify`: once per connection, right after the handshake, so it is part
//! of the price of every new mTLS connection (scenario C of the side-by-side benchmark).

use caregate::config::{Config, OrgSource};
use caregate::directory::Directory;
use caregate::identity::identify;
use caregate::pki::{Ca, LeafSpec};
use criterion::{criterion_group, criterion_main, Criterion};
use std::hint::black_box;
use std::path::Path;

const CONFIG: &str = r#"
[listener]
bind = "127.0.0.1:0"
server_cert = "server.pem"
server_key = "server.key"
client_ca = ["ca.pem"]

[identity]
org_from = ["san_uri:urn:nhs:ods:", "subject:OU", "endpoint"]

[[endpoint]]
fqdn = "care.example.org.uk"
org = "8KP42"

[[organisation]]
code = "A81001"
name = "Example Surgery"
groups = ["gp"]

[[organisation]]
code = "RXC"
name = "East Sussex Healthcare NHS Trust"
groups = ["trust"]

[[organisation]]
code = "8KP42"
name = "Example Care Homes Ltd"
groups = ["socialcare"]

[[upstream]]
name = "epr"
urls = ["http://127.0.0.1:9080"]

[[route]]
name = "epr-fhir"
path_prefix = "/fhir/"
upstream = "epr"
class = "epr"
  [[route.allow]]
  groups = ["gp"]
  methods = ["GET"]

[audit]
dir = "audit"
"#;

fn bench(c: &mut Criterion) {
    let config = Config::from_bytes(Path::new("bench.toml"), CONFIG.as_bytes()).expect("bench config");
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
