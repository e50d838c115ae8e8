//! The HTTP/1 framing guard (`framing::h1::Guarded`) over arbitrary inbound bytes.
//!
//! Input: one byte that seeds how the stream is cut into reads, then the stream. The same
//! stream is read through the guard twice, whole and cut into reads; properties:
//! - no panic, and the guard passes every byte through unchanged;
//! - the verdicts do not depend on how the bytes were cut into reads (a head split across
//!   reads is judged whole), as far as the limits allow: `-max_len` stays under `max_head`
//!   and the 4096-byte chunk-line limit, so they never bind.
#![no_main]

use caregate::framing::h1::{Deadlines, Guarded};
use libfuzzer_sys::fuzz_target;
use std::pin::Pin;
use std::sync::OnceLock;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, ReadBuf};

const MAX_HEAD: usize = 64 * 1024;

/// An in-memory stream that hands out its bytes in the given read sizes.
struct Chunked<'a> {
    data: &'a [u8],
    sizes: Vec<usize>,
    next: usize,
}

impl AsyncRead for Chunked<'_> {
    fn poll_read(mut self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<std::io::Result<()>> {
        let size = self.sizes.get(self.next).copied().unwrap_or(usize::MAX);
        self.next += 1;
        let n = size.min(self.data.len()).min(buf.remaining());
        buf.put_slice(&self.data[..n]);
        self.data = &self.data[n..];
        Poll::Ready(Ok(()))
    }
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
            .expect("runtime")
    })
}

/// Reads the whole stream through the guard; returns what came out and the verdicts.
fn run(data: &[u8], sizes: Vec<usize>) -> (Vec<u8>, Vec<Option<&'static str>>) {
    let inner = Chunked { data, sizes, next: 0 };
    let deadlines = Deadlines {
        header: Duration::from_secs(10),
        write_idle: Duration::from_secs(10),
    };
    let (mut guarded, verdicts) = Guarded::new(inner, true, MAX_HEAD, deadlines);
    let out = runtime().block_on(async {
        let mut out = Vec::new();
        let mut buf = [0u8; 8192];
        loop {
            let n = guarded.read(&mut buf).await.expect("in-memory read");
            if n == 0 {
                break out;
            }
            out.extend_from_slice(&buf[..n]);
        }
    });
    // A request head is at least 16 bytes ("GET / HTTP/1.1\n\n"): no more verdicts than that.
    let vs = (0..data.len() / 8 + 2).map(|_| verdicts.next()).collect();
    (out, vs)
}

fuzz_target!(|input: &[u8]| {
    let Some((&seed, data)) = input.split_first() else {
        return;
    };
    if data.len() >= 4000 {
        return; // keeps the limits out of play (see above)
    }
    let (out, whole) = run(data, vec![usize::MAX]);
    assert_eq!(out, data, "the guard changed the bytes");

    // Read sizes 1..=16 from a small LCG seeded by the first byte.
    let mut x = u32::from(seed) | 1;
    let sizes = (0..data.len())
        .map(|_| {
            x = x.wrapping_mul(1_103_515_245).wrapping_add(12_345);
            1 + (x >> 16) as usize % 16
        })
        .collect();
    let (out, cut) = run(data, sizes);
    assert_eq!(out, data, "the guard changed the bytes (cut reads)");
    assert_eq!(whole, cut, "verdicts differ between whole and cut reads");
});
