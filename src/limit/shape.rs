//! Bandwidth shaping: a byte bucket per (organisation, class), and a body that waits for it.
//!
//! The bucket allows debt: a data frame is passed whole and its size taken from the bucket,
//! which may go negative; the *next* frame of any body sharing the bucket waits until the debt
//! is paid. Frames stay intact whatever their size, no frame is buffered here (back-pressure
//! reaches the sender unchanged), and the long-run rate is exact. The end of a body also waits
//! for its last frame's debt, so N bytes take (N - capacity) / rate, as a client measures it.

use bytes::Buf;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{ready, Context, Poll};
use std::time::Duration;
use tokio::time::{Instant, Sleep};

/// Smallest bucket: a burst below one typical HTTP/2 window would make every frame wait.
const MIN_CAPACITY: f64 = 64.0 * 1024.0;
/// A debt this small is paid: waiting for it would only spin the timer.
const PAID: f64 = -1.0;

/// A byte bucket refilled at `rate` bytes per second up to `capacity`.
#[derive(Debug)]
pub(crate) struct Bucket {
    rate: f64,
    capacity: f64,
    state: Mutex<Level>,
}

#[derive(Debug)]
struct Level {
    tokens: f64,
    at: Instant,
}

impl Bucket {
    /// Capacity is about 1/10 s of bytes (at least 64 KiB) so that bursts stay small.
    pub(crate) fn new(bytes_per_second: u64) -> Bucket {
        let rate = bytes_per_second.max(1) as f64;
        let capacity = (rate / 10.0).max(MIN_CAPACITY);
        Bucket {
            rate,
            capacity,
            state: Mutex::new(Level {
                tokens: capacity,
                at: Instant::now(),
            }),
        }
    }

    /// Whether this is the bucket `Bucket::new(bytes_per_second)` makes.
    pub(crate) fn has_rate(&self, bytes_per_second: u64) -> bool {
        self.rate == bytes_per_second.max(1) as f64
    }

    fn level(&self) -> std::sync::MutexGuard<'_, Level> {
        // A panic elsewhere while holding this lock cannot leave the numbers inconsistent.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn refill(&self, l: &mut Level, now: Instant) {
        let elapsed = now.saturating_duration_since(l.at).as_secs_f64();
        l.tokens = (l.tokens + elapsed * self.rate).min(self.capacity);
        l.at = now;
    }

    /// How long until the bucket's debt is paid, or `None` when it is not in debt.
    pub(crate) fn wait(&self, now: Instant) -> Option<Duration> {
        let mut l = self.level();
        self.refill(&mut l, now);
        if l.tokens >= PAID {
            return None;
        }
        // Whole microseconds, rounded up, so that waking finds the debt paid.
        let micros = (-l.tokens / self.rate * 1e6).ceil();
        Some(Duration::from_micros(micros.min(u64::MAX as f64) as u64))
    }

    /// Takes `n` bytes, going into debt if need be.
    pub(crate) fn take(&self, n: usize, now: Instant) {
        let mut l = self.level();
        self.refill(&mut l, now);
        l.tokens -= n as f64;
    }

    /// Full again: indistinguishable from a fresh bucket, so it may be forgotten.
    pub(crate) fn is_full(&self, now: Instant) -> bool {
        let mut l = self.level();
        self.refill(&mut l, now);
        l.tokens >= self.capacity
    }
}

pin_project_lite::pin_project! {
    /// A body whose data frames wait for bandwidth tokens before they are passed on.
    pub struct Shaped<B> {
        #[pin]
        inner: B,
        bucket: Option<Arc<super::Slot>>,
        // Boxed once and reset on later waits: `Sleep` is `!Unpin`, and a body is polled often.
        sleep: Option<Pin<Box<Sleep>>>,
        sleeping: bool,
    }
}

impl<B> Shaped<B> {
    /// `slot` is the (organisation, class) state whose bucket this body draws on; `None`
    /// (or a slot without a bucket) passes frames straight through.
    pub(crate) fn new(inner: B, slot: Option<Arc<super::Slot>>) -> Shaped<B> {
        Shaped {
            inner,
            bucket: slot.filter(|s| s.bucket.is_some()),
            sleep: None,
            sleeping: false,
        }
    }

    pub fn into_inner(self) -> B {
        self.inner
    }
}

impl<B: http_body::Body> http_body::Body for Shaped<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        let this = self.project();
        let Some(bucket) = this.bucket.as_ref().and_then(|s| s.bucket.as_ref()) else {
            return this.inner.poll_frame(cx);
        };
        loop {
            if *this.sleeping {
                if let Some(sleep) = this.sleep.as_mut() {
                    ready!(sleep.as_mut().poll(cx));
                }
                *this.sleeping = false;
            }
            let now = Instant::now();
            match bucket.wait(now) {
                None => break,
                Some(d) => {
                    let deadline = now + d;
                    match this.sleep.as_mut() {
                        Some(s) => s.as_mut().reset(deadline),
                        None => *this.sleep = Some(Box::pin(tokio::time::sleep_until(deadline))),
                    }
                    *this.sleeping = true;
                }
            }
        }
        let frame = ready!(this.inner.poll_frame(cx));
        if let Some(Ok(f)) = &frame {
            if let Some(data) = f.data_ref() {
                bucket.take(data.remaining(), Instant::now());
            }
        }
        Poll::Ready(frame)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
