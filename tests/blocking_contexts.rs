//! Where the blocking facade may block: every row of the table in
//! `tokio_imc::blocking`'s docs, each on a fresh runtime.

mod common;

use std::io::{self, ErrorKind, Read};
use std::process::Stdio;
use std::time::Duration;

use common::{child, child_role, ensure, fail, fails_with, run_without_runtime, CHILD_OK, HANG};
use tokio_imc::blocking;

/// A blocking session that really waits: an `accept` served only after it
/// started waiting, a `recv_timeout` that times out, then a round trip.
fn blocking_session() -> io::Result<()> {
    let (address, bound) = blocking::make_bound_socket()?;
    let (started_tx, started_rx) = std::sync::mpsc::channel::<()>();
    let client = std::thread::spawn(move || -> io::Result<blocking::ConnectedSocket> {
        // Connect once the server says it is about to wait in accept.
        started_rx
            .recv()
            .map_err(|_| fail("the server never started accepting"))?;
        address.connect()
    });
    started_tx
        .send(())
        .map_err(|_| fail("the client thread is gone"))?;
    let mut server = bound.accept_timeout(HANG)?;
    let mut client = client
        .join()
        .map_err(|_| fail("the client thread panicked"))??;
    fails_with(
        server.recv_timeout(Duration::from_millis(30)),
        ErrorKind::TimedOut,
        "recv_timeout with nothing sent",
    )?;
    client.send(b"ping", &[])?;
    let message = server
        .recv_timeout(HANG)?
        .ok_or_else(|| fail("end-of-stream instead of a message"))?;
    ensure(&message.data[..] == b"ping", "the message arrived intact")?;
    server.send(b"pong", &[])?;
    let reply = client.recv()?.ok_or_else(|| fail("no reply"))?;
    ensure(&reply.data[..] == b"pong", "the reply arrived intact")
}

/// A refused blocking call: the error names the problem, nothing was sent, and
/// the objects work afterwards from a thread where blocking is allowed.
fn expect_refusal(
    a: &mut blocking::ConnectedSocket,
    b: &mut blocking::ConnectedSocket,
) -> io::Result<()> {
    let err = fails_with(
        a.send(b"refused", &[]),
        ErrorKind::Other,
        "a blocking send on a runtime thread",
    )?;
    ensure(
        err.to_string().contains("drives a Tokio runtime"),
        format!("unexpected error: {err}"),
    )?;
    let err = b
        .recv_timeout(HANG)
        .err()
        .ok_or_else(|| fail("a blocking recv was allowed on a runtime thread"))?;
    ensure(
        err.to_string().contains("spawn_blocking"),
        format!("the error points to the way out: {err}"),
    )
}

fn after_refusal(mut a: blocking::ConnectedSocket, mut b: blocking::ConnectedSocket) {
    a.send(b"after", &[]).expect("send after a refusal");
    let message = b
        .recv_timeout(HANG)
        .expect("recv after a refusal")
        .expect("a message");
    assert_eq!(&message.data[..], b"after", "the refused send sent nothing");
}

fn multi_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("build a multi-thread runtime")
}

fn current_thread() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("build a current-thread runtime")
}

#[test]
fn a_plain_thread_blocks() {
    run_without_runtime(|| {
        std::thread::spawn(blocking_session)
            .join()
            .expect("thread")
            .expect("a blocking session on a plain thread");
    });
}

#[test]
fn spawn_blocking_on_a_multi_thread_runtime_blocks_from_several_pool_threads_at_once() {
    run_without_runtime(|| {
        let runtime = multi_thread();
        runtime.block_on(async {
            let sessions: Vec<_> = (0..4)
                .map(|_| tokio::task::spawn_blocking(blocking_session))
                .collect();
            for session in sessions {
                session
                    .await
                    .expect("the blocking task")
                    .expect("a blocking session inside spawn_blocking");
            }
        });
        runtime.shutdown_timeout(HANG);
    });
}

#[test]
fn spawn_blocking_on_a_current_thread_runtime_blocks() {
    run_without_runtime(|| {
        let runtime = current_thread();
        runtime.block_on(async {
            let sessions: Vec<_> = (0..2)
                .map(|_| tokio::task::spawn_blocking(blocking_session))
                .collect();
            for session in sessions {
                session
                    .await
                    .expect("the blocking task")
                    .expect("a blocking session inside spawn_blocking");
            }
        });
        runtime.shutdown_timeout(HANG);
    });
}

#[test]
fn block_in_place_on_a_multi_thread_runtime_blocks() {
    run_without_runtime(|| {
        let runtime = multi_thread();
        runtime.block_on(async {
            tokio::spawn(async { tokio::task::block_in_place(blocking_session) })
                .await
                .expect("the task")
                .expect("a blocking session inside block_in_place");
        });
        runtime.shutdown_timeout(HANG);
    });
}

#[test]
fn a_worker_thread_is_refused() {
    run_without_runtime(|| {
        let (mut a, mut b) = blocking::ConnectedSocket::pair().expect("pair");
        let runtime = multi_thread();
        let (a, b) = runtime.block_on(async move {
            tokio::spawn(async move { expect_refusal(&mut a, &mut b).map(|()| (a, b)) })
                .await
                .expect("the task")
                .expect("a refusal on a worker thread")
        });
        runtime.shutdown_timeout(HANG);
        after_refusal(a, b);
    });
}

#[test]
fn block_on_of_a_current_thread_runtime_is_refused() {
    run_without_runtime(|| {
        let (mut a, mut b) = blocking::ConnectedSocket::pair().expect("pair");
        let runtime = current_thread();
        runtime
            .block_on(async { expect_refusal(&mut a, &mut b) })
            .expect("a refusal inside block_on");
        drop(runtime);
        after_refusal(a, b);
    });
}

#[test]
fn block_on_of_a_multi_thread_runtime_is_refused() {
    run_without_runtime(|| {
        let (mut a, mut b) = blocking::ConnectedSocket::pair().expect("pair");
        let runtime = multi_thread();
        runtime
            .block_on(async { expect_refusal(&mut a, &mut b) })
            .expect("a refusal inside block_on");
        runtime.shutdown_timeout(HANG);
        after_refusal(a, b);
    });
}

#[test]
fn refusals_print_no_panic_message_and_other_panics_still_do() {
    const TEST: &str = "refusals_print_no_panic_message_and_other_panics_still_do";
    if child_role().is_some() {
        let (mut a, mut b) = blocking::ConnectedSocket::pair().expect("pair");
        for _ in 0..3 {
            current_thread()
                .block_on(async { expect_refusal(&mut a, &mut b) })
                .expect("a refusal inside block_on");
        }
        after_refusal(a, b);
        // A panic of the program's own is reported as before.
        let _ = std::panic::catch_unwind(|| panic!("a panic of the program's own"));
        std::process::exit(CHILD_OK);
    }
    run_without_runtime(|| {
        let mut running = child(TEST, "refuser")
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn the child");
        let mut stderr = String::new();
        running
            .stderr
            .take()
            .expect("piped stderr")
            .read_to_string(&mut stderr)
            .expect("read the child's stderr");
        let status = running.wait().expect("wait for the child");
        assert_eq!(status.code(), Some(CHILD_OK), "child: {stderr}");
        assert!(
            !stderr.contains("Cannot start a runtime"),
            "a refusal printed Tokio's panic message: {stderr}"
        );
        assert!(
            stderr.contains("a panic of the program's own"),
            "the program's own panics are still reported: {stderr}"
        );
    });
}

#[test]
fn worker_threads_racing_to_first_use_are_all_refused_without_a_panic() {
    const TEST: &str = "worker_threads_racing_to_first_use_are_all_refused_without_a_panic";
    const RACERS: usize = 8;
    if child_role().is_some() {
        // A fresh process: nothing has built the shared runtime yet, and every
        // racer's blocking call is the first use.
        let pairs: Vec<_> = (0..RACERS)
            .map(|_| blocking::ConnectedSocket::pair().expect("pair"))
            .collect();
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(RACERS)
            .enable_all()
            .build()
            .expect("build a multi-thread runtime");
        let start = std::sync::Arc::new(std::sync::Barrier::new(RACERS));
        let pairs = runtime.block_on(async move {
            let racers: Vec<_> = pairs
                .into_iter()
                .map(|(mut a, mut b)| {
                    let start = start.clone();
                    tokio::spawn(async move {
                        // Every worker holds here until all are in place.
                        start.wait();
                        expect_refusal(&mut a, &mut b).map(|()| (a, b))
                    })
                })
                .collect();
            let mut pairs = Vec::new();
            for racer in racers {
                pairs.push(
                    racer
                        .await
                        .expect("a racer panicked")
                        .expect("a refusal on a worker thread"),
                );
            }
            pairs
        });
        runtime.shutdown_timeout(HANG);
        for (a, b) in pairs {
            after_refusal(a, b);
        }
        std::process::exit(CHILD_OK);
    }
    run_without_runtime(|| {
        for round in 0..5 {
            let output = child(TEST, "racer").output().expect("run the child");
            assert_eq!(
                output.status.code(),
                Some(CHILD_OK),
                "round {round}: {}",
                String::from_utf8_lossy(&output.stderr)
            );
        }
    });
}
