//! STUB: per-(organisation, class) limits.

use crate::config::{self, Class};
use std::time::Duration;

/// All limits of one gateway.
pub struct Limits {}

/// A request that passed its limits. Holds the concurrency slot until dropped.
pub struct Grant {}

/// Why a request was refused, with the values of the 429's headers.
#[derive(Debug, Clone)]
pub struct Refusal {
    pub retry_after: Duration,
    /// `RateLimit-Policy` header value.
    pub policy: String,
    /// `RateLimit` header value.
    pub state: String,
}

impl Refusal {
    /// `Retry-After` in whole seconds, rounded up, at least 1.
    pub fn retry_after_secs(&self) -> u64 {
        (self.retry_after.as_secs_f64().ceil() as u64).max(1)
    }
}

impl Limits {
    pub fn new(_cfg: &config::RateLimits) -> Limits {
        Limits {}
    }

    /// Checks rate and concurrency for (org, class). Call only after policy allowed the request.
    pub fn check(&self, _org: &str, _class: Class) -> Result<Grant, Refusal> {
        Ok(Grant {})
    }
}

impl Grant {
    /// Wraps a body so that its data frames are shaped to the bandwidth limit (if any).
    pub fn shape<B>(&self, body: B) -> Shaped<B> {
        Shaped { inner: body }
    }
}

pin_project_lite::pin_project! {
    /// A body whose data frames wait for bandwidth tokens before they are passed on.
    pub struct Shaped<B> {
        #[pin]
        inner: B,
    }
}

impl<B: http_body::Body> http_body::Body for Shaped<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<http_body::Frame<B::Data>, B::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }
}
