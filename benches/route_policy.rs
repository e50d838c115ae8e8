//! Cost of the per-request decision with a national-scale directory: organisation lookup among
//! 10,000, `RouteTable::find` among 200 routes, then `policy::decide`. Target: under 1 µs.

use caregate::clinical::Facts;
use caregate::config::Config;
use caregate::directory::Directory;
use caregate::policy::{decide, Decision};
use caregate::route::RouteTable;
use criterion::{criterion_group, criterion_main, Criterion};
use http::Method;
use std::fmt::Write as _;
use std::hint::black_box;
use std::path::Path;

const ORGS: usize = 10_000;
const ROUTES: usize = 200;
const ICBS: usize = 42;

fn org_code(i: usize) -> String {
    format!("{}{:05}", (b'A' + (i % 26) as u8) as char, i)
}

/// 10k organisations in 42 ICB groups; 200 routes, each with three rules: named organisations,
/// a few ICBs for writes, then ICBs for reads, so an allowed read usually takes the last rule.
fn config_text() -> String {
    let mut t = String::from(
        r#"
[listener]
bind = "127.0.0.1:0"
server_cert = "server.pem"
server_key = "server.key"
client_ca = ["ca.pem"]

[identity]
org_from = ["san_uri:urn:nhs:ods:", "subject:OU"]

[[upstream]]
name = "epr"
urls = ["http://127.0.0.1:9080"]

[audit]
dir = "audit"
"#,
    );
    for i in 0..ORGS {
        let _ = write!(
            t,
            "[[organisation]]\ncode = \"{}\"\nname = \"Organisation {i}\"\ngroups = [\"icb{:02}\", \"{}\"]\n",
            org_code(i),
            i % ICBS,
            if i % 10 == 0 { "trust" } else { "gp" },
        );
    }
    for r in 0..ROUTES {
        let host = if r % 4 == 0 {
            format!("host = \"provider{r}.example.nhs.uk\"\n")
        } else {
            String::new()
        };
        let _ = write!(
            t,
            "[[route]]\nname = \"svc{r:03}\"\npath_prefix = \"/svc{r:03}/fhir/\"\n{host}upstream = \"epr\"\nclass = \"epr\"\n\
             [[route.allow]]\norgs = [\"{}\", \"{}\", \"{}\"]\nmethods = [\"GET\", \"POST\"]\n\
             [[route.allow]]\ngroups = [\"icb{:02}\", \"trust\"]\nmethods = [\"POST\", \"PUT\"]\n\
             [[route.allow]]\ngroups = [\"icb{:02}\", \"icb{:02}\", \"icb{:02}\", \"gp\"]\nmethods = [\"GET\"]\n",
            org_code(r * 7 % ORGS),
            org_code(r * 13 % ORGS),
            org_code(r * 17 % ORGS),
            r % ICBS,
            (r + 1) % ICBS,
            (r + 2) % ICBS,
            (r + 3) % ICBS,
        );
    }
    // A catch-all last: the longest walk through the table.
    t.push_str("[[route]]\nname = \"root\"\npath_prefix = \"/\"\nupstream = \"epr\"\nclass = \"other\"\n");
    t
}

fn bench(c: &mut Criterion) {
    let config = Config::from_bytes(Path::new("bench.toml"), config_text().as_bytes()).expect("bench config");
    let dir = Directory::build(&config).expect("directory");
    assert_eq!(dir.len(), ORGS);
    let routes = RouteTable::new(&config.routes, |_| 0);
    assert_eq!(routes.len(), ROUTES + 1);
    let facts = Facts::default();

    // Requests spread over organisations and routes: (host, path, org).
    let requests: Vec<(Option<String>, String, String)> = (0..4096)
        .map(|k: usize| {
            let r = (k * 7919) % ROUTES;
            let host = r.is_multiple_of(4).then(|| format!("provider{r}.example.nhs.uk"));
            (
                host,
                format!("/svc{r:03}/fhir/Patient/9990000018"),
                org_code((k * 104_729) % ORGS),
            )
        })
        .collect();

    let decide_one = |host: Option<&str>, path: &str, org: &str| {
        // The lookup admission makes before policy: an unknown organisation is refused there.
        let org = dir.organisation(org)?;
        let route = routes.find(host, path).expect("route");
        Some(decide(route, org, &Method::GET, &facts))
    };
    let allowed = requests
        .iter()
        .filter(|(h, p, o)| matches!(decide_one(h.as_deref(), p, o), Some(Decision::Allow { .. })))
        .count();
    assert!(
        allowed > 0 && allowed < requests.len(),
        "a mix of allowed and refused ({allowed})"
    );

    let mut g = c.benchmark_group("route_policy_10k_orgs_200_routes");
    let mut i = 0usize;
    g.bench_function("lookup_find_decide", |b| {
        b.iter(|| {
            i = (i + 1) & 4095;
            let (h, p, o) = &requests[i];
            black_box(decide_one(black_box(h.as_deref()), black_box(p), black_box(o)))
        })
    });
    g.bench_function("find_catch_all_worst_case", |b| {
        b.iter(|| black_box(routes.find(black_box(None), black_box("/unrouted/path"))))
    });
    let org = dir.organisation(&org_code(4242)).expect("a known organisation");
    let route = routes.find(None, "/svc001/fhir/Patient").expect("route");
    g.bench_function("decide_only", |b| {
        b.iter(|| black_box(decide(black_box(route), black_box(org), &Method::GET, &facts)))
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
