//! Deterministic junk requests: parsing never panics and never records a bad number.

use super::*;

/// A small xorshift generator: deterministic junk without a property-testing crate.
struct Junk(u64);

impl Junk {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs[(self.next() % xs.len() as u64) as usize]
    }

    fn string(&mut self, pieces: &[&str]) -> String {
        let n = self.next() % 24;
        (0..n).map(|_| self.pick(pieces)).collect()
    }
}

#[test]
fn junk_never_panics_and_never_records_a_bad_number() {
    let pieces = [
        "/",
        "//",
        "%",
        "%2",
        "%24",
        "%7C",
        "%3A",
        "%2F",
        "%FF",
        "%C3",
        "%a9",
        "+",
        "?",
        "=",
        "&",
        "|",
        ",",
        ".",
        "..",
        "$",
        "_history",
        "_search",
        "metadata",
        "Patient",
        "Observation",
        "STU3",
        "studies",
        "series",
        "instances",
        "1.2.3",
        "9990000018",
        "9990000019",
        "999000001",
        "0",
        "é",
        "€",
        "\u{0}",
        "identifier=",
        "https://fhir.nhs.uk/Id/nhs-number|",
        "patient=",
        "Patient/",
        "StudyInstanceUID=",
        "0020000E=",
        "patient:Patient=",
        "subject.identifier=",
        " ",
        "\t",
        "x",
    ];
    let methods = [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::PATCH,
        Method::DELETE,
        Method::HEAD,
        Method::OPTIONS,
    ];
    let tokens = ["Bearer ", "bearer ", "Basic ", ""];
    let mut r = Junk(0x9e37_79b9_7f4a_7c15);
    for _ in 0..20_000 {
        let path = r.string(&pieces);
        let query = r.string(&pieces);
        let method = &methods[(r.next() % methods.len() as u64) as usize];
        let mut h = HeaderMap::new();
        let jwtish: String = (0..(r.next() % 4))
            .map(|_| {
                let mut s = b64(&r.string(&pieces));
                s.truncate((r.next() % 300) as usize);
                s + "."
            })
            .collect();
        let token = format!("{}{}", tokens[(r.next() % 4) as usize], jwtish);
        if let Ok(v) = HeaderValue::from_str(&token) {
            h.insert(AUTHORIZATION, v);
        }
        if let Ok(v) = HeaderValue::from_str(&r.string(&pieces)) {
            h.insert("ssp-traceid", v);
        }
        let q = (!r.next().is_multiple_of(3)).then_some(query.as_str());
        let f = parse(method, &path, q, &h);
        if let Some(n) = &f.clinical.nhs_number {
            assert!(nhs_number_valid(n), "{path:?} {q:?}");
        }
        if let Some(n) = &f.invalid_nhs_number {
            assert!(ten_digits(n) && !nhs_number_valid(n), "{path:?} {q:?}");
        }
        for uid in [&f.clinical.study_uid, &f.clinical.series_uid].into_iter().flatten() {
            assert!(is_uid(uid));
        }
    }
}
