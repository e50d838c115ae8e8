//! Normalised path + host → the route that serves it (longest `path_prefix` wins; a route that
//! names the host beats one that does not, at equal length).

use crate::config::{self, Class};
use std::collections::HashMap;
use std::sync::Arc;

/// A route as the pipeline uses it.
#[derive(Debug)]
pub struct Route {
    pub name: Arc<str>,
    pub prefix: String,
    pub host: Option<String>,
    /// Index into the upstream table.
    pub upstream: usize,
    pub class: Class,
    pub config: config::Route,
    /// `route/allow[i]` labels, then `route/break_glass[j]` ones (at `allow.len() + j`), made
    /// once so decisions don't format strings.
    pub rule_labels: Vec<Arc<str>>,
}

#[derive(Debug, Default)]
pub struct RouteTable {
    /// Sorted by prefix length, longest first, host-specific before host-less.
    routes: Vec<Arc<Route>>,
    /// A prefix only matches paths whose first segment is its own (`/fhir/Patient` → `fhir`),
    /// except `/`, which matches any. For each first segment that some prefix names: the
    /// indices (in `routes` order) of the routes that can match it; other paths try `any_segment`.
    /// With hundreds of routes, a lookup walks a handful instead of all of them.
    by_segment: HashMap<Box<str>, Vec<usize>>,
    any_segment: Vec<usize>,
}

impl RouteTable {
    /// `upstream_index` maps an upstream name to its index (names were checked by config).
    pub fn new(routes: &[config::Route], upstream_index: impl Fn(&str) -> usize) -> RouteTable {
        let mut routes: Vec<Arc<Route>> = routes
            .iter()
            .map(|r| {
                Arc::new(Route {
                    name: r.name.as_str().into(),
                    prefix: r.path_prefix.clone(),
                    host: r.host.clone(),
                    upstream: upstream_index(&r.upstream),
                    class: r.class,
                    rule_labels: (0..r.allow.len())
                        .map(|i| format!("{}/allow[{i}]", r.name).into())
                        .chain((0..r.break_glass.len()).map(|j| format!("{}/break_glass[{j}]", r.name).into()))
                        .collect(),
                    config: r.clone(),
                })
            })
            .collect();
        routes.sort_by(|a, b| {
            b.prefix
                .len()
                .cmp(&a.prefix.len())
                .then(b.host.is_some().cmp(&a.host.is_some()))
        });
        let mut by_segment: HashMap<Box<str>, Vec<usize>> = HashMap::new();
        let mut any_segment = Vec::new();
        for (i, r) in routes.iter().enumerate() {
            match first_segment(&r.prefix) {
                "" => any_segment.push(i),
                seg => by_segment.entry(seg.to_ascii_lowercase().into()).or_default().push(i),
            }
        }
        for list in by_segment.values_mut() {
            list.extend_from_slice(&any_segment);
            list.sort_unstable();
        }
        RouteTable {
            routes,
            by_segment,
            any_segment,
        }
    }

    /// The route for this request. `host` is the request's host without port, lower case.
    pub fn find(&self, host: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        self.find_for(host, None, path)
    }

    /// As `find`, for Spine Secure Proxy-style addressing (`/https://<provider>/…`): only
    /// routes naming that `provider_host` match, and only they.
    ///
    /// Prefixes match ASCII case-insensitively: FHIR servers (HAPI among them) read
    /// `/fhir/patient` as `/fhir/Patient`, so it must meet the `/fhir/Patient` route's rules,
    /// not slip past them into a looser `/fhir/` one.
    pub fn find_for(&self, host: Option<&str>, provider: Option<&str>, path: &str) -> Option<&Arc<Route>> {
        let seg = first_segment(path);
        let candidates = if seg.bytes().any(|b| b.is_ascii_uppercase()) {
            self.by_segment.get(seg.to_ascii_lowercase().as_str())
        } else {
            self.by_segment.get(seg)
        };
        let candidates = candidates.unwrap_or(&self.any_segment);
        candidates.iter().map(|&i| &self.routes[i]).find(|r| {
            prefix_matches(&r.prefix, path)
                && r.config.provider_host.as_deref() == provider
                && match &r.host {
                    None => true,
                    Some(h) => host == Some(h.as_str()),
                }
        })
    }

    pub fn len(&self) -> usize {
        self.routes.len()
    }

    pub fn is_empty(&self) -> bool {
        self.routes.is_empty()
    }
}

/// `/fhir/` matches `/fhir/…`; `/fhir` matches `/fhir`, `/fhir/…` and `/fhir?…` but not
/// `/fhirx`, so a prefix never leaks into a sibling path.
fn prefix_matches(prefix: &str, path: &str) -> bool {
    let (p, q) = (prefix.as_bytes(), path.as_bytes());
    if !(q.len() >= p.len() && q[..p.len()].eq_ignore_ascii_case(p)) {
        // `/fhir/` also serves `/fhir` itself.
        return prefix.ends_with('/') && q.len() + 1 == p.len() && p[..q.len()].eq_ignore_ascii_case(q);
    }
    prefix.ends_with('/') || q.len() == p.len() || q[p.len()] == b'/'
}

/// `/fhir/Patient` → `fhir`; `/` → ``.
fn first_segment(path: &str) -> &str {
    let rest = path.strip_prefix('/').unwrap_or(path);
    rest.split(['/', '?']).next().unwrap_or("")
}

/// The request's host, lower case and without port.
pub fn host_of(authority: &str) -> &str {
    let h = if authority.starts_with('[') {
        authority.split_once(']').map(|(h, _)| &h[1..]).unwrap_or(authority)
    } else {
        authority.rsplit_once(':').map(|(h, _)| h).unwrap_or(authority)
    };
    h.trim_end_matches('.')
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(name: &str, prefix: &str, host: Option<&str>) -> config::Route {
        config::Route {
            name: name.into(),
            path_prefix: prefix.into(),
            host: host.map(str::to_string),
            upstream: "u".into(),
            class: Class::Other,
            provider_host: None,
            require_ssp_headers: false,
            check_token_org: false,
            check_nhs_number: true,
            inspect_body: true,
            inspect_body_limit: config::Route::INSPECT_BODY_LIMIT,
            patient_ids_are_nhs_numbers: true,
            allow_path_params: false,
            allow: vec![],
            break_glass: vec![],
        }
    }

    #[test]
    fn longest_prefix_and_host() {
        let t = RouteTable::new(
            &[
                route("root", "/", None),
                route("fhir", "/fhir/", None),
                route("patient", "/fhir/Patient", None),
                route("fhir-b", "/fhir/", Some("b.example")),
            ],
            |_| 0,
        );
        let name = |h: Option<&str>, p: &str| t.find(h, p).map(|r| r.name.clone());
        assert_eq!(name(None, "/fhir/Observation").as_deref(), Some("fhir"));
        assert_eq!(name(None, "/fhir/Patient/9990000018").as_deref(), Some("patient"));
        assert_eq!(name(None, "/fhir/PatientX").as_deref(), Some("fhir"));
        assert_eq!(name(Some("b.example"), "/fhir/Observation").as_deref(), Some("fhir-b"));
        assert_eq!(name(None, "/other").as_deref(), Some("root"));
        assert_eq!(name(None, "/fhir").as_deref(), Some("fhir"));
        // What a case-insensitive FHIR server reads as Patient meets the Patient route.
        assert_eq!(name(None, "/fhir/patient/9990000018").as_deref(), Some("patient"));
        assert_eq!(name(None, "/FHIR/PATIENT").as_deref(), Some("patient"));
        assert_eq!(name(None, "/Fhir/Observation").as_deref(), Some("fhir"));
        assert_eq!(name(Some("b.example"), "/FHIR/x").as_deref(), Some("fhir-b"));
    }

    #[test]
    fn no_route() {
        let t = RouteTable::new(&[route("fhir", "/fhir/", None)], |_| 0);
        assert!(t.find(None, "/admin").is_none());
        assert!(t.find(None, "/fhirx").is_none());
    }

    #[test]
    fn the_segment_index_agrees_with_walking_every_route() {
        let prefixes = [
            "/",
            "/fhir",
            "/fhir/",
            "/fhir/Patient",
            "/fhirx/",
            "/dicomweb/studies",
            "/a/b/c",
            "/a",
        ];
        let routes: Vec<_> = prefixes
            .iter()
            .enumerate()
            .flat_map(|(i, p)| {
                [
                    route(&format!("r{i}"), p, None),
                    route(&format!("h{i}"), p, Some("h.example")),
                ]
            })
            .collect();
        for without_root in [false, true] {
            let routes: Vec<_> = routes
                .iter()
                .filter(|r| !without_root || r.path_prefix != "/")
                .cloned()
                .collect();
            let t = RouteTable::new(&routes, |_| 0);
            let paths = [
                "/",
                "/fhir",
                "/fhir/",
                "/fhir/Patient/1",
                "/fhirx",
                "/fhirx/y",
                "/dicomweb",
                "/a",
                "/a/b",
            ];
            for path in paths.into_iter().chain(["/z"]) {
                for host in [None, Some("h.example")] {
                    let walked = t
                        .routes
                        .iter()
                        .find(|r| prefix_matches(&r.prefix, path) && r.host.as_deref().is_none_or(|h| host == Some(h)));
                    let found = t.find(host, path);
                    assert_eq!(found.map(|r| &r.name), walked.map(|r| &r.name), "{host:?} {path}");
                }
            }
        }
    }

    #[test]
    fn hosts() {
        assert_eq!(host_of("localhost:8443"), "localhost");
        assert_eq!(host_of("[::1]:8443"), "::1");
        assert_eq!(host_of("example.nhs.uk."), "example.nhs.uk");
    }
}
