//! Warnings caused by peers, rate-limited.
//!
//! A peer decides how many malformed requests or records it sends: one warning
//! each would let it make the server write a million log lines with a megabyte of
//! garbage. Peer-caused warnings therefore share one process-wide budget (a token
//! bucket: bursts of `BURST`, refilled at `PER_SECOND`). What the budget drops is
//! counted, and the count is reported as `suppressed` on the next warning logged.

use std::sync::Mutex;
use std::time::Instant;

const BURST: f64 = 100.0;
const PER_SECOND: f64 = 100.0;

struct Bucket {
    tokens: f64,
    refilled: Instant,
    suppressed: u64,
}

static BUCKET: Mutex<Option<Bucket>> = Mutex::new(None);

/// Takes one warning from the budget: `Some(n)` if it may be logged, where `n`
/// warnings were suppressed since the last one logged; `None` to drop it.
pub fn allow() -> Option<u64> {
    let mut guard = BUCKET
        .lock()
        .unwrap_or_else(|poisoned| poisoned.into_inner());
    let now = Instant::now();
    let bucket = guard.get_or_insert(Bucket {
        tokens: BURST,
        refilled: now,
        suppressed: 0,
    });
    let elapsed = now.duration_since(bucket.refilled).as_secs_f64();
    bucket.tokens = (bucket.tokens + elapsed * PER_SECOND).min(BURST);
    bucket.refilled = now;
    if bucket.tokens >= 1.0 {
        bucket.tokens -= 1.0;
        Some(std::mem::take(&mut bucket.suppressed))
    } else {
        bucket.suppressed += 1;
        None
    }
}

/// `tracing::warn!` for an event a peer caused, within the shared budget.
macro_rules! peer_warn {
    ($($field:tt)*) => {
        if let Some(suppressed) = $crate::peer_warning::allow() {
            tracing::warn!(suppressed, $($field)*);
        }
    };
}

pub(crate) use peer_warn;
