//! The borrowed view of a line that the filters are tested on, read in one pass before
//! anything is copied. What a filter looks for inside lists (`nhs_numbers`, `patient_ids`,
//! `study_uids`) and the client's request id are matched while the line is read and never
//! stored, so the view stays small whatever a record names: it is made for every line.

use std::borrow::Cow;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::filters::Patient;

/// A string borrowed from the line unless it holds JSON escapes. (`Cow<str>` always copies
/// through serde's derive, and `&str` fails on escapes.)
pub(super) struct Str<'a>(pub(super) Cow<'a, str>);

impl<'de: 'a, 'a> Deserialize<'de> for Str<'a> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Str<'a>, D::Error> {
        struct V;
        impl<'de> Visitor<'de> for V {
            type Value = Str<'de>;
            fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
                f.write_str("a string")
            }
            fn visit_borrowed_str<E>(self, v: &'de str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Borrowed(v)))
            }
            fn visit_str<E>(self, v: &str) -> Result<Str<'de>, E> {
                Ok(Str(Cow::Owned(v.to_owned())))
            }
        }
        d.deserialize_str(V)
    }
}

impl std::ops::Deref for Str<'_> {
    type Target = str;
    fn deref(&self) -> &str {
        &self.0
    }
}

/// What the filters look for that the view does not keep.
#[derive(Clone, Copy, Default)]
pub(super) struct Wanted<'w> {
    pub(super) patient: Option<&'w Patient>,
    pub(super) study: Option<&'w str>,
    pub(super) client_request_id: Option<&'w str>,
}

/// What every line is filtered on.
pub(super) struct Envelope<'a> {
    pub(super) seq: u64,
    pub(super) time: Str<'a>,
    pub(super) event: Str<'a>,
    pub(super) request_id: Option<Str<'a>>,
    pub(super) route: Option<Str<'a>>,
    pub(super) decision: Option<Str<'a>>,
    pub(super) action: Option<Str<'a>>,
    /// `client.org`.
    pub(super) org: Option<Str<'a>>,
    /// Whether the record names the wanted patient, study and client request id (true for
    /// each not wanted).
    patient: bool,
    study: bool,
    client_request_id: bool,
}

impl<'a> Envelope<'a> {
    /// Reads a line, matching what is `wanted` on the way.
    pub(super) fn read(line: &'a [u8], wanted: Wanted<'_>) -> serde_json::Result<Envelope<'a>> {
        let mut de = serde_json::Deserializer::from_slice(line);
        let env = wanted.deserialize(&mut de)?;
        de.end()?;
        Ok(env)
    }

    /// Whether everything wanted was found.
    pub(super) fn named_all(&self) -> bool {
        self.patient && self.study && self.client_request_id
    }
}

#[derive(Deserialize)]
struct EnvClient<'a> {
    #[serde(borrow, default)]
    org: Option<Str<'a>>,
}

impl<'de> DeserializeSeed<'de> for Wanted<'_> {
    type Value = Envelope<'de>;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Envelope<'de>, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Wanted<'_> {
    type Value = Envelope<'de>;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("an audit record")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Envelope<'de>, M::Error> {
        fn once<T, E: de::Error>(slot: &mut Option<T>, v: T, name: &'static str) -> Result<(), E> {
            match slot.replace(v) {
                Some(_) => Err(E::duplicate_field(name)),
                None => Ok(()),
            }
        }
        let (mut seq, mut time, mut event) = (None, None, None);
        let (mut request_id, mut route, mut decision, mut action, mut org) = (None, None, None, None, None);
        let mut client_request_id: Option<Str<'de>> = None;
        let mut clinical = None;
        let wants_clinical = self.patient.is_some() || self.study.is_some();
        // Keys matched here rather than through a derived identifier: this runs for every
        // member of every line.
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match &*key {
                "seq" => once(&mut seq, map.next_value::<u64>()?, "seq")?,
                "time" => once(&mut time, map.next_value()?, "time")?,
                "event" => once(&mut event, map.next_value()?, "event")?,
                "request_id" => once(&mut request_id, map.next_value()?, "request_id")?,
                "client_request_id" => once(&mut client_request_id, map.next_value()?, "client_request_id")?,
                "route" => once(&mut route, map.next_value()?, "route")?,
                "decision" => once(&mut decision, map.next_value()?, "decision")?,
                "action" => once(&mut action, map.next_value()?, "action")?,
                "client" => {
                    let client: EnvClient<'de> = map.next_value()?;
                    once(&mut org, client.org, "client")?;
                }
                "clinical" if wants_clinical => {
                    once(&mut clinical, map.next_value_seed(Clinical(self))?, "clinical")?;
                }
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        let (patient, study) = clinical.unwrap_or_default();
        Ok(Envelope {
            seq: seq.ok_or_else(|| de::Error::missing_field("seq"))?,
            time: time.ok_or_else(|| de::Error::missing_field("time"))?,
            event: event.ok_or_else(|| de::Error::missing_field("event"))?,
            request_id,
            route,
            decision,
            action,
            org: org.flatten(),
            patient: self.patient.is_none() || patient,
            study: self.study.is_none() || study,
            client_request_id: self
                .client_request_id
                .is_none_or(|w| client_request_id.is_some_and(|c| *c == *w)),
        })
    }
}

/// The `clinical` member, read for whether it names the wanted patient and study.
struct Clinical<'w>(Wanted<'w>);

impl<'de> DeserializeSeed<'de> for Clinical<'_> {
    type Value = (bool, bool);
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<(bool, bool), D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for Clinical<'_> {
    type Value = (bool, bool);

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("the clinical facts of a request")
    }

    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<(bool, bool), M::Error> {
        let Wanted { patient, study, .. } = self.0;
        let (mut named_patient, mut named_study) = (false, false);
        while let Some(key) = map.next_key::<Str<'de>>()? {
            match (&*key, patient, study) {
                ("nhs_number", Some(p), _) => named_patient |= p.is(&map.next_value::<Str<'de>>()?, false),
                ("nhs_numbers", Some(p), _) => named_patient |= map.next_value_seed(AnyOf(|n: &str| p.is(n, false)))?,
                ("patient_ids", Some(p), _) => {
                    named_patient |= map.next_value_seed(AnyOf(|id: &str| p.is(id, true)))?
                }
                ("study_uid", _, Some(s)) => named_study |= *map.next_value::<Str<'de>>()? == *s,
                ("study_uids", _, Some(s)) => named_study |= map.next_value_seed(AnyOf(|u: &str| u == s))?,
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok((named_patient, named_study))
    }
}

/// A list of strings, read for whether any is the one wanted.
struct AnyOf<F>(F);

impl<'de, F: Fn(&str) -> bool> DeserializeSeed<'de> for AnyOf<F> {
    type Value = bool;
    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<bool, D::Error> {
        d.deserialize_seq(self)
    }
}

impl<'de, F: Fn(&str) -> bool> Visitor<'de> for AnyOf<F> {
    type Value = bool;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a list of strings")
    }

    fn visit_seq<S: SeqAccess<'de>>(self, mut seq: S) -> Result<bool, S::Error> {
        let mut any = false;
        while let Some(s) = seq.next_element::<Str<'de>>()? {
            any |= (self.0)(&s);
        }
        Ok(any)
    }
}

/// The record's `hash`, from where SPEC §5 puts it: the line's last member, `"hash":"<64
/// hex>"}`. Read only for export (the AuditEvent id), so the loop does not parse it.
pub(super) fn line_hash(line: &[u8]) -> Option<&str> {
    let rest = line.strip_suffix(b"\"}")?;
    let (head, hash) = rest.split_at_checked(rest.len().checked_sub(64)?)?;
    if !head.ends_with(b"\"hash\":\"") || !hash.iter().all(u8::is_ascii_hexdigit) {
        return None;
    }
    std::str::from_utf8(hash).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lists_are_matched_as_read() {
        let line = br#"{"seq":7,"time":"2026-11-22T05:00:00.000001Z","event":"access","request_id":"r",
            "client_request_id":"c\"1","client":{"org":"A81001","ip":"10.0.0.1"},
            "clinical":{"nhs_number":"9990000034","nhs_numbers":["9990000034","9990000042"],
            "patient_ids":["https://x.example/mrn|M1","PAT-7"],"study_uids":["1.2","1.3"],"token":{"x":1}},
            "prev":"0","hash":"1"}"#;
        let read = |patient: Option<&str>, study: Option<&str>, client: Option<&str>| {
            let p = patient.map(Patient::new);
            let wanted = Wanted {
                patient: p.as_ref(),
                study,
                client_request_id: client,
            };
            let env = Envelope::read(line, wanted).unwrap();
            assert_eq!(
                (env.seq, &*env.event, env.org.as_deref()),
                (7, "access", Some("A81001"))
            );
            env.named_all()
        };
        assert!(read(None, None, None));
        assert!(read(Some("999 000 0042"), None, None));
        assert!(read(Some("M1"), Some("1.3"), Some("c\"1")));
        assert!(read(Some("https://x.example/mrn|M1"), None, None));
        assert!(!read(Some("9990000018"), None, None));
        assert!(!read(None, Some("1.4"), None));
        assert!(!read(None, None, Some("c")));
        // A record without the member does not name what is wanted.
        let bare = br#"{"seq":1,"time":"t","event":"complete","request_id":"r"}"#;
        let p = Patient::new("9990000034");
        let env = Envelope::read(
            bare,
            Wanted {
                patient: Some(&p),
                ..Wanted::default()
            },
        )
        .unwrap();
        assert!(!env.named_all());
        assert!(Envelope::read(br#"{"seq":1,"time":"t"}"#, Wanted::default()).is_err());
        assert!(Envelope::read(br#"{"seq":1,"seq":2,"time":"t","event":"e"}"#, Wanted::default()).is_err());
    }

    #[test]
    fn hash_is_the_last_member() {
        let h = "ab".repeat(32);
        let line = format!(r#"{{"seq":1,"prev":"{}","hash":"{h}"}}"#, "0".repeat(64));
        assert_eq!(line_hash(line.as_bytes()), Some(h.as_str()));
        assert_eq!(line_hash(br#"{"hash":"ab"}"#), None);
        let late = format!(r#"{{"hash":"{h}","x":1}}"#);
        assert_eq!(line_hash(late.as_bytes()), None);
        assert_eq!(line_hash(b""), None);
    }
}
