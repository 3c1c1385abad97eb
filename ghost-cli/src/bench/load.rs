//! The load generator: a plan that hands out operations (closed or open loop), worker
//! threads that carry them out with blocking clients sharing one connection pool, and a
//! recorder of latencies in HDR histograms.
//!
//! **Closed loop** (`--concurrency C`): C workers, each starting its next operation as
//! soon as the last one ended; latency runs from the actual start.
//!
//! **Open loop** (`--rate R`): operation `i` is due at `t0 + i / R` whatever happened
//! before; a worker takes the next due operation, and its latency runs from when it was
//! *due*, not from when a worker got to it. When the network falls behind, operations wait
//! for a free worker and that wait shows in the latency, so queueing is not hidden
//! (coordinated omission avoided). At most `--max-in-flight` operations run at once.
//!
//! Operations due before the warm-up ends run but are not measured.

use std::collections::BTreeMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

use super::report::{LatencySummary, OpStats, TimelineBucket};

/// How operations are started.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum LoadModel {
    /// A fixed number of operations in flight.
    Closed {
        /// Operations in flight.
        concurrency: usize,
    },
    /// A fixed arrival rate.
    Open {
        /// Operations started per second.
        rate: f64,
        /// Most operations in flight; due operations wait beyond it.
        max_in_flight: usize,
    },
}

impl LoadModel {
    /// Worker threads the model needs.
    #[must_use]
    pub fn workers(self) -> usize {
        match self {
            Self::Closed { concurrency } => concurrency,
            Self::Open { max_in_flight, .. } => max_in_flight,
        }
    }
}

/// When the measured phase ends.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Stop {
    /// After this long.
    After(Duration),
    /// After this many operations were started.
    Count(u64),
}

/// One operation handed to a worker.
#[derive(Clone, Copy, Debug)]
pub struct Ticket {
    /// Its number, from 0, warm-up included (drives the deterministic choices).
    pub index: u64,
    /// When it was due (open loop) or handed out (closed loop): latency runs from here.
    pub due: Instant,
    /// Whether it belongs to the measured phase.
    pub measured: bool,
}

/// Hands out operations to workers, shared by all of them.
pub struct Plan {
    model: LoadModel,
    start: Instant,
    measure_from: Instant,
    stop: Stop,
    next: Mutex<u64>,
    measured_started: AtomicU64,
    cancelled: AtomicBool,
}

impl Plan {
    /// A plan starting now with `warmup` before the measured phase.
    #[must_use]
    pub fn new(model: LoadModel, warmup: Duration, stop: Stop) -> Self {
        let start = Instant::now();
        Self {
            model,
            start,
            measure_from: start + warmup,
            stop,
            next: Mutex::new(0),
            measured_started: AtomicU64::new(0),
            cancelled: AtomicBool::new(false),
        }
    }

    /// When the measured phase starts.
    #[must_use]
    pub fn measure_from(&self) -> Instant {
        self.measure_from
    }

    /// Stops handing out operations (Ctrl-C, a fatal error); running ones finish.
    pub fn cancel(&self) {
        self.cancelled.store(true, Ordering::Relaxed);
    }

    /// Whether [`Plan::cancel`] was called.
    #[must_use]
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Relaxed)
    }

    /// Measured operations handed out so far.
    #[must_use]
    pub fn measured_started(&self) -> u64 {
        self.measured_started.load(Ordering::Relaxed)
    }

    /// The next operation for a worker, waiting (open loop) until it is due; `None` when
    /// the plan is over.
    pub fn take(&self) -> Option<Ticket> {
        let ticket = {
            let mut next = self.next.lock().expect("no panics while held");
            if self.is_cancelled() {
                return None;
            }
            let index = *next;
            let due = match self.model {
                LoadModel::Closed { .. } => Instant::now(),
                LoadModel::Open { rate, .. } => {
                    self.start + Duration::from_secs_f64(index as f64 / rate)
                }
            };
            let measured = due >= self.measure_from;
            if measured {
                match self.stop {
                    Stop::After(d) if due >= self.measure_from + d => return None,
                    Stop::Count(n) if self.measured_started() >= n => return None,
                    _ => {}
                }
                self.measured_started.fetch_add(1, Ordering::Relaxed);
            }
            *next += 1;
            Ticket {
                index,
                due,
                measured,
            }
        };
        // Sleeping outside the lock lets the next worker claim the following slot.
        let wait = ticket.due.saturating_duration_since(Instant::now());
        if !wait.is_zero() {
            std::thread::sleep(wait);
        }
        if self.is_cancelled() {
            return None;
        }
        Some(ticket)
    }
}

/// Latencies are recorded in microseconds, up to an hour, to 3 significant digits.
fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, 3_600_000_000, 3).expect("valid bounds")
}

/// The figures of one kind of operation (or one HTTP target) as they accumulate.
struct OpAccumulator {
    latency_us: Histogram<u64>,
    completed: u64,
    succeeded: u64,
    failures: BTreeMap<String, u64>,
}

impl OpAccumulator {
    fn new() -> Self {
        Self {
            latency_us: histogram(),
            completed: 0,
            succeeded: 0,
            failures: BTreeMap::new(),
        }
    }

    fn record(&mut self, latency: Duration, outcome: &Result<(), String>) {
        self.completed += 1;
        match outcome {
            Ok(()) => {
                self.succeeded += 1;
                self.latency_us.saturating_record(micros(latency));
            }
            Err(label) => *self.failures.entry(label.clone()).or_default() += 1,
        }
    }

    fn stats(&self, seconds: f64) -> OpStats {
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
        let (completed, succeeded) = (self.completed as f64, self.succeeded as f64);
        OpStats {
            completed: self.completed,
            succeeded: self.succeeded,
            failures: self.failures.clone(),
            success_rate: if self.completed == 0 {
                1.0
            } else {
                succeeded / completed
            },
            throughput_per_second: if seconds > 0.0 {
                succeeded / seconds
            } else {
                0.0
            },
            latency_ms: summary(&self.latency_us),
            histogram_us: self
                .latency_us
                .iter_recorded()
                .map(|v| [v.value_iterated_to(), v.count_at_value()])
                .collect(),
        }
    }
}

fn micros(d: Duration) -> u64 {
    u64::try_from(d.as_micros()).unwrap_or(u64::MAX).max(1)
}

/// Percentiles of a histogram in microseconds, as milliseconds.
#[must_use]
pub fn summary(h: &Histogram<u64>) -> LatencySummary {
    if h.is_empty() {
        return LatencySummary::default();
    }
    #[allow(clippy::cast_precision_loss)] // microseconds stay far below 2^52
    let ms = |us: u64| us as f64 / 1000.0;
    LatencySummary {
        min: ms(h.min()),
        mean: h.mean() / 1000.0,
        p50: ms(h.value_at_quantile(0.50)),
        p90: ms(h.value_at_quantile(0.90)),
        p95: ms(h.value_at_quantile(0.95)),
        p99: ms(h.value_at_quantile(0.99)),
        p999: ms(h.value_at_quantile(0.999)),
        max: ms(h.max()),
    }
}

/// A histogram of milliseconds values recorded as microseconds (replication delays).
#[must_use]
pub fn new_histogram() -> Histogram<u64> {
    histogram()
}

/// Records one measured completion into a histogram (microseconds).
pub fn record_into(h: &mut Histogram<u64>, latency: Duration) {
    h.saturating_record(micros(latency));
}

/// One slice of the timeline as it accumulates.
struct Slice {
    succeeded: BTreeMap<String, u64>,
    failed: u64,
    latency_us: Histogram<u64>,
}

/// Everything measured so far, shared by the workers.
struct Totals {
    ops: BTreeMap<String, OpAccumulator>,
    targets: BTreeMap<String, OpAccumulator>,
    slices: Vec<Slice>,
    /// Since the last progress reading.
    recent_latency_us: Histogram<u64>,
    recent_succeeded: u64,
    failed: u64,
    last_measured_end: Option<Instant>,
}

/// The recorder of completions; cheap to call from many threads at a few thousand
/// operations per second (one short lock per completion).
pub struct Recorder {
    measure_from: Instant,
    slice: Duration,
    totals: Mutex<Totals>,
}

/// What the progress bar shows.
pub struct Progress {
    /// Successes per second since the last reading.
    pub rate: f64,
    /// Failures so far.
    pub failed: u64,
    /// p99 since the last reading, milliseconds.
    pub p99_ms: f64,
}

impl Recorder {
    /// A recorder whose timeline slices are `slice` long from `measure_from`.
    #[must_use]
    pub fn new(measure_from: Instant, slice: Duration) -> Self {
        Self {
            measure_from,
            slice,
            totals: Mutex::new(Totals {
                ops: BTreeMap::new(),
                targets: BTreeMap::new(),
                slices: Vec::new(),
                recent_latency_us: histogram(),
                recent_succeeded: 0,
                failed: 0,
                last_measured_end: None,
            }),
        }
    }

    /// Records an operation of `kind` (and HTTP `target`, if any) that was due at
    /// `ticket.due` and ended now with `outcome` (a failure carries its label).
    pub fn record(
        &self,
        ticket: &Ticket,
        kind: &str,
        target: Option<&str>,
        outcome: &Result<(), String>,
    ) {
        let end = Instant::now();
        let latency = end.saturating_duration_since(ticket.due);
        let mut t = self.totals.lock().expect("no panics while held");
        match outcome {
            Ok(()) => {
                t.recent_succeeded += 1;
                t.recent_latency_us.saturating_record(micros(latency));
            }
            Err(_) => t.failed += 1,
        }
        if !ticket.measured {
            return;
        }
        t.last_measured_end = Some(t.last_measured_end.map_or(end, |e| e.max(end)));
        t.ops
            .entry(kind.to_owned())
            .or_insert_with(OpAccumulator::new)
            .record(latency, outcome);
        if let Some(target) = target {
            t.targets
                .entry(target.to_owned())
                .or_insert_with(OpAccumulator::new)
                .record(latency, outcome);
        }
        let index = usize::try_from(
            end.saturating_duration_since(self.measure_from).as_nanos() / self.slice.as_nanos(),
        )
        .unwrap_or(usize::MAX)
        .min(100_000);
        while t.slices.len() <= index {
            t.slices.push(Slice {
                succeeded: BTreeMap::new(),
                failed: 0,
                latency_us: Histogram::new_with_bounds(1, 3_600_000_000, 2).expect("valid bounds"),
            });
        }
        let slice = &mut t.slices[index];
        match outcome {
            Ok(()) => {
                *slice.succeeded.entry(kind.to_owned()).or_default() += 1;
                slice.latency_us.saturating_record(micros(latency));
            }
            Err(_) => slice.failed += 1,
        }
    }

    /// Progress since the last call, `elapsed` being the time since then.
    pub fn progress(&self, elapsed: Duration) -> Progress {
        let mut t = self.totals.lock().expect("no panics while held");
        #[allow(clippy::cast_precision_loss)] // counts stay far below 2^52
        let rate = t.recent_succeeded as f64 / elapsed.as_secs_f64().max(1e-3);
        #[allow(clippy::cast_precision_loss)]
        let p99_ms = t.recent_latency_us.value_at_quantile(0.99) as f64 / 1000.0;
        t.recent_succeeded = 0;
        t.recent_latency_us.reset();
        Progress {
            rate,
            failed: t.failed,
            p99_ms,
        }
    }

    /// The measured phase's length: from its start to the last measured completion.
    #[must_use]
    pub fn measured_seconds(&self) -> f64 {
        let t = self.totals.lock().expect("no panics while held");
        t.last_measured_end.map_or(0.0, |end| {
            end.saturating_duration_since(self.measure_from)
                .as_secs_f64()
        })
    }

    /// The figures by operation kind and by HTTP target, and the timeline.
    #[must_use]
    pub fn finish(
        &self,
    ) -> (
        BTreeMap<String, OpStats>,
        BTreeMap<String, OpStats>,
        Vec<TimelineBucket>,
    ) {
        let seconds = self.measured_seconds();
        let t = self.totals.lock().expect("no panics while held");
        let ops = t
            .ops
            .iter()
            .map(|(k, a)| (k.clone(), a.stats(seconds)))
            .collect();
        let targets = t
            .targets
            .iter()
            .map(|(k, a)| (k.clone(), a.stats(seconds)))
            .collect();
        let width = self.slice.as_secs_f64();
        let timeline = t
            .slices
            .iter()
            .enumerate()
            .map(|(i, s)| {
                #[allow(clippy::cast_precision_loss)] // at most 100,000 slices
                let start_seconds = i as f64 * width;
                let q = |p: f64| {
                    if s.latency_us.is_empty() {
                        0.0
                    } else {
                        #[allow(clippy::cast_precision_loss)]
                        let us = s.latency_us.value_at_quantile(p) as f64;
                        us / 1000.0
                    }
                };
                TimelineBucket {
                    start_seconds,
                    seconds: width,
                    succeeded: s.succeeded.clone(),
                    failed: s.failed,
                    p50_ms: q(0.5),
                    p99_ms: q(0.99),
                }
            })
            .collect();
        (ops, targets, timeline)
    }
}

/// A small, fast, seedable generator for the bench's own choices (which recipient, which
/// operation, payload filler): the same `--seed` makes the same choices. Never used for
/// keys, nonces or paths, which come from the operating system.
#[derive(Clone, Debug)]
pub struct Choices(u64);

impl Choices {
    /// The generator for operation `index` of a run seeded with `seed`.
    #[must_use]
    pub fn for_op(seed: u64, index: u64) -> Self {
        let mut c = Self(seed ^ index.wrapping_mul(0xD1B5_4A32_D192_ED03));
        c.next_u64();
        c
    }

    /// SplitMix64.
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number below `n` (`n` > 0).
    pub fn below(&mut self, n: usize) -> usize {
        usize::try_from(self.next_u64() % n.max(1) as u64).expect("below n")
    }

    /// Fills `out`.
    pub fn fill(&mut self, out: &mut [u8]) {
        for chunk in out.chunks_mut(8) {
            let x = self.next_u64().to_le_bytes();
            chunk.copy_from_slice(&x[..chunk.len()]);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_open_loop_plan_spaces_operations_by_the_rate_and_stops_at_the_count() {
        let plan = Plan::new(
            LoadModel::Open {
                rate: 1000.0,
                max_in_flight: 4,
            },
            Duration::from_millis(5),
            Stop::Count(10),
        );
        let tickets: Vec<Ticket> = std::iter::from_fn(|| plan.take()).collect();
        // 5 warm-up slots (0..5 ms), then 10 measured ones.
        assert_eq!(tickets.len(), 15);
        assert_eq!(tickets.iter().filter(|t| t.measured).count(), 10);
        for pair in tickets.windows(2) {
            assert_eq!(pair[1].due - pair[0].due, Duration::from_millis(1));
        }
        assert!(Instant::now() >= tickets[14].due, "take waits until due");
    }

    #[test]
    fn a_closed_loop_plan_ends_after_its_duration_and_on_cancel() {
        let plan = Plan::new(
            LoadModel::Closed { concurrency: 1 },
            Duration::ZERO,
            Stop::After(Duration::from_millis(30)),
        );
        let mut n = 0u64;
        while plan.take().is_some() {
            n += 1;
            assert!(n < 100_000_000, "the plan never ended");
        }
        assert!(plan.measure_from().elapsed() >= Duration::from_millis(30));
        let plan = Plan::new(
            LoadModel::Closed { concurrency: 1 },
            Duration::ZERO,
            Stop::Count(1_000),
        );
        assert!(plan.take().is_some());
        plan.cancel();
        assert!(plan.take().is_none());
    }

    #[test]
    fn open_loop_latency_counts_from_the_due_time_not_the_late_start() {
        let start = Instant::now();
        let recorder = Recorder::new(start, Duration::from_secs(1));
        let due_long_ago = Ticket {
            index: 0,
            due: start,
            measured: true,
        };
        while start.elapsed() < Duration::from_millis(20) {
            std::hint::spin_loop();
        }
        recorder.record(&due_long_ago, "store", None, &Ok(()));
        recorder.record(&due_long_ago, "store", None, &Err("timeout".into()));
        let warmup = Ticket {
            measured: false,
            ..due_long_ago
        };
        recorder.record(&warmup, "store", None, &Ok(()));
        let (ops, _, timeline) = recorder.finish();
        let store = &ops["store"];
        assert_eq!((store.completed, store.succeeded), (2, 1));
        assert_eq!(store.failures["timeout"], 1);
        assert!(store.latency_ms.p50 >= 20.0, "{:?}", store.latency_ms);
        assert_eq!(store.histogram_us.iter().map(|b| b[1]).sum::<u64>(), 1);
        assert_eq!(timeline.len(), 1);
        assert_eq!(timeline[0].failed, 1);
    }

    #[test]
    fn choices_repeat_for_the_same_seed_and_index() {
        let a: Vec<u64> = (0..4).map(|i| Choices::for_op(7, i).next_u64()).collect();
        let b: Vec<u64> = (0..4).map(|i| Choices::for_op(7, i).next_u64()).collect();
        let c: Vec<u64> = (0..4).map(|i| Choices::for_op(8, i).next_u64()).collect();
        assert_eq!(a, b);
        assert_ne!(a, c);
        assert!(Choices::for_op(1, 1).below(3) < 3);
    }
}
