//! A fixed pool of threads that runs many small state machines ("tasks"): each replicated
//! database's replicator, compactor and lease are tasks, so a process replicating a thousand
//! databases runs a bounded number of threads instead of a few per database.
//!
//! A task's `run` does one step and says when it wants to run again: at an instant, when poked,
//! or never. Pokes (a commit, a sync request, a lease change) make it run as soon as a thread is
//! free. Steps block for I/O (SQLite, S3 through the tokio runtime); a pool is sized for that.
//!
//! Invariants:
//! - A task runs on at most one thread at a time, and its steps never overlap: a poke that
//!   arrives while it runs makes it run once more right after.
//! - No task is forgotten: a task is either running, queued, waiting for a timer, or waiting for a
//!   poke, until its step returns `Next::Done` or its handle cancels it.
//! - A panicking step drops that task only (its handle then reports it gone); the pool goes on.

use std::cmp::Reverse;
use std::collections::{BinaryHeap, HashMap, VecDeque};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Arc, Condvar, Mutex, MutexGuard, Weak};
use std::time::Instant;

/// When a task wants its next step.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Next {
    /// At this instant (or earlier, if poked).
    At(Instant),
    /// Only when poked.
    Poked,
    /// Never: the task is finished and is dropped.
    Done,
}

/// A state machine the pool drives.
pub trait Task: Send {
    /// One step.
    fn run(&mut self) -> Next;
}

type TaskId = u64;

/// How often `TaskHandle::wait_done` looks whether the task has finished.
const WAIT_DONE_POLL: std::time::Duration = std::time::Duration::from_millis(2);

struct Slot {
    /// The task, or None while a thread runs it.
    task: Option<Box<dyn Task>>,
    /// Queued in `ready`.
    queued: bool,
    /// Poked while running: run again right after.
    poked: bool,
    /// Cancelled while running: drop it when the step returns.
    cancelled: bool,
    /// Timers carry the generation they were set in; a later step or poke invalidates them.
    generation: u64,
}

struct State {
    slots: HashMap<TaskId, Slot>,
    ready: VecDeque<TaskId>,
    timers: BinaryHeap<Reverse<(Instant, TaskId, u64)>>,
    next_id: TaskId,
    threads: usize,
    running: usize,
}

struct Pool {
    name: &'static str,
    size: usize,
    state: Mutex<State>,
    cond: Condvar,
}

/// A pool of `size` threads named `name`.
#[derive(Clone)]
pub struct Scheduler {
    pool: Arc<Pool>,
}

/// Pokes or cancels one task. Dropping the handle does not cancel it.
#[derive(Clone)]
pub struct TaskHandle {
    id: TaskId,
    pool: Weak<Pool>,
}

/// What the pool is doing, for status and tests.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct PoolStats {
    pub threads: usize,
    pub tasks: usize,
    pub running: usize,
}

impl Scheduler {
    pub fn new(name: &'static str, size: usize) -> Scheduler {
        Scheduler {
            pool: Arc::new(Pool {
                name,
                size: size.max(1),
                state: Mutex::new(State {
                    slots: HashMap::new(),
                    ready: VecDeque::new(),
                    timers: BinaryHeap::new(),
                    next_id: 1,
                    threads: 0,
                    running: 0,
                }),
                cond: Condvar::new(),
            }),
        }
    }

    /// Add a task; its first step runs as soon as a thread is free.
    pub fn spawn(&self, task: Box<dyn Task>) -> TaskHandle {
        let mut s = self.pool.lock();
        let id = s.next_id;
        s.next_id += 1;
        s.slots.insert(
            id,
            Slot {
                task: Some(task),
                queued: true,
                poked: false,
                cancelled: false,
                generation: 0,
            },
        );
        s.ready.push_back(id);
        // The threads start with the first task and then stay: a fixed number, whatever the
        // number of tasks.
        while s.threads < self.pool.size {
            let pool = self.pool.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("litestream-{}", self.pool.name))
                .spawn(move || pool.work());
            if spawned.is_err() {
                break;
            }
            s.threads += 1;
        }
        drop(s);
        self.pool.cond.notify_one();
        TaskHandle {
            id,
            pool: Arc::downgrade(&self.pool),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let s = self.pool.lock();
        PoolStats {
            threads: s.threads,
            tasks: s.slots.len(),
            running: s.running,
        }
    }
}

impl TaskHandle {
    /// Run the task's next step as soon as possible (once, however many pokes arrive first).
    pub fn poke(&self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut s = pool.lock();
        let Some(slot) = s.slots.get_mut(&self.id) else {
            return;
        };
        if slot.task.is_none() {
            slot.poked = true;
        } else if !slot.queued {
            slot.queued = true;
            slot.generation += 1;
            s.ready.push_back(self.id);
            drop(s);
            pool.cond.notify_one();
        }
    }

    /// Drop the task (after its current step, if one is running).
    pub fn cancel(&self) {
        let Some(pool) = self.pool.upgrade() else {
            return;
        };
        let mut s = pool.lock();
        let running = match s.slots.get_mut(&self.id) {
            Some(slot) if slot.task.is_none() => {
                slot.cancelled = true;
                true
            }
            Some(_) => false,
            None => return,
        };
        if !running {
            let slot = s.slots.remove(&self.id);
            s.ready.retain(|id| *id != self.id);
            drop(s);
            // The task's own drop runs outside the pool's lock.
            drop(slot);
        }
    }

    /// Block until the task is gone (its last step returned `Next::Done`, it was cancelled, or
    /// it panicked). Polls: a stop is rare, and a condition variable per task would cost every
    /// step a notification.
    pub fn wait_done(&self) {
        while self.alive() {
            std::thread::sleep(WAIT_DONE_POLL);
        }
    }

    /// The task still exists (not done, cancelled or dropped after a panic).
    pub fn alive(&self) -> bool {
        self.pool
            .upgrade()
            .is_some_and(|p| p.lock().slots.contains_key(&self.id))
    }
}

impl Pool {
    fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// A pool thread: run ready tasks, fire due timers, sleep until the next one.
    fn work(self: Arc<Pool>) {
        let mut s = self.lock();
        loop {
            if let Some(id) = s.ready.pop_front() {
                let Some(slot) = s.slots.get_mut(&id) else {
                    continue;
                };
                slot.queued = false;
                let Some(mut task) = slot.task.take() else {
                    continue;
                };
                s.running += 1;
                drop(s);
                let next = catch_unwind(AssertUnwindSafe(|| task.run())).unwrap_or(Next::Done);
                s = self.lock();
                s.running -= 1;
                let finished = self.settle(&mut s, id, task, next);
                if let Some(task) = finished {
                    drop(s);
                    drop(task);
                    s = self.lock();
                }
                continue;
            }
            let now = Instant::now();
            match s.timers.peek().copied() {
                Some(Reverse((at, id, generation))) if at <= now => {
                    s.timers.pop();
                    if let Some(slot) = s.slots.get_mut(&id) {
                        if slot.generation == generation && slot.task.is_some() && !slot.queued {
                            slot.queued = true;
                            s.ready.push_back(id);
                        }
                    }
                }
                Some(Reverse((at, _, _))) => {
                    s = self
                        .cond
                        .wait_timeout(s, at - now)
                        .map(|(g, _)| g)
                        .unwrap_or_else(|p| p.into_inner().0);
                }
                None => {
                    s = self.cond.wait(s).unwrap_or_else(|p| p.into_inner());
                }
            }
        }
    }

    /// Put a task back after a step. Returns the task when it is to be dropped (outside the
    /// lock).
    fn settle(
        &self,
        s: &mut State,
        id: TaskId,
        task: Box<dyn Task>,
        next: Next,
    ) -> Option<Box<dyn Task>> {
        let Some(slot) = s.slots.get_mut(&id) else {
            return Some(task);
        };
        if slot.cancelled || next == Next::Done {
            s.slots.remove(&id);
            return Some(task);
        }
        slot.task = Some(task);
        slot.generation += 1;
        let generation = slot.generation;
        if std::mem::take(&mut slot.poked) {
            slot.queued = true;
            s.ready.push_back(id);
        } else if let Next::At(at) = next {
            s.timers.push(Reverse((at, id, generation)));
        }
        // Another thread may be asleep on a later timer than this one.
        self.cond.notify_one();
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    struct Counter {
        runs: Arc<AtomicUsize>,
        every: Option<Duration>,
        limit: usize,
    }

    impl Task for Counter {
        fn run(&mut self) -> Next {
            let n = self.runs.fetch_add(1, Ordering::SeqCst) + 1;
            if n >= self.limit {
                return Next::Done;
            }
            match self.every {
                Some(d) => Next::At(Instant::now() + d),
                None => Next::Poked,
            }
        }
    }

    fn wait_for(what: impl Fn() -> bool) {
        let deadline = Instant::now() + Duration::from_secs(10);
        while !what() {
            assert!(Instant::now() < deadline, "timed out");
            std::thread::sleep(Duration::from_millis(2));
        }
    }

    #[test]
    fn timers_pokes_and_done() {
        let sched = Scheduler::new("test", 2);
        let ticks = Arc::new(AtomicUsize::new(0));
        let ticker = sched.spawn(Box::new(Counter {
            runs: ticks.clone(),
            every: Some(Duration::from_millis(5)),
            limit: 5,
        }));
        wait_for(|| !ticker.alive());
        assert_eq!(ticks.load(Ordering::SeqCst), 5);

        let pokes = Arc::new(AtomicUsize::new(0));
        let poked = sched.spawn(Box::new(Counter {
            runs: pokes.clone(),
            every: None,
            limit: 100,
        }));
        wait_for(|| pokes.load(Ordering::SeqCst) == 1);
        std::thread::sleep(Duration::from_millis(20));
        assert_eq!(pokes.load(Ordering::SeqCst), 1, "ran without a poke");
        poked.poke();
        wait_for(|| pokes.load(Ordering::SeqCst) == 2);
        poked.cancel();
        wait_for(|| !poked.alive());
        poked.poke(); // harmless once gone
    }

    #[test]
    fn many_tasks_share_a_fixed_number_of_threads() {
        let sched = Scheduler::new("test", 3);
        let runs = Arc::new(AtomicUsize::new(0));
        let handles: Vec<_> = (0..200)
            .map(|_| {
                sched.spawn(Box::new(Counter {
                    runs: runs.clone(),
                    every: Some(Duration::from_millis(1)),
                    limit: usize::MAX,
                }))
            })
            .collect();
        wait_for(|| runs.load(Ordering::SeqCst) > 2000);
        let stats = sched.stats();
        assert!(stats.threads <= 3, "{stats:?}");
        assert_eq!(stats.tasks, 200);
        for h in &handles {
            h.cancel();
        }
        wait_for(|| sched.stats().tasks == 0);
    }

    struct Overlap {
        inside: Arc<AtomicUsize>,
        max_inside: Arc<AtomicUsize>,
        runs: Arc<AtomicUsize>,
    }

    impl Task for Overlap {
        fn run(&mut self) -> Next {
            let now_inside = self.inside.fetch_add(1, Ordering::SeqCst) + 1;
            self.max_inside.fetch_max(now_inside, Ordering::SeqCst);
            std::thread::sleep(Duration::from_millis(1));
            self.inside.fetch_sub(1, Ordering::SeqCst);
            self.runs.fetch_add(1, Ordering::SeqCst);
            Next::Poked
        }
    }

    #[test]
    fn a_task_never_runs_on_two_threads_and_a_poke_while_running_is_kept() {
        let sched = Scheduler::new("test", 4);
        let (inside, max_inside, runs) = (
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
            Arc::new(AtomicUsize::new(0)),
        );
        let h = sched.spawn(Box::new(Overlap {
            inside: inside.clone(),
            max_inside: max_inside.clone(),
            runs: runs.clone(),
        }));
        for _ in 0..300 {
            h.poke();
        }
        // The last poke is never lost: the task runs after it.
        let before = runs.load(Ordering::SeqCst);
        h.poke();
        wait_for(|| runs.load(Ordering::SeqCst) > before);
        assert_eq!(max_inside.load(Ordering::SeqCst), 1);
        h.cancel();
    }

    struct Panics;
    impl Task for Panics {
        fn run(&mut self) -> Next {
            panic!("boom")
        }
    }

    #[test]
    fn a_panicking_task_is_dropped_and_the_pool_goes_on() {
        let sched = Scheduler::new("test", 1);
        let bad = sched.spawn(Box::new(Panics));
        wait_for(|| !bad.alive());
        let runs = Arc::new(AtomicUsize::new(0));
        let good = sched.spawn(Box::new(Counter {
            runs: runs.clone(),
            every: None,
            limit: 1,
        }));
        wait_for(|| !good.alive());
        assert_eq!(runs.load(Ordering::SeqCst), 1);
    }
}
