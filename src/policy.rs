//! Deny by default: the first `[[route.allow]]` rule that matches allows, and names itself;
//! anything else is refused with the reason. [`break_glass`] says who may override that
//! refusal in an emergency (the reason header is `admit`'s to check).

use crate::clinical::Facts;
use crate::directory::Organisation;
use crate::route::Route;
use http::Method;

/// The outcome of policy for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Allowed by `route.rule_labels[index]`.
    Allow { rule: usize },
    /// No rule of the route matched.
    NotAllowed,
}

/// Decides whether `org` (one the directory knows: an unknown organisation is refused before
/// policy) may make this request on `route`.
pub fn decide(route: &Route, org: &Organisation, method: &Method, facts: &Facts) -> Decision {
    for (i, rule) in route.config.allow.iter().enumerate() {
        let who =
            rule.orgs.iter().any(|o| o == "*" || *o == org.code) || rule.groups.iter().any(|g| org.groups.contains(g));
        if !who {
            continue;
        }
        if !rule.methods.is_empty() && !rule.methods.iter().any(|m| m == method.as_str()) {
            continue;
        }
        // Rules that name clinical facts need them: a request we could not parse does not match.
        if !rule.resources.is_empty()
            && !facts
                .clinical
                .fhir_type
                .as_ref()
                .is_some_and(|t| rule.resources.contains(t))
        {
            continue;
        }
        if !rule.interactions.is_empty()
            && !facts
                .fhir_interaction
                .as_ref()
                .is_some_and(|t| rule.interactions.contains(t))
        {
            continue;
        }
        if !rule.spine_interactions.is_empty()
            && !facts
                .spine_interaction
                .as_ref()
                .is_some_and(|t| rule.spine_interactions.contains(t))
        {
            continue;
        }
        return Decision::Allow { rule: i };
    }
    Decision::NotAllowed
}

/// The first `[[route.break_glass]]` entry naming `org` (by code or group) and `method`, as an
/// index into `route.rule_labels`: only ever asked once [`decide`] said `NotAllowed`.
pub fn break_glass(route: &Route, org: &Organisation, method: &Method) -> Option<usize> {
    let allow = route.config.allow.len();
    route.config.break_glass.iter().enumerate().find_map(|(j, b)| {
        let who = b.orgs.contains(&org.code) || b.groups.iter().any(|g| org.groups.contains(g));
        let how = b.methods.is_empty() || b.methods.iter().any(|m| m == method.as_str());
        (who && how).then_some(allow + j)
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{self, AllowRule, Class};
    use crate::route::RouteTable;

    fn table(allow: Vec<AllowRule>) -> RouteTable {
        let r = config::Route {
            name: "fhir".into(),
            path_prefix: "/fhir/".into(),
            host: None,
            upstream: "epr".into(),
            class: Class::Epr,
            provider_host: None,
            require_ssp_headers: false,
            check_token_org: false,
            check_nhs_number: true,
            inspect_body: true,
            inspect_body_limit: config::Route::INSPECT_BODY_LIMIT,
            patient_ids_are_nhs_numbers: true,
            allow_path_params: false,
            allow,
            break_glass: vec![config::BreakGlass {
                groups: vec!["ed".into()],
                methods: vec!["GET".into()],
                ..Default::default()
            }],
        };
        RouteTable::new(&[r], |_| 0)
    }

    fn org(code: &str, groups: &[&str]) -> Organisation {
        Organisation {
            code: code.into(),
            name: code.into(),
            groups: groups.iter().map(|g| g.to_string()).collect(),
        }
    }

    #[test]
    fn deny_by_default_and_first_rule_wins() {
        let t = table(vec![
            AllowRule {
                groups: vec!["gp".into()],
                methods: vec!["GET".into()],
                ..Default::default()
            },
            AllowRule {
                orgs: vec!["RXC".into()],
                ..Default::default()
            },
        ]);
        let r = t.find(None, "/fhir/Patient").unwrap();
        let f = Facts::default();
        assert_eq!(
            decide(r, &org("A81001", &["gp"]), &Method::GET, &f),
            Decision::Allow { rule: 0 }
        );
        assert_eq!(
            decide(r, &org("A81001", &["gp"]), &Method::POST, &f),
            Decision::NotAllowed
        );
        assert_eq!(
            decide(r, &org("RXC", &[]), &Method::DELETE, &f),
            Decision::Allow { rule: 1 }
        );
        assert_eq!(decide(r, &org("B99999", &[]), &Method::GET, &f), Decision::NotAllowed);
        assert_eq!(&*r.rule_labels[1], "fhir/allow[1]");
    }

    #[test]
    fn break_glass_names_its_orgs_and_methods_and_labels_after_the_allow_rules() {
        let t = table(vec![AllowRule {
            orgs: vec!["RXC".into()],
            ..Default::default()
        }]);
        let r = t.find(None, "/fhir/Patient").unwrap();
        assert_eq!(break_glass(r, &org("RYR", &["ed"]), &Method::GET), Some(1));
        assert_eq!(&*r.rule_labels[1], "fhir/break_glass[0]");
        assert_eq!(break_glass(r, &org("RYR", &["ed"]), &Method::POST), None);
        assert_eq!(break_glass(r, &org("A81001", &["gp"]), &Method::GET), None);
    }

    #[test]
    fn star_means_any_known_org() {
        let t = table(vec![AllowRule {
            orgs: vec!["*".into()],
            ..Default::default()
        }]);
        let r = t.find(None, "/fhir/").unwrap();
        assert_eq!(
            decide(r, &org("X1", &[]), &Method::GET, &Facts::default()),
            Decision::Allow { rule: 0 }
        );
    }

    #[test]
    fn clinical_rules_need_their_facts() {
        let t = table(vec![AllowRule {
            orgs: vec!["*".into()],
            resources: vec!["Patient".into()],
            interactions: vec!["read".into()],
            ..Default::default()
        }]);
        let r = t.find(None, "/fhir/").unwrap();
        let mut f = Facts::default();
        assert_eq!(decide(r, &org("X1", &[]), &Method::GET, &f), Decision::NotAllowed);
        f.clinical.fhir_type = Some("Patient".into());
        f.fhir_interaction = Some("read".into());
        assert_eq!(
            decide(r, &org("X1", &[]), &Method::GET, &f),
            Decision::Allow { rule: 0 }
        );
        f.clinical.fhir_type = Some("Observation".into());
        assert_eq!(decide(r, &org("X1", &[]), &Method::GET, &f), Decision::NotAllowed);
    }
}
