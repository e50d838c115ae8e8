//! HTTP/1 framing the handler cannot see. hyper quietly resolves some ambiguous requests
//! (drops a `Content-Length` that sits beside `Transfer-Encoding`, folds duplicate identical
//! `Content-Length`s) before the request reaches us. A boundary proxy must refuse those, so this
//! IO wrapper reads the same bytes hyper reads, tracks message boundaries, and leaves one
//! verdict per request head for the pipeline to check, in order.
//!
//! The same wrapper keeps the deadlines only the socket can see: a request head (HTTP/1) or the
//! connection preface (HTTP/2) must arrive within `listener.header_timeout`, and a write the
//! client does not read for `listener.body_idle_timeout` ends the connection.

use std::collections::VecDeque;
use std::future::Future;
use std::io;
use std::mem::MaybeUninit;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// One verdict per request head, in arrival order; `broken` once framing was lost.
#[derive(Debug, Default)]
pub struct Verdicts {
    inner: Mutex<(VecDeque<Option<&'static str>>, bool)>,
}

impl Verdicts {
    /// The verdict for the next request: `Some(why)` to refuse it.
    pub fn next(&self) -> Option<&'static str> {
        let Ok(mut g) = self.inner.lock() else {
            return Some("framing could not be checked");
        };
        let v = g.0.pop_front().flatten();
        if g.1 {
            return Some("the request framing is ambiguous");
        }
        v
    }

    fn push(&self, v: Option<&'static str>) {
        if let Ok(mut g) = self.inner.lock() {
            g.0.push_back(v);
        }
    }

    fn break_framing(&self) {
        if let Ok(mut g) = self.inner.lock() {
            g.1 = true;
        }
    }
}

enum State {
    Head(Vec<u8>),
    Fixed(u64),
    ChunkSize(Vec<u8>),
    ChunkData(u64),
    ChunkDataEnd(u8),
    Trailers(Vec<u8>),
    /// Lost track (a head hyper will refuse anyway, or one too large): stop looking.
    Off,
}

/// The HTTP/2 client connection preface (RFC 9113 §3.4), without its SETTINGS frame.
const H2_PREFACE: usize = 24;

/// The deadlines a [`Guarded`] connection keeps.
#[derive(Debug, Clone, Copy)]
pub struct Deadlines {
    /// From a request head's first byte to its end (HTTP/1), or from the handshake to the
    /// connection preface (HTTP/2).
    pub header: Duration,
    /// How long a write may wait for the client to read.
    pub write_idle: Duration,
}

pin_project_lite::pin_project! {
    pub struct Guarded<IO> {
        #[pin]
        inner: IO,
        state: State,
        verdicts: Arc<Verdicts>,
        max_head: usize,
        header_timeout: Duration,
        // Armed while a head (or the HTTP/2 preface) is being read.
        deadline: Option<Pin<Box<tokio::time::Sleep>>>,
        // HTTP/2: bytes of the connection preface still to come.
        preface_left: usize,
        write_idle: Duration,
        // Since when writes have been pending (the client is not reading), and the timer that
        // ends it; made on the first blocked write, moved only when it fires early.
        write_blocked: Option<tokio::time::Instant>,
        write_deadline: Option<Pin<Box<tokio::time::Sleep>>>,
    }
}

impl<IO> Guarded<IO> {
    /// `http1`: track framing (HTTP/2 frames its own messages; the wrapper then only passes
    /// bytes through, once the preface came in time). Made inside the runtime: an HTTP/2
    /// connection's preface deadline starts now.
    pub fn new(inner: IO, http1: bool, max_head: usize, deadlines: Deadlines) -> (Self, Arc<Verdicts>) {
        let verdicts = Arc::new(Verdicts::default());
        let state = if http1 { State::Head(Vec::new()) } else { State::Off };
        let preface_left = if http1 { 0 } else { H2_PREFACE };
        let deadline = (!http1).then(|| Box::pin(tokio::time::sleep(deadlines.header)));
        let guarded = Guarded {
            inner,
            state,
            verdicts: verdicts.clone(),
            max_head,
            header_timeout: deadlines.header,
            deadline,
            preface_left,
            write_idle: deadlines.write_idle,
            write_blocked: None,
            write_deadline: None,
        };
        (guarded, verdicts)
    }
}

/// A write is pending: an error once writes have been for `idle` (else the timer wakes the
/// task by then, and the next poll of the write comes back here).
fn write_stalled(
    since: &mut Option<tokio::time::Instant>,
    timer: &mut Option<Pin<Box<tokio::time::Sleep>>>,
    idle: Duration,
    cx: &mut Context<'_>,
) -> Option<io::Error> {
    let now = tokio::time::Instant::now();
    let due = *since.get_or_insert(now) + idle;
    if now >= due {
        return Some(io::Error::new(
            io::ErrorKind::TimedOut,
            "the client read nothing within listener.body_idle_timeout",
        ));
    }
    let timer = timer.get_or_insert_with(|| Box::pin(tokio::time::sleep_until(due)));
    if timer.as_mut().poll(cx).is_ready() {
        timer.as_mut().reset(due);
        let _ = timer.as_mut().poll(cx);
    }
    None
}

/// Watches a write's result for a client that stopped reading.
macro_rules! watch_write {
    ($this:ident, $cx:ident, $res:expr) => {
        match $res {
            Poll::Pending => match write_stalled($this.write_blocked, $this.write_deadline, *$this.write_idle, $cx) {
                Some(e) => Poll::Ready(Err(e)),
                None => Poll::Pending,
            },
            ready => {
                *$this.write_blocked = None;
                ready
            }
        }
    };
}

impl<IO: AsyncRead> AsyncRead for Guarded<IO> {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        let before = buf.filled().len();
        let res = this.inner.poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &res {
            let new = &buf.filled()[before..];
            if *this.preface_left > 0 {
                // HTTP/2: the preface deadline holds until its bytes are in (hyper checks them).
                *this.preface_left = this.preface_left.saturating_sub(new.len());
                if *this.preface_left == 0 {
                    *this.deadline = None;
                }
                return res;
            }
            feed(this.state, this.verdicts, *this.max_head, new);
            let mid_head = matches!(this.state, State::Head(b) if !b.is_empty());
            match (mid_head, this.deadline.is_some()) {
                (true, false) => {
                    *this.deadline = Some(Box::pin(tokio::time::sleep(*this.header_timeout)));
                }
                (false, true) => *this.deadline = None,
                _ => {}
            }
        }
        if let Some(d) = this.deadline.as_mut() {
            if d.as_mut().poll(cx).is_ready() {
                return Poll::Ready(Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    "request head or HTTP/2 preface not received in time",
                )));
            }
        }
        res
    }
}

impl<IO: AsyncWrite> AsyncWrite for Guarded<IO> {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.project();
        watch_write!(this, cx, this.inner.poll_write(cx, buf))
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.project();
        watch_write!(this, cx, this.inner.poll_flush(cx))
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // The TLS close_notify is a write too.
        let this = self.project();
        watch_write!(this, cx, this.inner.poll_shutdown(cx))
    }
    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        let this = self.project();
        watch_write!(this, cx, this.inner.poll_write_vectored(cx, bufs))
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

fn feed(state: &mut State, verdicts: &Verdicts, max_head: usize, mut data: &[u8]) {
    while !data.is_empty() {
        match state {
            State::Off => return,
            State::Head(buf) => {
                // Skip the CRLFs some clients send between requests.
                if buf.is_empty() {
                    let skip = data.iter().take_while(|b| **b == b'\r' || **b == b'\n').count();
                    data = &data[skip..];
                    if data.is_empty() {
                        return;
                    }
                }
                // A head that arrives whole (nearly every one) is parsed where it lies; only the
                // start of a head split across reads is kept, to be parsed again with the rest.
                let old = buf.len();
                if old > 0 {
                    buf.extend_from_slice(data);
                }
                let whole: &[u8] = if old > 0 { buf } else { data };
                // Uninitialised: zeroing 128 headers would cost more than parsing most heads.
                let mut headers = [const { MaybeUninit::uninit() }; 128];
                let mut req = httparse::Request::new(&mut []);
                let parsed = req.parse_with_uninit_headers(whole, &mut headers);
                let judged = match parsed {
                    Ok(httparse::Status::Complete(n)) => Some((n, judge(&req))),
                    _ => None,
                };
                let len = whole.len();
                match (judged, parsed) {
                    (Some((n, (verdict, next))), _) => {
                        // hyper only checks its limit while a head is incomplete, so one that
                        // completes in the read that takes it past the limit gets through.
                        let verdict = match n > max_head {
                            true => Some("the request head is larger than listener.max_header_bytes"),
                            false => verdict,
                        };
                        verdicts.push(verdict);
                        data = &data[n - old..];
                        *state = next;
                    }
                    (None, Ok(httparse::Status::Partial)) if len <= max_head => {
                        if old == 0 {
                            buf.extend_from_slice(data);
                        }
                        return;
                    }
                    _ => {
                        // hyper refuses this head too; nothing after it is a request.
                        verdicts.break_framing();
                        *state = State::Off;
                        return;
                    }
                }
            }
            State::Fixed(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                data = &data[n as usize..];
                if *left == 0 {
                    *state = State::Head(Vec::new());
                }
            }
            State::ChunkSize(line) => {
                let Some(i) = data.iter().position(|b| *b == b'\n') else {
                    line.extend_from_slice(data);
                    if line.len() > 4096 {
                        verdicts.break_framing();
                        *state = State::Off;
                    }
                    return;
                };
                line.extend_from_slice(&data[..i]);
                data = &data[i + 1..];
                let size = match line.strip_suffix(b"\r") {
                    Some(l) => {
                        let hex = l.split(|b| *b == b';').next().unwrap_or(b"");
                        std::str::from_utf8(hex)
                            .ok()
                            .and_then(|h| u64::from_str_radix(h.trim_end_matches([' ', '\t']), 16).ok())
                    }
                    // A bare LF ends a chunk line only for lenient parsers: ambiguous.
                    None => None,
                };
                match size {
                    Some(0) => *state = State::Trailers(Vec::new()),
                    Some(n) => *state = State::ChunkData(n),
                    None => {
                        verdicts.break_framing();
                        *state = State::Off;
                        return;
                    }
                }
            }
            State::ChunkData(left) => {
                let n = (*left).min(data.len() as u64);
                *left -= n;
                data = &data[n as usize..];
                if *left == 0 {
                    *state = State::ChunkDataEnd(0);
                }
            }
            State::ChunkDataEnd(seen) => {
                let want: &[u8] = b"\r\n";
                if data[0] != want[*seen as usize] {
                    verdicts.break_framing();
                    *state = State::Off;
                    return;
                }
                data = &data[1..];
                *seen += 1;
                if *seen == 2 {
                    *state = State::ChunkSize(Vec::new());
                }
            }
            State::Trailers(line) => {
                let Some(i) = data.iter().position(|b| *b == b'\n') else {
                    line.extend_from_slice(data);
                    if line.len() > max_head {
                        verdicts.break_framing();
                        *state = State::Off;
                    }
                    return;
                };
                line.extend_from_slice(&data[..i]);
                data = &data[i + 1..];
                if line.as_slice() == b"\r" {
                    *state = State::Head(Vec::new());
                } else if line.last() != Some(&b'\r') {
                    verdicts.break_framing();
                    *state = State::Off;
                    return;
                } else {
                    line.clear();
                }
            }
        }
    }
}

/// The verdict on one head, and how its body is framed.
fn judge(req: &httparse::Request<'_, '_>) -> (Option<&'static str>, State) {
    let mut cl = Vec::new();
    let mut te = Vec::new();
    for h in req.headers.iter() {
        if h.name.eq_ignore_ascii_case("content-length") {
            cl.push(h.value);
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            te.push(h.value);
        }
    }
    if !cl.is_empty() && !te.is_empty() {
        return (
            Some("the request has both Content-Length and Transfer-Encoding"),
            State::Off,
        );
    }
    if cl.len() > 1 {
        return (Some("the request has more than one Content-Length"), State::Off);
    }
    if let Some(v) = cl.first() {
        return match std::str::from_utf8(v)
            .ok()
            .filter(|s| !s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
            .and_then(|s| s.parse::<u64>().ok())
        {
            Some(0) => (None, State::Head(Vec::new())),
            Some(n) => (None, State::Fixed(n)),
            None => (Some("the request has an invalid Content-Length"), State::Off),
        };
    }
    if !te.is_empty() {
        let chunked_last = te
            .last()
            .and_then(|v| std::str::from_utf8(v).ok())
            .and_then(|v| v.rsplit(',').next())
            .is_some_and(|v| v.trim().eq_ignore_ascii_case("chunked"));
        if te.len() > 1 || !chunked_last {
            return (Some("the request has an unsupported Transfer-Encoding"), State::Off);
        }
        return (None, State::ChunkSize(Vec::new()));
    }
    (None, State::Head(Vec::new()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(chunks: &[&[u8]]) -> Vec<Option<&'static str>> {
        let v = Verdicts::default();
        let mut s = State::Head(Vec::new());
        for c in chunks {
            feed(&mut s, &v, 65536, c);
        }
        let mut out = Vec::new();
        let g = v.inner.lock().unwrap();
        out.extend(g.0.iter().copied());
        if g.1 {
            out.push(Some("broken"));
        }
        out
    }

    #[test]
    fn keep_alive_sequences_stay_in_step() {
        let a = b"POST /a HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /b HTTP/1.1\r\nHost: x\r\n\r\n";
        assert_eq!(run(&[a]), vec![None, None]);
        let c = b"POST /a HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\nX-T: 1\r\n\r\nGET /b HTTP/1.1\r\n\r\n";
        // Byte at a time too.
        let bytes: Vec<&[u8]> = c.chunks(1).collect();
        assert_eq!(run(&bytes), vec![None, None]);
    }

    #[test]
    fn heads_split_anywhere_across_reads_are_judged_whole() {
        let two = b"GET /a HTTP/1.1\r\nHost: x\r\n\r\nPOST /b HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n";
        let second = Some("the request has both Content-Length and Transfer-Encoding");
        for cut in 1..two.len() {
            let (x, y) = two.split_at(cut);
            assert_eq!(run(&[x, y]), vec![None, second], "cut at {cut}");
        }
        // A head longer than the limit is refused, even when it arrives whole.
        let big = format!("GET /a HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(64));
        let v = Verdicts::default();
        let mut s = State::Head(Vec::new());
        feed(&mut s, &v, 32, big.as_bytes());
        assert!(v.next().is_some());
        // A partial head longer than the limit loses the framing.
        let v = Verdicts::default();
        let mut s = State::Head(Vec::new());
        feed(&mut s, &v, 16, b"GET /a-long-path HTTP/1.1\r\nHo");
        assert!(matches!(s, State::Off));
    }

    #[test]
    fn ambiguous_framing_is_flagged() {
        assert_eq!(
            run(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n"])[0],
            Some("the request has both Content-Length and Transfer-Encoding")
        );
        assert!(run(&[b"POST / HTTP/1.1\r\nContent-Length: 5\r\nContent-Length: 5\r\n\r\nhello"])[0].is_some());
        assert!(
            run(&[b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n5\nhello\n0\n\n"]).contains(&Some("broken"))
        );
    }
}
