//! Cost of the per-request decision with a national-scale directory: organisation lookup among
//! 10,000, `RouteTable::find` among 200 routes, then `policy::decide`. Target: under 1 µs.

// The gateway config builder of the tests (plain std); the bench uses a part of it.
#[allow(dead_code)]
#[path = "../tests/support/config.rs"]
mod gateway_config;

use caregate::clinical::Facts;
use caregate::config::Config;
use caregate::directory::Directory;
use caregate::policy::{decide, Decision};
use caregate::route::RouteTable;
use criterion::{criterion_group, criterion_main, Criterion};
use gateway_config::{Allow, GatewayConfig, Route};
use http::Method;
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
    let mut c = GatewayConfig::new()
        .tls(Path::new(""))
        .org_from(&["san_uri:urn:nhs:ods:", "subject:OU"])
        .upstream("epr", ["http://127.0.0.1:9080"])
        .audit(Path::new("audit"));
    for i in 0..ORGS {
        let icb = format!("icb{:02}", i % ICBS);
        let kind = if i % 10 == 0 { "trust" } else { "gp" };
        c = c.org(&org_code(i), &format!("Organisation {i}"), &[&icb, kind]);
    }
    for r in 0..ROUTES {
        let icb = |k: usize| format!("icb{:02}", (r + k) % ICBS);
        let mut route = Route::new(&format!("svc{r:03}"), &format!("/svc{r:03}/fhir/"), "epr", "epr");
        if r % 4 == 0 {
            route = route.set(format!("host = \"provider{r}.example.nhs.uk\""));
        }
        let named = [org_code(r * 7 % ORGS), org_code(r * 13 % ORGS), org_code(r * 17 % ORGS)];
        c = c.route(
            route
                .allow(Allow::orgs(&[&named[0], &named[1], &named[2]]).methods(&["GET", "POST"]))
                .allow(Allow::groups(&[&icb(0), "trust"]).methods(&["POST", "PUT"]))
                .allow(Allow::groups(&[&icb(1), &icb(2), &icb(3), "gp"]).methods(&["GET"])),
        );
    }
    // A catch-all last: the longest walk through the table.
    c.route(Route::new("root", "/", "epr", "other")).to_string()
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
