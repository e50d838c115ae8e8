use super::*;

/// A small valid config; each test swaps one line of it for a bad one.
const GOOD: &str = r#"[listener]
bind = "127.0.0.1:8443"
server_cert = "server.pem"
server_key = "server.key"
client_ca = ["ca.pem"]
crl_expired = "warn"

[admin]
bind = "127.0.0.1:9901"

[identity]
org_from = ["subject:OU", "endpoint"]

[[organisation]]
code = "A81001"
groups = ["gp"]

[[upstream]]
name = "epr"
urls = ["http://127.0.0.1:9080"]

[[route]]
name = "fhir"
path_prefix = "/fhir/"
upstream = "epr"
class = "epr"
  [[route.allow]]
  orgs = ["*"]
  [[route.allow]]
  groups = ["gp"]
  methods = ["GET"]

[[route]]
name = "files"
path_prefix = "/files/"
upstream = "epr"

[rate_limit.epr]
burst = 10

[[rate_limit.override]]
org = "A81001"
class = "image"
burst = 20

[audit]
dir = "audit"
durability = "flush"
"#;

fn load(text: &str) -> Result<Config, ConfigError> {
    Config::from_bytes(Path::new("/etc/caregate/gw.toml"), text.as_bytes())
}

/// `GOOD` with the `nth` (0-based) occurrence of `from` replaced by `to`.
fn with(from: &str, nth: usize, to: &str) -> String {
    let (at, _) = GOOD
        .match_indices(from)
        .nth(nth)
        .unwrap_or_else(|| panic!("no {from} #{nth}"));
    format!("{}{to}{}", &GOOD[..at], &GOOD[at + from.len()..])
}

fn line_of(text: &str, needle: &str) -> usize {
    text[..text.find(needle).unwrap()].matches('\n').count() + 1
}

#[test]
fn the_good_config_loads_with_its_enums_and_defaults() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.listener.crl_expired, CrlExpired::Warn);
    assert_eq!(c.audit.durability, Durability::Flush);
    assert_eq!(
        c.identity.org_from,
        [OrgSource::Subject("OU".into()), OrgSource::Endpoint]
    );
    assert_eq!(c.routes[0].class, Class::Epr);
    assert_eq!(c.routes[1].class, Class::Other, "class defaults to other");
    assert_eq!(c.rate_limits.overrides[0].class, Class::Image);
    assert_eq!(c.audit.dir, Path::new("/etc/caregate/audit"));

    let bare = GOOD
        .replace("crl_expired = \"warn\"\n", "")
        .replace("durability = \"flush\"\n", "")
        .replace("[identity]\norg_from = [\"subject:OU\", \"endpoint\"]\n", "");
    let c = load(&bare).unwrap();
    assert_eq!(c.listener.crl_expired, CrlExpired::Refuse);
    assert_eq!(c.audit.durability, Durability::Fsync);
    assert_eq!(
        c.identity.org_from,
        [
            OrgSource::SanUri("urn:nhs:ods:".into()),
            OrgSource::Subject("OU".into()),
            OrgSource::Endpoint
        ]
    );
}

/// A value serde refuses for an enum is one sentence: the key (with its indices), the value
/// and the choices, and the line it is on.
#[test]
fn enum_errors_name_their_key_and_line() {
    let cases = [
        (
            with("class = \"epr\"", 0, "class = \"xray\""),
            "class = \"xray\"",
            "route[0].class",
            "\"xray\" is not epr, image or other",
        ),
        (
            with("class = \"image\"", 0, "class = \"mri\""),
            "class = \"mri\"",
            "rate_limit.override[0].class",
            "\"mri\" is not epr, image or other",
        ),
        (
            with("crl_expired = \"warn\"", 0, "crl_expired = \"ignore\""),
            "crl_expired",
            "listener.crl_expired",
            "\"ignore\" is not \"refuse\" or \"warn\"",
        ),
        (
            with("durability = \"flush\"", 0, "durability = \"sometimes\""),
            "durability",
            "audit.durability",
            "\"sometimes\" is not \"fsync\" or \"flush\"",
        ),
    ];
    for (text, on, key, message) in cases {
        let e = load(&text).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert_eq!(e.message, format!("{message} (line {})", line_of(&text, on)), "{e}");
        assert_eq!(
            e.to_string(),
            format!("/etc/caregate/gw.toml: {key}: {message} (line {})", line_of(&text, on))
        );
    }
}

/// `identity.org_from` entries are converted by the validator, which knows their index.
#[test]
fn org_source_errors_name_their_index() {
    let cases = [
        (
            with("\"endpoint\"]", 0, "\"dns\"]"),
            "identity.org_from[1]: \"dns\" is not \"subject:<ATTR>\", \"san_uri:<prefix>\" or \"endpoint\"",
        ),
        (
            with("\"subject:OU\"", 0, "\"subject:\""),
            "identity.org_from[0]: \"subject:\" needs an attribute, like \"subject:OU\"",
        ),
        (
            with("\"subject:OU\"", 0, "\"san_uri:\""),
            "identity.org_from[0]: \"san_uri:\" needs a prefix, like \"san_uri:urn:nhs:ods:\"",
        ),
    ];
    for (text, error) in cases {
        let e = load(&text).expect_err(error);
        assert_eq!(e.to_string(), format!("/etc/caregate/gw.toml: {error}"));
    }
}

#[test]
fn an_enums_error_text_stands_alone() {
    assert_eq!(
        Class::try_from("x".to_string()).unwrap_err(),
        "\"x\" is not epr, image or other"
    );
    assert_eq!(
        CrlExpired::try_from("x".to_string()).unwrap_err(),
        "\"x\" is not \"refuse\" or \"warn\""
    );
    assert_eq!(
        Durability::try_from("x".to_string()).unwrap_err(),
        "\"x\" is not \"fsync\" or \"flush\""
    );
    for c in Class::ALL {
        assert_eq!(Class::try_from(c.as_str().to_string()), Ok(c));
        assert_eq!(Class::parse(c.as_str()), Some(c));
    }
    assert_eq!(
        OrgSource::try_from("san_uri:urn:x:"),
        Ok(OrgSource::SanUri("urn:x:".into()))
    );
}

/// Other errors from serde (unknown keys, wrong types) name their key the same way.
#[test]
fn serde_errors_name_their_key() {
    let cases = [
        (
            with("bind = \"127.0.0.1:9901\"", 0, "port = 1"),
            "port = 1",
            "admin.port",
            "unknown field `port`",
        ),
        (
            with("burst = 10", 0, "burst = \"ten\""),
            "burst = \"ten\"",
            "rate_limit.epr.burst",
            "invalid type",
        ),
        (
            with("methods = [\"GET\"]", 0, "methods = \"GET\""),
            "methods = \"GET\"",
            "route[0].allow[1].methods",
            "invalid type",
        ),
        (
            with("name = \"files\"", 0, "name = 7"),
            "name = 7",
            "route[1].name",
            "invalid type",
        ),
    ];
    for (text, on, key, message) in cases {
        let e = load(&text).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert!(e.message.starts_with(message), "{e}");
        assert!(e.message.ends_with(&format!("(line {})", line_of(&text, on))), "{e}");
        assert!(!e.to_string().contains('\n'), "one sentence: {e}");
    }
    // A table without a key it needs is named; the file without a table it needs is not.
    let e = load(&with("upstream = \"epr\"", 1, "")).unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("route[1]", "missing field `upstream` (line 33)")
    );
    let e = load(GOOD.split("[audit]").next().unwrap()).unwrap_err();
    assert_eq!(
        (e.key.as_str(), e.message.as_str()),
        ("line 1", "missing field `audit`")
    );
    // Bad TOML has no key to name: the line stands in for it.
    let e = load(&with("burst = 10", 0, "burst = 10\nburst = 11")).unwrap_err();
    assert_eq!((e.key.as_str(), e.message.as_str()), ("line 40", "duplicate key"));
}

#[test]
fn key_at_spells_keys_as_the_errors_do() {
    let at = |needle: &str| {
        let start = GOOD.find(needle).unwrap();
        raw::key_at(GOOD, start..start + needle.len())
    };
    assert_eq!(at("127.0.0.1:8443").as_deref(), Some("listener.bind"));
    assert_eq!(at("\"endpoint\"").as_deref(), Some("identity.org_from[1]"));
    assert_eq!(at("\"GET\"").as_deref(), Some("route[0].allow[1].methods[0]"));
    assert_eq!(at("\"/files/\"").as_deref(), Some("route[1].path_prefix"));
    assert_eq!(at("durability").as_deref(), Some("audit.durability"));
}

/// What the section validators refuse, each under its own key.
#[test]
fn validators_name_their_key() {
    let cases = [
        (
            with("client_ca = [\"ca.pem\"]", 0, "client_ca = []"),
            "listener.client_ca",
        ),
        (
            with("bind = \"127.0.0.1:9901\"", 0, "bind = \"localhost\""),
            "admin.bind",
        ),
        (
            with("org_from = [\"subject:OU\", \"endpoint\"]", 0, "org_from = []"),
            "identity.org_from",
        ),
        (
            with("code = \"A81001\"", 0, "code = \"A8-1001\""),
            "organisation[0].code",
        ),
        (
            with("urls = [\"http://127.0.0.1:9080\"]", 0, "urls = [\"ftp://x\"]"),
            "upstream[0].urls[0]",
        ),
        (
            with("path_prefix = \"/files/\"", 0, "path_prefix = \"files/\""),
            "route[1].path_prefix",
        ),
        (with("orgs = [\"*\"]", 0, "methods = [\"GET\"]"), "route[0].allow[0]"),
        (
            with("methods = [\"GET\"]", 0, "methods = [\"G T\"]"),
            "route[0].allow[1].methods",
        ),
        (with("burst = 10", 0, "burst = 0"), "rate_limit.epr.burst"),
        (
            with("burst = 20", 0, "max_concurrent = 0"),
            "rate_limit.override[0].max_concurrent",
        ),
        (
            with("dir = \"audit\"", 0, "dir = \"audit\"\nrotate_bytes = \"1KiB\""),
            "audit.rotate_bytes",
        ),
        (with("name = \"files\"", 0, "name = \"fhir\""), "route[1].name"),
        (
            with("upstream = \"epr\"", 1, "upstream = \"pacs\""),
            "route[1].upstream",
        ),
        (
            with("groups = [\"gp\"]\n  methods", 0, "groups = [\"hospital\"]\n  methods"),
            "route[0].allow[1].groups",
        ),
        (
            with("org = \"A81001\"", 0, "org = \"B82001\""),
            "rate_limit.override[0].org",
        ),
        (
            with(
                "[rate_limit.epr]",
                0,
                "[rate_limit]\nrefusals_per_second = 0\n[rate_limit.epr]",
            ),
            "rate_limit.refusals_per_second",
        ),
        (
            with(
                "[rate_limit.epr]",
                0,
                "[rate_limit]\nrefusals_per_second = nan\n[rate_limit.epr]",
            ),
            "rate_limit.refusals_per_second",
        ),
        (
            with(
                "[rate_limit.epr]",
                0,
                "[rate_limit]\nrefusal_burst = 0\n[rate_limit.epr]",
            ),
            "rate_limit.refusal_burst",
        ),
    ];
    for (text, key) in cases {
        let e = load(&text).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert!(!e.to_string().contains('\n'), "one sentence: {e}");
    }
}

#[test]
fn the_refusal_budget_has_defaults_that_no_well_behaved_client_meets() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.refusal_budget, crate::config::RefusalBudget::default());
    assert_eq!((c.refusal_budget.per_second, c.refusal_budget.burst), (10.0, 50));
    let text = with(
        "[rate_limit.epr]",
        0,
        "[rate_limit]\nrefusals_per_second = 0.5\nrefusal_burst = 5\n[rate_limit.epr]",
    );
    let c = load(&text).unwrap();
    assert_eq!((c.refusal_budget.per_second, c.refusal_budget.burst), (0.5, 5));
    // The class tables are read as before.
    assert!(c.rate_limits.classes.contains_key(&Class::Epr));
}

#[test]
fn connection_limits_default_to_shares_of_max_connections() {
    let c = load(GOOD).unwrap();
    assert_eq!(c.listener.body_idle_timeout, Duration::from_secs(60));
    assert_eq!(c.listener.max_connections_per_address, 5_000);
    assert_eq!(c.listener.max_connections_per_org, 10_000);

    let small = with("crl_expired", 0, "max_connections = 3\ncrl_expired");
    let c = load(&small).unwrap();
    assert_eq!(c.listener.max_connections_per_address, 1, "never below 1");
    assert_eq!(c.listener.max_connections_per_org, 1);

    let set = with(
        "crl_expired",
        0,
        "body_idle_timeout = \"300ms\"\nmax_connections_per_address = 7\nmax_connections_per_org = 9\ncrl_expired",
    );
    let c = load(&set).unwrap();
    assert_eq!(c.listener.body_idle_timeout, Duration::from_millis(300));
    assert_eq!(c.listener.max_connections_per_address, 7);
    assert_eq!(c.listener.max_connections_per_org, 9);

    for bad in [
        "max_connections_per_address = 0",
        "max_connections_per_org = 0",
        "body_idle_timeout = \"0s\"",
    ] {
        let e = load(&with("crl_expired", 0, &format!("{bad}\ncrl_expired"))).unwrap_err();
        let key = bad.split(' ').next().unwrap();
        assert_eq!(e.key, format!("listener.{key}"), "{bad}");
    }
}

#[test]
fn session_lifetime_defaults_to_five_minutes_and_is_bounded() {
    assert_eq!(load(GOOD).unwrap().listener.session_lifetime, Duration::from_secs(300));
    let set = |v: &str| {
        load(&with(
            "crl_expired",
            0,
            &format!("session_lifetime = \"{v}\"\ncrl_expired"),
        ))
    };
    assert_eq!(
        set("0s").unwrap().listener.session_lifetime,
        Duration::ZERO,
        "resumption off"
    );
    assert_eq!(set("1h").unwrap().listener.session_lifetime, Duration::from_secs(3600));
    for bad in ["500ms", "8d", "soon"] {
        let e = set(bad).unwrap_err();
        assert_eq!(e.key, "listener.session_lifetime", "{bad}: {e}");
        assert!(!e.to_string().contains('\n'), "one sentence: {e}");
    }
}

#[test]
fn console_defaults_and_auditors() {
    let c = load(&format!(
        "{GOOD}\n[console]\nbind = \"127.0.0.1:9443\"\nauditors = [\"a81001\", \"group:gp\"]\n"
    ))
    .unwrap();
    let console = c.console.unwrap();
    assert_eq!(console.auditor_orgs, ["A81001"]);
    assert_eq!(console.auditor_groups, ["gp"]);
    assert!(!console.plain_http);
    // Beside the audit folder, not inside it.
    assert_eq!(console.db, Path::new("/etc/caregate/audit.index.sqlite"));
    // No auditors: valid, and nobody gets in.
    let c = load(&format!("{GOOD}\n[console]\nbind = \"127.0.0.1:9443\"\n")).unwrap();
    assert!(c.console.unwrap().auditor_orgs.is_empty());
}

#[test]
fn console_mistakes_name_their_key() {
    let key_of = |extra: &str| load(&format!("{GOOD}\n[console]\n{extra}\n")).unwrap_err().key;
    assert_eq!(
        key_of("bind = \"0.0.0.0:9443\"\nplain_http = true"),
        "console.plain_http"
    );
    assert_eq!(key_of("bind = \"localhost\""), "console.bind");
    assert_eq!(
        key_of("bind = \"127.0.0.1:9443\"\nauditors = [\"group:nobody\"]"),
        "console.auditors"
    );
    assert_eq!(
        key_of("bind = \"127.0.0.1:9443\"\nauditors = [\"Z99999\"]"),
        "console.auditors"
    );
    assert_eq!(
        key_of("bind = \"127.0.0.1:9443\"\nauditors = [\"no good\"]"),
        "console.auditors[0]"
    );
    // Loopback plain HTTP is allowed.
    assert!(load(&format!(
        "{GOOD}\n[console]\nbind = \"127.0.0.1:9443\"\nplain_http = true\n"
    ))
    .is_ok());
}

#[test]
fn break_glass_entries_load_and_their_mistakes_name_the_key() {
    let glass = |entry: &str| {
        let fhir_rules = "  [[route.allow]]\n  groups = [\"gp\"]\n  methods = [\"GET\"]\n";
        with(
            fhir_rules,
            0,
            &format!("{fhir_rules}  [[route.break_glass]]\n  {entry}\n"),
        )
    };
    let c = load(&glass("groups = [\"gp\"]\n  methods = [\"get\"]")).unwrap();
    assert_eq!(c.routes[0].break_glass[0].groups, ["gp"]);
    assert_eq!(c.routes[0].break_glass[0].methods, ["GET"]);
    let cases = [
        ("groups = [\"ed\"]", "route[0].break_glass[0].groups"),
        ("orgs = [\"RYR\"]", "route[0].break_glass[0].orgs"),
        ("orgs = [\"*\"]", "route[0].break_glass[0].orgs"),
        ("methods = [\"GET\"]", "route[0].break_glass[0]"),
        (
            "groups = [\"gp\"]\n  methods = [\"G T\"]",
            "route[0].break_glass[0].methods",
        ),
        ("groups = [\"gp\"]\n  reason = \"x\"", "route[0].break_glass[0].reason"),
    ];
    // A break-glass record must keep its reason: the record cap may not be tiny.
    let small = glass("groups = [\"gp\"]").replace("durability = \"flush\"", "max_record_bytes = \"2KiB\"");
    assert_eq!(load(&small).unwrap_err().key, "audit.max_record_bytes");
    for (entry, key) in cases {
        let e = load(&glass(entry)).expect_err(key);
        assert_eq!(e.key, key, "{e}");
        assert!(!e.to_string().contains('\n'), "one sentence: {e}");
    }
}

#[test]
fn alerts_default_and_their_mistakes_name_the_key() {
    assert_eq!(load(GOOD).unwrap().alerts, AlertSettings::default());
    let c = load(&format!("{GOOD}\n[alerts]\nbulk_floor = 20\nhistory = \"14d\"\n")).unwrap();
    assert_eq!(c.alerts.bulk_floor, 20);
    assert_eq!(c.alerts.history, Duration::from_secs(14 * 86400));
    for (line, key) in [
        ("bulk_multiplier = 0.5", "alerts.bulk_multiplier"),
        ("bulk_floor = 0", "alerts.bulk_floor"),
        ("history = \"10m\"", "alerts.history"),
        ("lookback = \"soon\"", "alerts.lookback"),
        ("tls_rejection_spike = 0", "alerts.tls_rejection_spike"),
        ("bulk_flor = 3", "alerts.bulk_flor"),
    ] {
        let e = load(&format!("{GOOD}\n[alerts]\n{line}\n")).expect_err(key);
        assert_eq!(e.key, key, "{e}");
    }
}
