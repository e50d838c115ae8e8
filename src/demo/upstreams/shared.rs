//! What both sample servers use: generated bodies, response helpers and query strings.

use super::CHUNK;
use bytes::Bytes;
use http::{header, Response, StatusCode};
use http_body::{Frame, SizeHint};
use http_body_util::{combinators::UnsyncBoxBody, BodyExt, Full};
use std::pin::Pin;
use std::task::{Context, Poll};

/// The response body of the sample servers.
pub type Body = UnsyncBoxBody<Bytes, hyper::Error>;

// === bodies ===

pub(in crate::demo) type Parts = Box<dyn Iterator<Item = Bytes> + Send>;

/// 64 KiB of printable filler, shared by every generated body.
pub(super) fn pattern() -> Bytes {
    let line = b"caregate sample payload 0123456789abcdefghijklmnopqrstuvwxyz\n";
    Bytes::from(line.iter().copied().cycle().take(CHUNK).collect::<Vec<u8>>())
}

/// `n` bytes of `pattern` in chunks of at most 64 KiB.
pub(super) fn fill(n: u64, pattern: &Bytes) -> impl Iterator<Item = Bytes> + Send + 'static {
    let pattern = pattern.clone();
    let chunk = pattern.len() as u64;
    let mut left = n;
    std::iter::from_fn(move || {
        if left == 0 || chunk == 0 {
            return None;
        }
        let take = left.min(chunk);
        left -= take;
        Some(pattern.slice(..take as usize))
    })
}

/// A body produced chunk by chunk from `parts`, `len` bytes in all (announced as
/// Content-Length by way of the exact size hint).
pub(in crate::demo) struct Generated {
    parts: Parts,
    left: u64,
}

impl Generated {
    pub(in crate::demo) fn new(len: u64, parts: impl Iterator<Item = Bytes> + Send + 'static) -> Self {
        Generated {
            parts: Box::new(parts),
            left: len,
        }
    }
}

impl http_body::Body for Generated {
    type Data = Bytes;
    type Error = hyper::Error;

    fn poll_frame(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<Option<Result<Frame<Bytes>, hyper::Error>>> {
        match self.parts.next() {
            Some(b) => {
                self.left = self.left.saturating_sub(b.len() as u64);
                Poll::Ready(Some(Ok(Frame::data(b))))
            }
            None => Poll::Ready(None),
        }
    }

    fn is_end_stream(&self) -> bool {
        self.left == 0
    }

    fn size_hint(&self) -> SizeHint {
        SizeHint::with_exact(self.left)
    }
}

pub(super) fn generated(len: u64, parts: impl Iterator<Item = Bytes> + Send + 'static, ct: &str) -> Response<Body> {
    let body = Generated::new(len, parts);
    respond(StatusCode::OK, ct, body.boxed_unsync())
}

pub(super) fn full(b: Bytes) -> Body {
    Full::new(b).map_err(|never| match never {}).boxed_unsync()
}

pub(super) fn plain(status: StatusCode, text: &'static str) -> Response<Body> {
    respond(
        status,
        "text/plain; charset=utf-8",
        full(Bytes::from_static(text.as_bytes())),
    )
}

pub(super) fn respond(status: StatusCode, content_type: &str, body: Body) -> Response<Body> {
    let mut resp = Response::new(body);
    *resp.status_mut() = status;
    if let Ok(v) = content_type.parse() {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

// === queries ===

/// The first value of `name` in a query string, percent-decoded (`+` is a space).
pub(super) fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|pair| {
        let (k, v) = pair.split_once('=').unwrap_or((pair, ""));
        (percent_decode(k) == name).then(|| percent_decode(v))
    })
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        let hex = |c: u8| (c as char).to_digit(16);
        match b[i] {
            b'%' if i + 2 < b.len() => match (hex(b[i + 1]), hex(b[i + 2])) {
                (Some(h), Some(l)) => {
                    out.push((h * 16 + l) as u8);
                    i += 3;
                    continue;
                }
                _ => out.push(b'%'),
            },
            b'+' => out.push(b' '),
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}
