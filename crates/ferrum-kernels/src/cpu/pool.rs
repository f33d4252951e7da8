//! A small persistent worker pool for fork-join loops.
//!
//! `par_for(n, f)` runs `f(0)..f(n-1)` on the calling thread plus the pool's
//! workers and returns when every call has finished. Decode issues ~170 small
//! matvecs per token, so the per-call overhead matters more than anything else:
//! workers spin for a short while after each job (a new job is picked up in
//! well under a microsecond) and only then park.
//!
//! Protocol. One `state` word holds `epoch << 33 | closed << 32 | active`.
//! The submitter writes the job, resets the index counter and publishes a new
//! epoch (closed = 0, active = 0). A worker joins by a CAS that increments
//! `active` while the epoch is the one it saw and the job is not closed; only a
//! joined worker may read the job. When the caller runs out of indices it sets
//! `closed` (no more joins) and waits for `active` to drop to zero, so the
//! borrowed closure is never used after `par_for` returns.

use std::any::Any;
use std::cell::{Cell, UnsafeCell};
use std::panic::{catch_unwind, resume_unwind, AssertUnwindSafe};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Mutex, OnceLock, PoisonError};
use std::thread::{self, Thread};
use std::time::{Duration, Instant};

const ACTIVE_MASK: u64 = 0xffff_ffff;
const CLOSED: u64 = 1 << 32;
const EPOCH_SHIFT: u32 = 33;

/// How long an idle worker spins before parking.
const SPIN_FOR: Duration = Duration::from_micros(200);

type Task = dyn Fn(usize) + Sync;

fn noop_task(_: usize) {}
static NOOP: fn(usize) = noop_task;

/// The job being run: a lifetime-erased pointer to the caller's closure.
#[derive(Clone, Copy)]
struct Job {
    f: *const Task,
    n: usize,
}

struct Shared {
    state: AtomicU64,
    /// Written only by the submitter while no worker can join (between a
    /// job's close and the next epoch); read only by joined workers.
    job: UnsafeCell<Job>,
    next: AtomicUsize,
    /// At most this many workers (besides the caller) join the current job.
    /// Atomic because a worker reads it before joining.
    max_workers: AtomicUsize,
    sleeping: Vec<AtomicBool>,
    threads: OnceLock<Vec<Thread>>,
    submit: Mutex<()>,
    panic: Mutex<Option<Box<dyn Any + Send>>>,
}

// SAFETY: `job` is accessed under the epoch/join protocol described in the
// module comment; the closure it points to is `Sync`.
unsafe impl Sync for Shared {}
unsafe impl Send for Shared {}

struct Pool {
    shared: &'static Shared,
    workers: usize,
}

thread_local! {
    /// Set while this thread runs a pool task (nested `par_for` runs inline).
    static IN_TASK: Cell<bool> = const { Cell::new(false) };
}

fn pool() -> &'static Pool {
    static POOL: OnceLock<Pool> = OnceLock::new();
    POOL.get_or_init(|| {
        let total = thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1);
        let wanted = total.saturating_sub(1);
        let shared: &'static Shared = Box::leak(Box::new(Shared {
            state: AtomicU64::new(0),
            job: UnsafeCell::new(Job {
                f: &NOOP as &Task as *const Task,
                n: 0,
            }),
            max_workers: AtomicUsize::new(0),
            next: AtomicUsize::new(0),
            sleeping: (0..wanted).map(|_| AtomicBool::new(false)).collect(),
            threads: OnceLock::new(),
            submit: Mutex::new(()),
            panic: Mutex::new(None),
        }));
        let mut handles = Vec::with_capacity(wanted);
        for i in 0..wanted {
            let spawned = thread::Builder::new()
                .name(format!("ferrum-cpu-{i}"))
                .spawn(move || worker_loop(shared, i));
            match spawned {
                Ok(h) => handles.push(h.thread().clone()),
                // A worker that cannot be spawned is simply absent; the pool
                // runs with fewer threads (possibly only the caller).
                Err(_) => break,
            }
        }
        let workers = handles.len();
        let _ = shared.threads.set(handles);
        Pool { shared, workers }
    })
}

/// Threads `par_for` uses: the caller plus the pool's workers.
pub fn num_threads() -> usize {
    pool().workers + 1
}

/// Run `f(i)` for every `i` in `0..n` on the persistent pool, the calling
/// thread included; returns when all calls are done. Indices are handed out
/// dynamically, so `f` must not rely on which thread runs which index.
/// Called from inside a task, it runs the loop inline.
pub fn par_for(n: usize, f: impl Fn(usize) + Sync) {
    par_for_limit(n, usize::MAX, &f);
}

/// [`par_for`] on at most `max_threads` threads (the caller counts as one).
pub fn par_for_limit(n: usize, max_threads: usize, f: &(dyn Fn(usize) + Sync)) {
    if n == 0 {
        return;
    }
    let p = pool();
    if n == 1 || max_threads <= 1 || p.workers == 0 || IN_TASK.with(|t| t.get()) {
        for i in 0..n {
            f(i);
        }
        return;
    }
    let sh = p.shared;
    let _guard = sh.submit.lock().unwrap_or_else(PoisonError::into_inner);
    // SAFETY: the previous job is closed with no active worker (we waited for
    // that before releasing the lock), so no one reads `job` now. The
    // lifetime of `f` is erased; it stays valid because we wait below until
    // no worker uses it.
    unsafe {
        let f_static: *const Task =
            std::mem::transmute::<*const (dyn Fn(usize) + Sync + '_), *const Task>(f);
        *sh.job.get() = Job { f: f_static, n };
    }
    sh.max_workers.store(max_threads - 1, Ordering::Relaxed);
    sh.next.store(0, Ordering::Relaxed);
    let epoch = (sh.state.load(Ordering::Relaxed) >> EPOCH_SHIFT).wrapping_add(1);
    sh.state.store(epoch << EPOCH_SHIFT, Ordering::SeqCst);
    if let Some(threads) = sh.threads.get() {
        for (i, t) in threads.iter().enumerate() {
            if sh.sleeping[i].load(Ordering::SeqCst) {
                t.unpark();
            }
        }
    }

    // The caller works too.
    IN_TASK.with(|t| t.set(true));
    let mine = catch_unwind(AssertUnwindSafe(|| loop {
        let i = sh.next.fetch_add(1, Ordering::Relaxed);
        if i >= n {
            break;
        }
        f(i);
    }));
    IN_TASK.with(|t| t.set(false));

    // No more joins; wait for the workers that joined.
    sh.state.fetch_or(CLOSED, Ordering::AcqRel);
    let mut spins = 0u32;
    while sh.state.load(Ordering::Acquire) & ACTIVE_MASK != 0 {
        spins += 1;
        if spins < 4096 {
            std::hint::spin_loop();
        } else {
            thread::yield_now();
        }
    }
    if let Err(payload) = mine {
        resume_unwind(payload);
    }
    let worker_panic = sh
        .panic
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(payload) = worker_panic {
        resume_unwind(payload);
    }
}

fn worker_loop(sh: &'static Shared, me: usize) {
    IN_TASK.with(|t| t.set(true));
    let mut seen = 0u64;
    loop {
        // Wait for a new epoch: spin, then park.
        let mut started = Instant::now();
        let mut spins = 0u32;
        let state = loop {
            let s = sh.state.load(Ordering::Acquire);
            if s >> EPOCH_SHIFT != seen {
                break s;
            }
            spins = spins.wrapping_add(1);
            if !spins.is_multiple_of(64) || started.elapsed() < SPIN_FOR {
                std::hint::spin_loop();
                continue;
            }
            sh.sleeping[me].store(true, Ordering::SeqCst);
            if sh.state.load(Ordering::SeqCst) >> EPOCH_SHIFT == seen {
                thread::park();
            }
            sh.sleeping[me].store(false, Ordering::SeqCst);
            started = Instant::now();
        };
        seen = state >> EPOCH_SHIFT;
        // Try to join this epoch's job.
        let mut s = state;
        let joined = loop {
            if s >> EPOCH_SHIFT != seen || s & CLOSED != 0 {
                break false;
            }
            // A stale value is harmless: the CAS fails if the epoch moved on.
            let max_workers = sh.max_workers.load(Ordering::Relaxed);
            if (s & ACTIVE_MASK) as usize >= max_workers {
                break false;
            }
            match sh
                .state
                .compare_exchange_weak(s, s + 1, Ordering::AcqRel, Ordering::Acquire)
            {
                Ok(_) => break true,
                Err(now) => s = now,
            }
        };
        if !joined {
            continue;
        }
        // SAFETY: joined, so the job stays valid until we decrement `active`.
        let job = unsafe { *sh.job.get() };
        let f = unsafe { &*job.f };
        let result = catch_unwind(AssertUnwindSafe(|| loop {
            let i = sh.next.fetch_add(1, Ordering::Relaxed);
            if i >= job.n {
                break;
            }
            f(i);
        }));
        if let Err(payload) = result {
            // Stop handing out indices and report the panic to the caller.
            sh.next.store(usize::MAX / 2, Ordering::Relaxed);
            *sh.panic.lock().unwrap_or_else(PoisonError::into_inner) = Some(payload);
        }
        sh.state.fetch_sub(1, Ordering::Release);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn every_index_once() {
        for n in [0usize, 1, 2, 3, 17, 1000] {
            let hits: Vec<AtomicUsize> = (0..n).map(|_| AtomicUsize::new(0)).collect();
            par_for(n, |i| {
                hits[i].fetch_add(1, Ordering::Relaxed);
            });
            assert!(
                hits.iter().all(|h| h.load(Ordering::Relaxed) == 1),
                "n = {n}"
            );
        }
    }

    #[test]
    fn nested_runs_inline() {
        let total = AtomicUsize::new(0);
        par_for(4, |_| {
            par_for(5, |_| {
                total.fetch_add(1, Ordering::Relaxed);
            });
        });
        assert_eq!(total.load(Ordering::Relaxed), 20);
    }

    #[test]
    fn panics_propagate_and_pool_survives() {
        let r = catch_unwind(|| {
            par_for(64, |i| {
                if i == 33 {
                    panic!("boom");
                }
            })
        });
        assert!(r.is_err());
        let total = AtomicUsize::new(0);
        par_for(100, |_| {
            total.fetch_add(1, Ordering::Relaxed);
        });
        assert_eq!(total.load(Ordering::Relaxed), 100);
    }
}
