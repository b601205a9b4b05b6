//! A peer cannot make the server write one log line per byte of garbage: warnings
//! caused by peers share a budget, and what the budget drops is counted and
//! reported (`suppressed=N`) with the next warning logged. In its own test binary
//! because the budget is process-wide.

mod common;

use std::os::fd::AsFd;
use std::time::{Duration, Instant};

use common::{bounded, ensure, fail, raw_send, run, Logs};
use tokio_imc::make_bound_socket;

const GARBAGE: usize = 20_000;

/// The `suppressed=N` values in the logged warnings, and how many were logged.
fn tally(text: &str) -> (usize, u64) {
    let lines: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("dropped a malformed connect request"))
        .collect();
    let suppressed = lines
        .iter()
        .filter_map(|l| l.split("suppressed=").nth(1))
        .filter_map(|rest| rest.split_whitespace().next())
        .filter_map(|n| n.parse::<u64>().ok())
        .sum();
    (lines.len(), suppressed)
}

#[test]
fn a_flood_of_garbage_bytes_logs_a_bounded_number_of_warnings_and_counts_the_rest() {
    let logs = Logs::default();
    let _capture = logs.capture();
    run(|| async {
        let (address, bound) = make_bound_socket()?;
        let started = Instant::now();
        for chunk in vec![0u8; GARBAGE].chunks(4096) {
            raw_send(address.as_fd(), chunk, &[])?;
        }
        let (client, server) = tokio::join!(
            address.connect(),
            bounded("accept after the flood", bound.accept())
        );
        let (_client, _server) = (client?, server??);
        let elapsed = started.elapsed().as_secs_f64();
        let (logged, _) = tally(&logs.text());
        let allowed = 100.0 + 100.0 * elapsed + 1.0;
        ensure(
            (logged as f64) <= allowed,
            format!("{logged} warnings logged for {GARBAGE} bad requests in {elapsed:.2}s"),
        )?;
        ensure(logged >= 1, "the flood was reported")?;

        // Once the budget refills, the next warning carries the count of the
        // dropped ones: nothing vanishes without a trace.
        tokio::time::sleep(Duration::from_millis(1100)).await;
        raw_send(address.as_fd(), b"x", &[])?;
        let (client, server) = tokio::join!(address.connect(), bounded("accept", bound.accept()));
        let (_client, _server) = (client?, server??);
        let (logged, suppressed) = tally(&logs.text());
        ensure(
            suppressed > 0,
            "a summary of suppressed warnings was logged",
        )?;
        ensure(
            logged as u64 + suppressed == GARBAGE as u64 + 1,
            format!(
                "{logged} logged + {suppressed} suppressed != {} rejected",
                GARBAGE + 1
            ),
        )
        .map_err(|e| fail(e.to_string()))
    });
}
