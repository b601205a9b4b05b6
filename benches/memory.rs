//! User-space memory per idle connection: 5,000 tokio-imc `ConnectedSocket` pairs
//! against 5,000 tokio `UnixStream` pairs, both ends in this process (10,000
//! descriptors each; the per-process limit here is 20,000).
//!
//! ```text
//! cargo bench --bench memory
//! ```
//!
//! Counted by a global allocator that tracks live heap bytes, plus the resident
//! set size from `/proc/self/statm` for what the allocator does not see. Each row
//! is measured in its own child process.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

// SAFETY: forwards every call to the system allocator unchanged; only counts.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        LIVE.fetch_add(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.alloc(layout) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE.fetch_sub(layout.size() as isize, Ordering::Relaxed);
        // SAFETY: same contract as ours.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

const PAIRS: usize = 5000;

fn rss_bytes() -> isize {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: isize = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

/// Live heap bytes and RSS added by `make`, per socket (two per pair).
fn measure<T>(make: impl Fn() -> T) -> (f64, f64, Vec<T>) {
    let heap_before = LIVE.load(Ordering::Relaxed);
    let rss_before = rss_bytes();
    let mut kept = Vec::with_capacity(PAIRS);
    let vec_bytes = (PAIRS * std::mem::size_of::<T>()) as isize;
    for _ in 0..PAIRS {
        kept.push(make());
    }
    let heap = (LIVE.load(Ordering::Relaxed) - heap_before - vec_bytes) as f64 + vec_bytes as f64;
    let rss = (rss_bytes() - rss_before) as f64;
    (heap / (2 * PAIRS) as f64, rss / (2 * PAIRS) as f64, kept)
}

/// Polls `future` once, inside the current runtime, and reports whether it was
/// pending (it is then dropped, as a cancelled wait).
fn poll_once_pending<F: std::future::Future>(future: F) -> bool {
    let mut future = std::pin::pin!(future);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    future.as_mut().poll(&mut cx).is_pending()
}

/// Each case runs in a fresh child process (this binary again, with the case
/// named in this variable), so one case's freed memory cannot lower the next
/// one's RSS delta.
const CASE_VAR: &str = "TOKIO_IMC_MEMORY_CASE";

/// Messages kept by the user in the "kept" cases.
const KEPT: usize = 10_000;
/// Their length.
const KEPT_LEN: usize = 16;

const CASES: [(&str, &str); 3] = [
    ("fresh", "tokio_imc::ConnectedSocket"),
    ("registered", "  ... after a recv waited"),
    ("tokio", "tokio::net::UnixStream"),
];

fn main() {
    if let Ok(case) = std::env::var(CASE_VAR) {
        if let Some(exact) = match case.as_str() {
            "kept-imc" => Some(false),
            "kept-exact" => Some(true),
            _ => None,
        } {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            println!("RESULT {}", rt.block_on(kept_heap(exact)));
            return;
        }
        let (heap, rss, size) = run_case(&case);
        println!("RESULT {heap} {rss} {size}");
        return;
    }
    println!("# memory per idle connection ({PAIRS} pairs, both ends in one process; one process per row)");
    println!(
        "| {:<28} | {:>14} | {:>16} | {:>12} |",
        "type", "heap B/socket", "RSS B/socket", "size_of"
    );
    println!("|{:-<30}|{:->16}|{:->18}|{:->14}|", "", "", "", "");
    let mut heaps = Vec::new();
    for (case, label) in CASES {
        let result = child_result(case);
        println!(
            "| {:<28} | {:>14.0} | {:>16.0} | {:>12} |",
            label, result[0], result[1], result[2]
        );
        heaps.push(result[0]);
    }
    let tokio_heap = heaps[2];
    for (what, ours) in [
        ("never waited", heaps[0]),
        ("after a recv waited", heaps[1]),
    ] {
        let ratio = ours / tokio_heap;
        let verdict = if ratio <= 1.0 { "MET" } else { "MISSED" };
        println!("target: heap per ConnectedSocket ({what}) / per UnixStream: {ratio:.2} (<= 1) {verdict}");
    }
    kept_messages();
}

/// Heap kept by received messages: after one 200 KB record on the same thread,
/// 10,000 16-byte messages received with `recv` and kept, against the same
/// messages each copied into an exact `Bytes` (what a user of a plain socket
/// would keep). Each side runs in its own child process.
fn kept_messages() {
    println!();
    println!("# heap kept by {KEPT} received {KEPT_LEN}-byte messages after one 200 KB record (one process per row)");
    println!("| {:<40} | {:>16} |", "messages kept", "heap B/message");
    println!("|{:-<42}|{:->18}|", "", "");
    let mut per_message = Vec::new();
    for (case, label) in [
        ("kept-imc", "tokio_imc recv (Bytes)"),
        ("kept-exact", "exact Bytes::copy_from_slice"),
    ] {
        let heap = child_result(case)[0];
        println!("| {label:<40} | {heap:>16.1} |");
        per_message.push(heap);
    }
    let ratio = per_message[0] / per_message[1];
    let verdict = if ratio <= 2.0 { "MET" } else { "MISSED" };
    println!("target: heap per kept message, tokio-imc / exact: {ratio:.2} (<= 2) {verdict}");
}

/// Runs `case` in a child process and returns the numbers it printed.
fn child_result(case: &str) -> Vec<f64> {
    let output = std::process::Command::new(std::env::current_exe().expect("this binary"))
        .env(CASE_VAR, case)
        .output()
        .expect("run a measuring child");
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .unwrap_or_else(|| panic!("case {case} printed no result: {stdout}"))
        .split_whitespace()
        .map(|field| field.parse().expect("a number"))
        .collect()
}

/// Heap bytes per message kept: `KEPT` messages of `KEPT_LEN` bytes, received
/// after one 200 KB record, by tokio-imc's `recv` or copied exactly.
async fn kept_heap(exact: bool) -> f64 {
    let (mut a, mut b) = tokio_imc::ConnectedSocket::pair().expect("pair");
    a.send(&vec![1u8; 200_000], &[]).await.expect("send");
    drop(b.recv().await.expect("recv"));
    let (mut a, mut b) = tokio_imc::ConnectedSocket::pair().expect("another peer's pair");
    let message = [7u8; KEPT_LEN];
    let mut kept: Vec<bytes::Bytes> = Vec::with_capacity(KEPT);
    let mut buffer = bytes::BytesMut::with_capacity(tokio_imc::MAX_RECV_SIZE);
    let mut fds = Vec::new();
    let before = LIVE.load(Ordering::Relaxed);
    for _ in 0..KEPT {
        a.send(&message, &[]).await.expect("send");
        let data = if exact {
            buffer.clear();
            b.recv_into(&mut buffer, &mut fds).await.expect("recv");
            bytes::Bytes::copy_from_slice(&buffer)
        } else {
            b.recv().await.expect("recv").expect("a message").data
        };
        assert_eq!(&data[..], &message[..], "the message arrived intact");
        kept.push(data);
    }
    let heap = (LIVE.load(Ordering::Relaxed) - before) as f64 / KEPT as f64;
    drop(kept);
    heap
}

/// Measures one case: heap bytes, RSS bytes and `size_of` per socket.
fn run_case(case: &str) -> (f64, f64, usize) {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    if let Ok((_, hard)) = getrlimit(Resource::RLIMIT_NOFILE) {
        let _ = setrlimit(Resource::RLIMIT_NOFILE, hard, hard);
    }
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        // Warm up both paths in every case so one-time allocations (driver slabs,
        // thread-locals, the first recv's 512 KiB overflow buffer) are charged to
        // none of them.
        let (mut a, mut b) = tokio_imc::ConnectedSocket::pair().expect("pair");
        a.send(b"warm up", &[]).await.expect("send");
        drop(b.recv().await.expect("recv"));
        assert!(
            poll_once_pending(b.recv()),
            "nothing was sent, so recv waits"
        );
        drop((a, b));
        drop(tokio::net::UnixStream::pair());

        match case {
            "fresh" => {
                let (heap, rss, kept) =
                    measure(|| tokio_imc::ConnectedSocket::pair().expect("pair"));
                drop(kept);
                (heap, rss, std::mem::size_of::<tokio_imc::ConnectedSocket>())
            }
            "registered" => {
                // An idle server connection has a recv waiting, so it is registered
                // with the reactor: make each socket wait once, then measure.
                let (heap, rss, kept) = measure(|| {
                    let (mut a, mut b) = tokio_imc::ConnectedSocket::pair().expect("pair");
                    for socket in [&mut a, &mut b] {
                        assert!(
                            poll_once_pending(socket.recv()),
                            "nothing was sent, so recv waits"
                        );
                    }
                    (a, b)
                });
                drop(kept);
                (heap, rss, std::mem::size_of::<tokio_imc::ConnectedSocket>())
            }
            "tokio" => {
                let (heap, rss, kept) = measure(|| tokio::net::UnixStream::pair().expect("pair"));
                drop(kept);
                (heap, rss, std::mem::size_of::<tokio::net::UnixStream>())
            }
            other => panic!("unknown case {other}"),
        }
    })
}
