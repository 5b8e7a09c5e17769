//! Bounded serving for the agent's listeners (the webhook and the control socket): a fixed
//! pool of workers, a cap on open connections, one deadline per request, and a backoff when
//! `accept` fails for lack of descriptors or memory (rather than a busy loop).

use std::io::{Read, Write};
use std::net::TcpStream;
use std::os::unix::net::UnixStream;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, PoisonError, mpsc};
use std::time::{Duration, Instant};

/// How much one listener takes on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Threads serving requests.
    pub workers: usize,
    /// Connections open at once (being served or waiting for a worker); one more is answered
    /// "busy" by the accepting thread and closed.
    pub connections: usize,
    /// From accept to the whole request read: a client that trickles its request is cut off.
    pub deadline: Duration,
}

/// The webhook's limits: 16 workers, 64 connections, 10 s per request.
pub const WEBHOOK_LIMITS: Limits = Limits {
    workers: 16,
    connections: 64,
    deadline: Duration::from_secs(10),
};

/// The control socket's limits: 16 workers, 64 connections, 10 s to send the request (and
/// 10 s to read the answer).
pub const CONTROL_LIMITS: Limits = WEBHOOK_LIMITS;

/// The first wait after `accept` fails for lack of resources; it doubles up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(10);
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);

/// Counters of both listeners, for the metrics (`dso_listener_*`, `dso_webhook_*`).
#[derive(Debug, Default)]
pub struct ListenerStats {
    /// Webhook requests refused (any reason, replays included).
    pub webhook_rejected: AtomicU64,
    /// Of those, how many were not written to the audit trail (rate limit).
    pub webhook_rejections_unaudited: AtomicU64,
    /// Webhook requests refused as replays (409).
    pub webhook_replays: AtomicU64,
    /// Connections answered "busy" because the cap was reached.
    pub webhook_connections_refused: AtomicU64,
    pub control_connections_refused: AtomicU64,
    /// Times `accept` failed for lack of descriptors or memory (each followed by a wait).
    pub accept_backoffs: AtomicU64,
    /// Rotations the socket's group asked for too soon (rate limit).
    pub group_rotations_refused: AtomicU64,
    /// Requests whose handler panicked (the connection was dropped, the worker kept serving).
    pub handler_panics: AtomicU64,
}

pub fn bump(c: &AtomicU64) {
    c.fetch_add(1, Ordering::Relaxed);
}

/// Whether an `accept` error means "out of descriptors or memory": waiting helps, retrying at
/// once only spins.
pub fn is_resource_exhaustion(e: &std::io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(libc::EMFILE | libc::ENFILE | libc::ENOBUFS | libc::ENOMEM)
    )
}

/// The accept loop: `accept` until it yields `None` (never, for a real listener); a connection
/// goes to `dispatch`; an error of resource exhaustion waits (`sleep`) with a doubling backoff,
/// reset by the next success; other errors (a peer that reset before accept) are skipped.
pub fn accept_loop<C>(
    mut accept: impl FnMut() -> Option<std::io::Result<C>>,
    mut sleep: impl FnMut(Duration),
    mut dispatch: impl FnMut(C),
    stats: &ListenerStats,
) {
    let mut backoff = FIRST_BACKOFF;
    while let Some(res) = accept() {
        match res {
            Ok(c) => {
                backoff = FIRST_BACKOFF;
                dispatch(c);
            }
            Err(e) if is_resource_exhaustion(&e) => {
                bump(&stats.accept_backoffs);
                sleep(backoff);
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
            Err(_) => {}
        }
    }
}

/// Serves connections from `accept` with `limits`: `handle(conn, deadline)` on one of
/// `limits.workers` threads, `refuse(conn)` on the accepting thread when `limits.connections`
/// are already open (it must not block: write what fits, then drop). Returns when `accept`
/// yields `None`.
///
/// A panic in `handle` (a bug) is contained: that connection is dropped, counted in
/// `handler_panics`, and the worker goes on serving (issue 14 point 14: a panic in one
/// connection must not take the agent down).
pub fn serve<C: Send + 'static>(
    accept: impl FnMut() -> Option<std::io::Result<C>>,
    limits: Limits,
    handle: impl Fn(C, Instant) + Send + Sync + 'static,
    refuse: impl Fn(C),
    stats: &Arc<ListenerStats>,
) {
    let open = Arc::new(AtomicUsize::new(0));
    // Capacity = the connection cap: a send never blocks the accepting thread.
    let (tx, rx) = mpsc::sync_channel::<(C, Instant)>(limits.connections.max(1));
    let rx = Arc::new(Mutex::new(rx));
    let handle = Arc::new(handle);
    for _ in 0..limits.workers.max(1) {
        let (rx, open, handle) = (rx.clone(), open.clone(), handle.clone());
        let stats = stats.clone();
        std::thread::spawn(move || {
            loop {
                let next = rx.lock().unwrap_or_else(PoisonError::into_inner).recv();
                let Ok((conn, deadline)) = next else { return };
                let run = std::panic::AssertUnwindSafe(|| handle(conn, deadline));
                if std::panic::catch_unwind(run).is_err() {
                    bump(&stats.handler_panics);
                }
                open.fetch_sub(1, Ordering::SeqCst);
            }
        });
    }
    accept_loop(
        accept,
        std::thread::sleep,
        |conn| {
            if open.load(Ordering::SeqCst) >= limits.connections {
                refuse(conn);
                return;
            }
            open.fetch_add(1, Ordering::SeqCst);
            if let Err(
                mpsc::TrySendError::Full((c, _)) | mpsc::TrySendError::Disconnected((c, _)),
            ) = tx.try_send((conn, Instant::now() + limits.deadline))
            {
                open.fetch_sub(1, Ordering::SeqCst);
                refuse(c);
            }
        },
        stats,
    );
}

/// A stream whose reads and writes all end by one deadline: each call gets the time that is
/// left as its timeout, so a client sending (or reading) a byte at a time cannot stretch a
/// request past it.
pub struct Deadlined<'a, S> {
    inner: &'a S,
    deadline: Instant,
}

impl<'a, S> Deadlined<'a, S> {
    pub fn new(inner: &'a S, deadline: Instant) -> Self {
        Deadlined { inner, deadline }
    }

    fn left(&self) -> std::io::Result<Duration> {
        let left = self.deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                "request deadline passed",
            ));
        }
        Ok(left)
    }
}

macro_rules! deadlined_io {
    ($t:ty) => {
        impl Read for Deadlined<'_, $t> {
            fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
                self.inner.set_read_timeout(Some(self.left()?))?;
                (&mut &*self.inner).read(buf)
            }
        }
        impl Write for Deadlined<'_, $t> {
            fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
                self.inner.set_write_timeout(Some(self.left()?))?;
                (&mut &*self.inner).write(buf)
            }
            fn flush(&mut self) -> std::io::Result<()> {
                (&mut &*self.inner).flush()
            }
        }
    };
}
deadlined_io!(TcpStream);
deadlined_io!(UnixStream);

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 14 item 3: when `accept` fails with EMFILE the loop waits, doubling up to 1 s,
    /// instead of spinning; a success resets the wait; other errors are skipped without one.
    #[test]
    fn accept_backs_off_on_emfile_and_resets_after_a_success() {
        let err = |n| Some(Err(std::io::Error::from_raw_os_error(n)));
        let mut script = vec![
            err(libc::EMFILE),
            err(libc::EMFILE),
            err(libc::ENFILE),
            err(libc::EMFILE),
            err(libc::EMFILE),
            err(libc::EMFILE),
            err(libc::EMFILE),
            err(libc::EMFILE),
            err(libc::EMFILE),
            Some(Ok(7)),
            err(libc::ECONNABORTED),
            err(libc::EMFILE),
            None,
        ]
        .into_iter();
        let mut slept = Vec::new();
        let mut served = Vec::new();
        let stats = ListenerStats::default();
        accept_loop(
            || script.next().flatten(),
            |d| slept.push(d.as_millis() as u64),
            |c| served.push(c),
            &stats,
        );
        assert_eq!(slept, vec![10, 20, 40, 80, 160, 320, 640, 1000, 1000, 10]);
        assert_eq!(served, vec![7]);
        assert_eq!(stats.accept_backoffs.load(Ordering::Relaxed), 10);
    }

    /// Issue 14 point 14: a handler that panics (a bug reached by one request) loses that
    /// connection only; the same worker serves the next one, and the panic is counted.
    #[test]
    fn a_panicking_handler_loses_one_connection_and_the_worker_serves_on() {
        let mut conns = vec![1u32, 2, 3].into_iter();
        let (tx, rx) = mpsc::channel();
        let tx = Mutex::new(tx);
        let stats = Arc::new(ListenerStats::default());
        let limits = Limits {
            workers: 1,
            connections: 8,
            deadline: Duration::from_secs(10),
        };
        serve(
            || conns.next().map(Ok),
            limits,
            move |c, _| {
                if c == 2 {
                    panic!("a bug reached by request {c}");
                }
                let _ = tx.lock().unwrap().send(c);
            },
            |_| {},
            &stats,
        );
        let got: Vec<u32> = (0..2)
            .map(|_| rx.recv_timeout(Duration::from_secs(30)).unwrap())
            .collect();
        assert_eq!(got, [1, 3]);
        assert_eq!(stats.handler_panics.load(Ordering::SeqCst), 1);
    }
}
