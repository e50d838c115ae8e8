//! HTML the one way the console writes it: every value that is not a literal of this module's
//! callers goes through [`esc`] (text and attribute values) or [`url`] (a path segment or a
//! query value), so a trail field holding `<script>` or `"` is shown, never run. Everything the
//! trail holds is hostile: a client chose its path, query, headers and certificate subject.

use std::fmt::{self, Display, Write as _};

/// HTML-escaped text, for element content and quoted attribute values alike.
pub struct Esc<'a>(pub &'a str);

pub fn esc(s: &str) -> Esc<'_> {
    Esc(s)
}

impl Display for Esc<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.0;
        while let Some(i) = rest.find(['&', '<', '>', '"', '\'']) {
            f.write_str(&rest[..i])?;
            f.write_str(match rest.as_bytes()[i] {
                b'&' => "&amp;",
                b'<' => "&lt;",
                b'>' => "&gt;",
                b'"' => "&quot;",
                _ => "&#39;",
            })?;
            rest = &rest[i + 1..];
        }
        f.write_str(rest)
    }
}

/// Percent-encoded for a URL's path segment or query value: only unreserved characters stay,
/// so the result is also safe inside an HTML attribute.
pub struct Url<'a>(pub &'a str);

pub fn url(s: &str) -> Url<'_> {
    Url(s)
}

impl Display for Url<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for b in self.0.bytes() {
            if b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~') {
                f.write_char(char::from(b))?;
            } else {
                write!(f, "%{b:02X}")?;
            }
        }
        Ok(())
    }
}

/// A query string's `name=value` pairs, percent-decoded (`+` is a space, as forms send it).
/// Invalid UTF-8 is replaced rather than refused: the value is only ever a filter.
pub fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|p| !p.is_empty()).map(|p| {
        let (k, v) = p.split_once('=').unwrap_or((p, ""));
        (decode(k), decode(v))
    })
}

fn decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                match std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
                {
                    Some(b) => {
                        out.push(b);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            b => out.push(b),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// The stylesheet, served as `/style.css` (the Content-Security-Policy allows no inline style).
pub const CSS: &str = r#"
body{font:15px/1.4 system-ui,sans-serif;margin:0;color:#1d2733;background:#f6f7f9}
header{background:#005eb8;color:#fff;padding:.6em 1.2em;display:flex;gap:1.5em;align-items:baseline}
header a{color:#fff;text-decoration:none;font-weight:600}
header .who{margin-left:auto;font-size:.85em;opacity:.9}
main{padding:1em 1.2em;max-width:78em}
h1{font-size:1.4em;margin:.3em 0 .6em}
h2{font-size:1.1em;margin:1.4em 0 .4em}
table{border-collapse:collapse;background:#fff;font-size:.9em}
th,td{border:1px solid #d8dde3;padding:.25em .5em;text-align:left;vertical-align:top}
th{background:#eef1f4}
td.num{text-align:right;font-variant-numeric:tabular-nums}
form.search{display:grid;grid-template-columns:repeat(4,minmax(10em,1fr));gap:.4em .8em;background:#fff;padding:.8em;border:1px solid #d8dde3}
form.search label{display:flex;flex-direction:column;font-size:.85em}
.deny{color:#a4000f;font-weight:600}
.alert{background:#fff4e5;border-left:4px solid #d5281b;padding:.5em .8em;margin:.4em 0}
.ok{color:#007f3b}.bad{color:#a4000f;font-weight:600}
.muted{color:#5f6b78;font-size:.85em}
svg{background:#fff;border:1px solid #d8dde3}
.bar{fill:#005eb8}.bar2{fill:#7c2855}.axis{stroke:#5f6b78}.lbl{font-size:10px;fill:#1d2733}
"#;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn escapes_what_html_would_run() {
        let s = esc(r#"<script>alert('x')</script>&"q""#).to_string();
        assert_eq!(s, "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;&amp;&quot;q&quot;");
    }

    #[test]
    fn url_keeps_only_unreserved() {
        assert_eq!(url("a b/\"<>?&=é").to_string(), "a%20b%2F%22%3C%3E%3F%26%3D%C3%A9");
    }

    #[test]
    fn form_pairs_decode() {
        let p: Vec<_> = form_pairs("patient=999+000%200018&org=&x=%zz&%E2%9C%93").collect();
        assert_eq!(
            p,
            [
                ("patient".into(), "999 000 0018".into()),
                ("org".into(), String::new()),
                ("x".into(), "%zz".into()),
                ("✓".into(), String::new()),
            ]
        );
    }
}
