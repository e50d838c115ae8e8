use super::*;
use crate::config::{LimitOverride, RateLimits};
use bytes::Bytes;
use governor::clock::FakeRelativeClock;
use http_body_util::{BodyExt, StreamBody};

fn limit(rps: Option<f64>, burst: Option<u32>) -> ClassLimit {
    ClassLimit {
        requests_per_second: rps,
        burst,
        max_concurrent: None,
        bytes_per_second: None,
    }
}

fn cfg(classes: &[(Class, ClassLimit)]) -> RateLimits {
    RateLimits {
        classes: classes.iter().copied().collect(),
        overrides: Vec::new(),
    }
}

fn fake(cfg: &RateLimits) -> (Limits, FakeRelativeClock) {
    let clock = FakeRelativeClock::default();
    (Limits::with_clock(cfg, clock.clone()), clock)
}

#[test]
fn burst_beyond_limit_is_refused_with_retry_after_and_headers() {
    let (l, _clock) = fake(&cfg(&[(Class::Epr, limit(Some(50.0), Some(100)))]));
    for i in 0..100 {
        assert!(l.check("A81001", Class::Epr).is_ok(), "request {i} within burst");
    }
    let r = l.check("A81001", Class::Epr).expect_err("101st is over the burst");
    assert_eq!(r.retry_after, Duration::from_millis(20)); // one request per 1/50 s
    assert_eq!(r.retry_after_secs(), 1);
    assert_eq!(r.policy, "\"epr\";q=100;w=2");
    assert_eq!(r.state, "\"epr\";r=0;t=1");
}

#[test]
fn refills_after_the_fake_clock_advances() {
    let (l, clock) = fake(&cfg(&[(Class::Epr, limit(Some(2.0), Some(2)))]));
    assert!(l.check("A81001", Class::Epr).is_ok());
    assert!(l.check("A81001", Class::Epr).is_ok());
    let r = l.check("A81001", Class::Epr).expect_err("burst spent");
    assert_eq!(r.retry_after, Duration::from_millis(500));
    clock.advance(Duration::from_millis(499));
    assert!(l.check("A81001", Class::Epr).is_err());
    clock.advance(Duration::from_millis(1));
    assert!(l.check("A81001", Class::Epr).is_ok());
    clock.advance(Duration::from_secs(10));
    assert!(l.check("A81001", Class::Epr).is_ok());
    assert!(l.check("A81001", Class::Epr).is_ok());
    assert!(l.check("A81001", Class::Epr).is_err());
}

#[test]
fn burst_defaults_to_ceil_of_rate_and_slow_rates_round_retry_up() {
    let (l, _clock) = fake(&cfg(&[(Class::Other, limit(Some(0.4), None))]));
    assert!(l.check("X1", Class::Other).is_ok());
    let r = l.check("X1", Class::Other).expect_err("burst of 1");
    assert_eq!(r.retry_after, Duration::from_millis(2500));
    assert_eq!(r.retry_after_secs(), 3);
    assert_eq!(r.policy, "\"other\";q=1;w=3");
    assert_eq!(r.state, "\"other\";r=0;t=3");

    let (l, _clock) = fake(&cfg(&[(Class::Epr, limit(Some(2.5), None))]));
    for _ in 0..3 {
        assert!(l.check("X1", Class::Epr).is_ok());
    }
    assert!(l.check("X1", Class::Epr).is_err());
}

#[test]
fn overrides_apply_to_their_org_only() {
    let mut c = cfg(&[(Class::Image, limit(Some(1.0), Some(1)))]);
    c.overrides.push(LimitOverride {
        org: "RXC".into(),
        class: Class::Image,
        limit: limit(None, Some(3)),
    });
    // An override may also limit a class that has no table.
    c.overrides.push(LimitOverride {
        org: "RXC".into(),
        class: Class::Epr,
        limit: limit(Some(1.0), Some(1)),
    });
    let (l, _clock) = fake(&c);
    for _ in 0..3 {
        assert!(l.check("RXC", Class::Image).is_ok());
    }
    let r = l.check("RXC", Class::Image).expect_err("override burst 3");
    assert_eq!(r.policy, "\"image\";q=3;w=3");
    assert!(l.check("A81001", Class::Image).is_ok());
    assert!(l.check("A81001", Class::Image).is_err());
    assert!(l.check("RXC", Class::Epr).is_ok());
    assert!(l.check("RXC", Class::Epr).is_err());
    for _ in 0..1000 {
        assert!(l.check("A81001", Class::Epr).is_ok(), "epr has no table");
    }
}

#[test]
fn unlimited_class_never_refuses() {
    let (l, _clock) = fake(&cfg(&[(Class::Epr, limit(Some(1.0), Some(1)))]));
    for _ in 0..10_000 {
        assert!(l.check("A81001", Class::Other).is_ok());
        assert!(l.check("A81001", Class::Image).is_ok());
    }
    assert_eq!(l.len(), 0, "unlimited classes keep no state");
    // A burst with no rate limits nothing.
    let (l, _clock) = fake(&cfg(&[(Class::Epr, limit(None, Some(1)))]));
    for _ in 0..100 {
        assert!(l.check("A81001", Class::Epr).is_ok());
    }
}

#[test]
fn org_a_exhausted_while_org_b_passes() {
    let (l, _clock) = fake(&cfg(&[(Class::Epr, limit(Some(1.0), Some(5)))]));
    for _ in 0..5 {
        assert!(l.check("A81001", Class::Epr).is_ok());
    }
    assert!(l.check("A81001", Class::Epr).is_err());
    for _ in 0..5 {
        assert!(l.check("B82617", Class::Epr).is_ok());
    }
    assert!(l.check("B82617", Class::Epr).is_err());
}

#[test]
fn concurrency_slot_is_freed_on_drop() {
    let mut c = limit(None, None);
    c.max_concurrent = Some(2);
    let (l, _clock) = fake(&cfg(&[(Class::Image, c)]));
    let g1 = l.check("RXC", Class::Image).expect("first");
    let g2 = l.check("RXC", Class::Image).expect("second");
    let r = l.check("RXC", Class::Image).expect_err("third is over max_concurrent");
    assert_eq!(r.policy, "\"image-concurrency\";q=2");
    assert_eq!(r.state, "\"image-concurrency\";r=0;t=1");
    assert_eq!(r.retry_after_secs(), 1);
    assert!(
        l.check("A81001", Class::Image).is_ok(),
        "other orgs have their own slots"
    );
    drop(g1);
    let g3 = l.check("RXC", Class::Image).expect("slot freed by drop");
    drop((g2, g3));
    assert!(l.check("RXC", Class::Image).is_ok());
}

#[test]
fn rate_refusal_gives_the_concurrency_slot_back() {
    let mut c = limit(Some(1.0), Some(1));
    c.max_concurrent = Some(1);
    let (l, clock) = fake(&cfg(&[(Class::Image, c)]));
    drop(l.check("RXC", Class::Image).expect("first"));
    assert!(l
        .check("RXC", Class::Image)
        .expect_err("rate")
        .policy
        .starts_with("\"image\""));
    clock.advance(Duration::from_secs(1));
    let g = l
        .check("RXC", Class::Image)
        .expect("slot was not leaked by the refusal");
    drop(g);
}

#[test]
fn retain_recent_drops_idle_keys_of_100k_orgs() {
    let mut c = limit(Some(50.0), Some(100));
    c.max_concurrent = Some(8);
    let (l, clock) = fake(&cfg(&[(Class::Epr, c)]));
    let orgs: Vec<String> = (0..100_000).map(|i| format!("ORG{i:06}")).collect();
    for o in &orgs {
        assert!(l.check(o, Class::Epr).is_ok());
    }
    let held = l.check("KEEP", Class::Epr).expect("held grant");
    assert_eq!(l.len(), 2 * 100_001);
    l.retain_recent();
    // Rate state is recent; slots with nothing in flight are already like fresh ones.
    assert_eq!(l.len(), 100_001 + 1);
    clock.advance(Duration::from_secs(10));
    l.retain_recent();
    assert_eq!(l.len(), 1, "only the slot of the grant in flight stays");
    drop(held);
    l.retain_recent();
    assert!(l.is_empty());
    assert!(l.check("ORG000001", Class::Epr).is_ok());
}

#[test]
fn long_org_codes_work_as_keys() {
    let (l, _clock) = fake(&cfg(&[(Class::Epr, limit(Some(1.0), Some(1)))]));
    let long = "X".repeat(100);
    assert!(l.check(&long, Class::Epr).is_ok());
    assert!(l.check(&long, Class::Epr).is_err());
    assert!(l.check(&long[..99], Class::Epr).is_ok());
    assert!(l.check("", Class::Epr).is_ok());
}

#[test]
fn a_custom_store_is_used() {
    struct Refuse;
    impl RateStore for Refuse {
        fn check(&self, _: &str, _: Class, _: &RateQuota) -> Result<(), RateLimited> {
            Err(RateLimited {
                retry_after: Duration::from_millis(1500),
            })
        }
    }
    let l = Limits::with_store(&cfg(&[(Class::Epr, limit(Some(10.0), None))]), Arc::new(Refuse));
    let r = l.check("A81001", Class::Epr).expect_err("store refuses");
    assert_eq!(r.retry_after_secs(), 2);
    assert_eq!(r.policy, "\"epr\";q=10;w=1");
}

// === shaping ===

fn bandwidth(bytes_per_second: u64) -> RateLimits {
    let mut c = limit(None, None);
    c.bytes_per_second = Some(bytes_per_second);
    cfg(&[(Class::Image, c)])
}

/// A body of `frames` data frames of `size` bytes each.
fn body(frames: usize, size: usize) -> impl http_body::Body<Data = Bytes, Error = std::convert::Infallible> {
    let chunk = Bytes::from(vec![7u8; size]);
    StreamBody::new(futures_util::stream::iter(
        (0..frames).map(move |_| Ok(http_body::Frame::data(chunk.clone()))),
    ))
}

async fn drain<B: http_body::Body<Data = Bytes>>(b: B) -> usize
where
    B::Error: std::fmt::Debug,
{
    let mut b = std::pin::pin!(b);
    let mut n = 0;
    while let Some(f) = b.frame().await {
        if let Ok(d) = f.expect("frame").into_data() {
            n += d.len();
        }
    }
    n
}

#[tokio::test(start_paused = true)]
async fn shaped_body_takes_n_over_r_of_virtual_time() {
    const RATE: u64 = 1 << 20; // 1 MiB/s: bucket of 104,857 bytes
    let (l, _clock) = fake(&bandwidth(RATE));
    let g = l.check("RXC", Class::Image).expect("grant");
    let start = tokio::time::Instant::now();
    let n = drain(g.shape(body(640, 16 * 1024))).await; // 10 MiB
    let took = start.elapsed().as_secs_f64();
    assert_eq!(n, 10 << 20);
    // 10 s for 10 MiB, less the initial bucket (0.1 s).
    assert!((9.85..=9.95).contains(&took), "took {took}s");
}

#[tokio::test(start_paused = true)]
async fn frames_larger_than_the_bucket_pass_whole() {
    let (l, _clock) = fake(&bandwidth(100_000)); // bucket: 64 KiB minimum
    let g = l.check("RXC", Class::Image).expect("grant");
    let start = tokio::time::Instant::now();
    let n = drain(g.shape(body(4, 500_000))).await;
    assert_eq!(n, 2_000_000);
    let took = start.elapsed().as_secs_f64();
    // Each frame, and the end of the body, waits for the debt before it:
    // (2 MB - 64 KiB) / 100 kB/s.
    assert!((19.3..=19.4).contains(&took), "took {took}s");
}

#[tokio::test(start_paused = true)]
async fn connections_of_one_org_share_a_bucket_and_two_orgs_do_not() {
    const RATE: u64 = 1 << 20;
    let (l, _clock) = fake(&bandwidth(RATE));
    let l = Arc::new(l);
    let transfer = |org: &'static str| {
        let l = l.clone();
        tokio::spawn(async move {
            let g = l.check(org, Class::Image).expect("grant");
            let start = tokio::time::Instant::now();
            drain(g.shape(body(320, 16 * 1024))).await; // 5 MiB
            start.elapsed().as_secs_f64()
        })
    };
    // Two orgs at once: each has its own 1 MiB/s, so 5 MiB takes about 5 s.
    let (a, b) = tokio::join!(transfer("AAA"), transfer("BBB"));
    let (a, b) = (a.expect("task"), b.expect("task"));
    assert!((4.8..=5.1).contains(&a) && (4.8..=5.1).contains(&b), "{a} {b}");
    // Two connections of one org share 1 MiB/s: 10 MiB in about 10 s.
    let (a, b) = tokio::join!(transfer("AAA"), transfer("AAA"));
    let (a, b) = (a.expect("task"), b.expect("task"));
    assert!(a.max(b) > 9.6 && a.max(b) < 10.2, "{a} {b}");
}

#[tokio::test(start_paused = true)]
async fn unshaped_grant_passes_frames_at_once() {
    let (l, _clock) = fake(&cfg(&[]));
    let g = l.check("RXC", Class::Image).expect("grant");
    let start = tokio::time::Instant::now();
    assert_eq!(drain(g.shape(body(100, 1 << 20))).await, 100 << 20);
    assert_eq!(start.elapsed(), Duration::ZERO);
}

// === reload ===

#[test]
fn a_reload_keeps_the_rate_state_of_an_unchanged_quota_and_starts_a_changed_one_full() {
    let same = cfg(&[
        (Class::Epr, limit(Some(1.0), Some(2))),
        (Class::Other, limit(Some(1.0), Some(2))),
    ]);
    let (old, _clock) = fake(&same);
    for class in [Class::Epr, Class::Other] {
        assert!(old.check("A81001", class).is_ok());
        assert!(old.check("A81001", class).is_ok());
        assert!(old.check("A81001", class).is_err(), "{class:?}: burst spent");
    }

    let l = Limits::reloaded(&same, &old);
    assert!(l.check("A81001", Class::Epr).is_err(), "the spent burst stays spent");
    assert!(
        l.check("A81002", Class::Epr).is_ok(),
        "other organisations are untouched"
    );

    let changed = cfg(&[
        (Class::Epr, limit(Some(1.0), Some(2))),
        (Class::Other, limit(Some(1.0), Some(3))),
    ]);
    let l = Limits::reloaded(&changed, &l);
    assert!(l.check("A81001", Class::Epr).is_err(), "unchanged again: still spent");
    for i in 0..3 {
        assert!(l.check("A81001", Class::Other).is_ok(), "new quota, request {i}: full");
    }
    assert!(l.check("A81001", Class::Other).is_err());

    // Back to the first quota: its state was let go with the reload that dropped it.
    let l = Limits::reloaded(&same, &l);
    assert!(l.check("A81001", Class::Other).is_ok());
    assert_eq!(l.rates.key_count(), 3, "A81001 epr, A81002 epr, A81001 other");
}

#[test]
fn requests_in_flight_across_a_reload_count_against_the_new_limit() {
    let concurrent = |max| {
        let mut c = limit(None, None);
        c.max_concurrent = Some(max);
        cfg(&[(Class::Image, c)])
    };
    let (old, _clock) = fake(&concurrent(2));
    let first = old.check("RXC", Class::Image).expect("first");
    let second = old.check("RXC", Class::Image).expect("second");

    let l = Limits::reloaded(&concurrent(2), &old);
    assert!(l.check("RXC", Class::Image).is_err(), "two still in flight");
    drop(first);
    let third = l
        .check("RXC", Class::Image)
        .expect("one slot freed by a request of the old config");

    // Lowered to 1 with two in flight: nothing passes until both end.
    let l = Limits::reloaded(&concurrent(1), &l);
    drop(second);
    assert!(l.check("RXC", Class::Image).is_err(), "still one in flight");
    drop(third);
    assert!(l.check("RXC", Class::Image).is_ok());
}

#[tokio::test(start_paused = true)]
async fn a_reload_keeps_an_unchanged_bandwidth_shared_with_the_bodies_still_streaming() {
    const RATE: u64 = 1 << 20;
    let (old, _clock) = fake(&bandwidth(RATE));
    let streaming = old.check("RXC", Class::Image).expect("grant");
    let l = Limits::reloaded(&bandwidth(RATE), &old);
    let after = l.check("RXC", Class::Image).expect("grant");
    let start = tokio::time::Instant::now();
    // 5 MiB each; if the reload had made a second bucket, both would take 5 s, not 10.
    let (a, b) = tokio::join!(
        drain(streaming.shape(body(320, 16 * 1024))),
        drain(after.shape(body(320, 16 * 1024)))
    );
    assert_eq!(a + b, 10 << 20);
    let took = start.elapsed().as_secs_f64();
    assert!((9.6..10.2).contains(&took), "took {took}s");

    // A new rate gets a new bucket.
    let l = Limits::reloaded(&bandwidth(2 * RATE), &l);
    let g = l.check("RXC", Class::Image).expect("grant");
    let start = tokio::time::Instant::now();
    drain(g.shape(body(640, 16 * 1024))).await;
    let took = start.elapsed().as_secs_f64();
    assert!((4.8..5.1).contains(&took), "10 MiB at 2 MiB/s took {took}s");
}
