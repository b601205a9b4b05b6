//! A small interleaving benchmark harness.
//!
//! Each comparison runs every side in the same process, in rounds: side A for a
//! calibrated number of operations, then side B, then C, ..., then A again. The
//! machine's noise (other tenants, frequency changes) then lands on every side
//! alike. Reported: the median time per operation over the rounds, and ratios
//! between sides computed *per round* (each round's sides ran within a fraction of
//! a second of each other) and then taken at their median, so a slow phase of the
//! machine that spans a round cannot skew a ratio.
#![allow(dead_code)]

use std::time::{Duration, Instant};

/// One contender: runs `n` operations and returns how long they took (setup
/// outside the timed part is the side's own business).
pub struct Side<'a> {
    pub name: String,
    pub run: Box<dyn FnMut(u64) -> Duration + 'a>,
}

impl<'a> Side<'a> {
    pub fn new(name: impl Into<String>, run: impl FnMut(u64) -> Duration + 'a) -> Self {
        Side {
            name: name.into(),
            run: Box::new(run),
        }
    }
}

/// The result of one side.
#[derive(Clone, Debug)]
pub struct Measured {
    pub name: String,
    /// Median over the rounds.
    pub ns_per_op: f64,
    /// Time per operation in each round, in round order.
    pub rounds: Vec<f64>,
}

impl Measured {
    /// This side's time relative to `other`'s: the median of the per-round ratios.
    pub fn ratio_to(&self, other: &Measured) -> f64 {
        let mut ratios: Vec<f64> = self
            .rounds
            .iter()
            .zip(&other.rounds)
            .map(|(mine, theirs)| mine / theirs)
            .collect();
        median(&mut ratios)
    }
}

/// Settings from the command line: `cargo bench -- [filter] [--quick]`.
pub struct Settings {
    pub filter: Option<String>,
    pub rounds: usize,
    pub round_time: Duration,
}

impl Settings {
    pub fn from_args() -> Settings {
        let args: Vec<String> = std::env::args()
            .skip(1)
            .filter(|a| a != "--bench")
            .collect();
        let quick =
            args.iter().any(|a| a == "--quick") || std::env::var_os("BENCH_QUICK").is_some();
        Settings {
            filter: args.into_iter().find(|a| !a.starts_with("--")),
            rounds: if quick { 3 } else { 31 },
            round_time: Duration::from_millis(if quick { 5 } else { 25 }),
        }
    }

    /// The same settings with rounds of `round_time` each.
    pub fn with_round_time(&self, round_time: Duration) -> Settings {
        Settings {
            filter: self.filter.clone(),
            rounds: self.rounds,
            round_time,
        }
    }

    pub fn wants(&self, group: &str) -> bool {
        self.filter.as_deref().is_none_or(|f| group.contains(f))
    }
}

fn calibrate(side: &mut Side<'_>, round_time: Duration) -> u64 {
    let mut n = 1u64;
    loop {
        let took = (side.run)(n);
        if took >= round_time / 4 || n >= 1 << 24 {
            let per_op = took.as_secs_f64() / n as f64;
            return ((round_time.as_secs_f64() / per_op.max(1e-9)) as u64).max(1);
        }
        n *= 2;
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// Runs `sides` interleaved and prints a table: ns/op, ops/s, and the ratio of
/// each side's time to the first side's. `per_op` names the operation.
pub fn compare(
    settings: &Settings,
    title: &str,
    per_op: &str,
    mut sides: Vec<Side<'_>>,
) -> Vec<Measured> {
    let counts: Vec<u64> = sides
        .iter_mut()
        .map(|side| calibrate(side, settings.round_time))
        .collect();
    let mut samples = vec![Vec::with_capacity(settings.rounds); sides.len()];
    for round in 0..settings.rounds {
        // Each round starts with a different side, so no side always runs first
        // (warm caches) or last.
        for k in 0..sides.len() {
            let i = (round + k) % sides.len();
            let took = (sides[i].run)(counts[i]);
            samples[i].push(took.as_nanos() as f64 / counts[i] as f64);
        }
    }
    let results: Vec<Measured> = sides
        .iter()
        .zip(samples)
        .map(|(side, rounds)| Measured {
            name: side.name.clone(),
            ns_per_op: median(&mut rounds.clone()),
            rounds,
        })
        .collect();
    println!(
        "\n## {title}  (median of {} interleaved rounds; time per {per_op}; ratios paired per round)",
        settings.rounds
    );
    println!(
        "| {:<44} | {:>12} | {:>12} | {:>15} |",
        "side", "ns/op", "ops/s", "time vs first"
    );
    println!("|{:-<46}|{:->14}|{:->14}|{:->17}|", "", "", "", "");
    for r in &results {
        println!(
            "| {:<44} | {:>12.0} | {:>12.0} | {:>14.2}x |",
            r.name,
            r.ns_per_op,
            1e9 / r.ns_per_op,
            r.ratio_to(&results[0])
        );
    }
    results
}

/// Prints whether a target holds: `ratio` compared with `limit`.
pub fn target(what: &str, ratio: f64, limit: f64, higher_is_better: bool) {
    let met = if higher_is_better {
        ratio >= limit
    } else {
        ratio <= limit
    };
    let sign = if higher_is_better { ">=" } else { "<=" };
    println!(
        "target: {what}: {ratio:.2} ({sign} {limit}) {}",
        if met { "MET" } else { "MISSED" }
    );
}

/// Looks a side up by name.
pub fn find<'r>(results: &'r [Measured], name: &str) -> &'r Measured {
    results
        .iter()
        .find(|r| r.name == name)
        .unwrap_or_else(|| panic!("no side named {name}"))
}

/// Times `f` once.
pub fn timed(f: impl FnOnce()) -> Duration {
    let start = Instant::now();
    f();
    start.elapsed()
}

/// A current-thread runtime with IO and time, as every single-thread side uses.
pub fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime")
}

/// Times `f` run to completion on `rt` (the clock starts inside the runtime).
pub fn timed_async<F: std::future::Future<Output = ()>>(
    rt: &tokio::runtime::Runtime,
    f: F,
) -> Duration {
    rt.block_on(async {
        let start = Instant::now();
        f.await;
        start.elapsed()
    })
}

/// Pins the calling thread to one CPU, returning what it was allowed before.
/// Where two ping-ponging threads land (same core or not) decides the cost of
/// a wake-up far more than any code under test, so benchmarks fix it.
pub fn pin_to(cpu: usize) -> Option<nix::sched::CpuSet> {
    let this = nix::unistd::Pid::from_raw(0);
    let before = nix::sched::sched_getaffinity(this).ok()?;
    let mut only = nix::sched::CpuSet::new();
    only.set(cpu).ok()?;
    nix::sched::sched_setaffinity(this, &only).ok()?;
    Some(before)
}

/// Undoes [`pin_to`].
pub fn unpin(before: Option<nix::sched::CpuSet>) {
    if let Some(before) = before {
        let _ = nix::sched::sched_setaffinity(nix::unistd::Pid::from_raw(0), &before);
    }
}
