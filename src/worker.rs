//! Worker threads, one per CPU by default (`listener.workers`): each serves its share of the
//! connections start to finish on its own single-threaded runtime, with its own upstream
//! pools (see `forward::Upstream`).
//!
//! Why not one work-stealing runtime: on a proxy every request is a chain of small wake-ups
//! (client socket, audit, upstream socket, client socket). Spread over a shared scheduler they
//! hop between threads, and each hop is a futex wake and a context switch; kept on one thread
//! they are plain function calls. A connection is given to the least busy worker when it is
//! accepted, and stays there.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

type Job = Pin<Box<dyn Future<Output = ()> + Send>>;

thread_local! {
    static INDEX: Cell<Option<usize>> = const { Cell::new(None) };
    static STOPPING: Cell<bool> = const { Cell::new(false) };
}

/// True while this worker drops what it still runs because the gateway stops (the drain
/// deadline passed): a request cut off now was cut off by the gateway, not by its client.
pub fn stopping() -> bool {
    STOPPING.with(Cell::get)
}

/// The worker this thread is, if it is one.
pub fn current() -> Option<usize> {
    INDEX.with(Cell::get)
}

/// Runs `f` as if on worker `i`, for tests of what worker tasks do.
#[cfg(test)]
pub(crate) fn as_worker<R>(i: usize, f: impl FnOnce() -> R) -> R {
    let was = INDEX.with(|c| c.replace(Some(i)));
    let r = f();
    INDEX.with(|c| c.set(was));
    r
}

/// The worker this thread is (0 off the worker threads), to pick per-worker resources.
pub fn index() -> usize {
    current().unwrap_or(0)
}

pub struct Workers {
    /// Each job, and whether it counts towards the worker's load.
    senders: Vec<mpsc::UnboundedSender<(Job, bool)>>,
    /// Jobs (connections) in progress on each worker.
    load: Arc<[AtomicUsize]>,
    /// Where the search for the least busy worker starts, so that ties take turns.
    next: AtomicUsize,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl Workers {
    /// Starts `n` worker threads, each running a current-thread runtime.
    pub fn start(n: usize) -> std::io::Result<Workers> {
        let load: Arc<[AtomicUsize]> = (0..n).map(|_| AtomicUsize::new(0)).collect();
        let mut senders = Vec::with_capacity(n);
        let mut threads = Vec::with_capacity(n);
        for i in 0..n {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
            let (tx, rx) = mpsc::unbounded_channel();
            let load = load.clone();
            let thread = std::thread::Builder::new()
                .name(format!("caregate-worker-{i}"))
                .spawn(move || run(i, runtime, rx, load))?;
            senders.push(tx);
            threads.push(thread);
        }
        Ok(Workers {
            senders,
            load,
            next: AtomicUsize::new(0),
            threads,
        })
    }

    /// Runs `job` on the worker with the fewest jobs in progress. The future is first polled
    /// there, so sockets it registers belong to that worker's runtime.
    pub fn spawn(&self, job: impl Future<Output = ()> + Send + 'static) {
        let n = self.senders.len();
        let start = self.next.fetch_add(1, Ordering::Relaxed);
        let i = (0..n)
            .map(|k| (start + k) % n)
            .min_by_key(|&i| self.load[i].load(Ordering::Relaxed))
            .unwrap_or(0);
        self.load[i].fetch_add(1, Ordering::Relaxed);
        if self.senders[i].send((Box::pin(job), true)).is_err() {
            // The worker is gone (only while stopping): the job is dropped unrun.
            self.load[i].fetch_sub(1, Ordering::Relaxed);
        }
    }

    /// Runs `job` on every worker, made for each by `make(index)`: a task that serves the
    /// worker itself rather than a connection, so it does not count towards its load.
    pub fn spawn_on_each<F>(&self, make: impl Fn(usize) -> F)
    where
        F: Future<Output = ()> + Send + 'static,
    {
        for (i, tx) in self.senders.iter().enumerate() {
            let _ = tx.send((Box::pin(make(i)), false));
        }
    }

    /// Stops the workers: jobs still running are dropped (their connections closed), and this
    /// returns once every worker thread has ended.
    pub async fn stop(mut self) {
        self.senders.clear();
        let threads = std::mem::take(&mut self.threads);
        let _ = tokio::task::spawn_blocking(move || {
            for t in threads {
                let _ = t.join();
            }
        })
        .await;
    }
}

fn run(
    i: usize,
    runtime: tokio::runtime::Runtime,
    mut rx: mpsc::UnboundedReceiver<(Job, bool)>,
    load: Arc<[AtomicUsize]>,
) {
    INDEX.with(|c| c.set(Some(i)));
    runtime.block_on(async move {
        tokio::spawn(timer_anchor());
        // Ends when the `Workers` is stopped or dropped; dropping the runtime then drops
        // whatever is still running.
        while let Some((job, counted)) = rx.recv().await {
            let done = counted.then(|| Done(load.clone(), i));
            tokio::spawn(async move {
                job.await;
                drop(done);
            });
        }
    });
    STOPPING.with(|c| c.set(true));
    drop(runtime);
}

/// A timer that is always due within this on every worker (see `timer_anchor`).
const TIMER_ANCHOR: Duration = Duration::from_secs(1);

/// Keeps something on this worker's timer wheel due within `TIMER_ANCHOR`.
///
/// tokio's time driver wakes its own thread (a `write` to the runtime's event fd, and a trip
/// through `epoll_wait` to read it) whenever a new timer falls due before everything already
/// registered. Every request arms timers of many seconds (the upstream response deadline,
/// hyper's head timeout) and drops them a millisecond later, so on a busy worker the wheel was
/// often empty and each request paid a needless syscall: 0.76 `write`s per request in `fsync`
/// mode, 0.15 with the anchor. A tick a second per worker is the price.
async fn timer_anchor() {
    let mut tick = tokio::time::interval(TIMER_ANCHOR);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
    }
}

/// Counts a job out when it ends, however it ends.
struct Done(Arc<[AtomicUsize]>, usize);

impl Drop for Done {
    fn drop(&mut self) {
        self.0[self.1].fetch_sub(1, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::task::Poll;

    /// `write` syscalls made by this thread so far.
    fn writes_by_this_thread() -> u64 {
        let io = std::fs::read_to_string("/proc/thread-self/io").expect("per-thread I/O accounting");
        io.lines()
            .find_map(|l| l.strip_prefix("syscw: "))
            .and_then(|n| n.trim().parse().ok())
            .expect("a syscw line")
    }

    /// Registers `timer` with the worker's time driver (its first poll), while it is not due.
    async fn register(mut timer: Pin<&mut tokio::time::Sleep>) {
        std::future::poll_fn(move |cx| {
            assert!(timer.as_mut().poll(cx).is_pending());
            Poll::Ready(())
        })
        .await;
    }

    /// A request arming a long deadline (and dropping it) must not make the worker wake itself
    /// while an earlier timer is pending, as one always is on a busy worker (its connections'
    /// idle and header timeouts).
    #[test]
    fn arming_a_long_deadline_does_not_wake_the_worker() {
        let workers = Workers::start(1).unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        workers.spawn(async move {
            // Pending throughout, and earlier than every deadline below.
            let earlier = tokio::time::sleep(Duration::from_secs(10));
            tokio::pin!(earlier);
            register(earlier.as_mut()).await;
            // The driver learns when it is next due only when it parks and runs its timers, and
            // this sleep ends after it has, with `earlier` on the wheel. (Waiting on the
            // worker's own anchor was a race: when the thread woke late, the anchor's first tick
            // and the sleep fell due in the same turn, the driver found no timer left pending,
            // and every deadline armed before it parked again woke it.)
            tokio::time::sleep(Duration::from_millis(1)).await;
            let before = writes_by_this_thread();
            for _ in 0..100 {
                let deadline = tokio::time::sleep(Duration::from_secs(30));
                tokio::pin!(deadline);
                // Registered, then unregistered as it drops.
                register(deadline.as_mut()).await;
            }
            let _ = tx.send(writes_by_this_thread() - before);
        });
        let writes = rx.recv_timeout(Duration::from_secs(20)).expect("the job ran");
        assert!(writes < 10, "arming 100 deadlines made {writes} writes");
        let rt = tokio::runtime::Builder::new_current_thread().build().unwrap();
        rt.block_on(workers.stop());
    }
}
