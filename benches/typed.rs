//! Typed messages (feature `serde`) against the raw path and the peer crates,
//! ipc-channel 0.23 and tokio-unix-ipc 0.4, interleaved in this one process
//! (see `harness`).
//!
//! ```text
//! cargo bench --bench typed                # everything
//! cargo bench --bench typed -- small       # one group: small, blocking, bulk_1MiB, bulk_64MiB,
//!                                           # handover, threshold
//! cargo bench --bench typed -- --quick     # a fast smoke run
//! ```

mod harness;

use std::os::fd::{AsFd, OwnedFd};
use std::time::{Duration, Instant};

use harness::{compare, current_thread, pin_to, target, timed_async, unpin, Settings, Side};
use serde::{Deserialize, Serialize};
use tokio_imc::typed::{Channel, Fd};
use tokio_imc::{blocking, ConnectedSocket, SharedMemory};

fn main() {
    let settings = Settings::from_args();
    println!(
        "# tokio-imc typed benchmarks ({} cores)",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );
    if settings.wants("small") {
        small_round_trip(&settings);
    }
    if settings.wants("blocking") {
        // The target is of record on one core (like with like: a wake-up
        // there is a context switch); across cores the VM's wake-up latency
        // decides, for both sides alike.
        blocking_round_trip(&settings, 0);
        blocking_round_trip(&settings.with_round_time(settings.round_time * 4), 1);
    }
    for (group, size) in [("bulk_1MiB", 1 << 20), ("bulk_64MiB", 64 << 20)] {
        if settings.wants(group) {
            bulk_one_way(&settings, size);
        }
    }
    if settings.wants("handover") {
        handover(&settings);
    }
    if settings.wants("threshold") {
        threshold(&settings);
    }
}

fn null_fd() -> OwnedFd {
    OwnedFd::from(std::fs::File::open("/dev/null").expect("/dev/null"))
}

/// The issue's small message, for tokio-imc.
#[derive(Serialize, Deserialize)]
struct Small {
    id: u64,
    name: String,
    fd: Option<Fd>,
}

/// The same for tokio-unix-ipc, whose descriptor type is `Handle` (taken out
/// on serialization, so a new one per message).
#[derive(Serialize, Deserialize)]
struct SmallUnixIpc {
    id: u64,
    name: String,
    fd: Option<tokio_unix_ipc::serde::Handle<OwnedFd>>,
}

/// The same for ipc-channel, which carries no arbitrary descriptors: the
/// field is `None` on its side (it does less work, not more).
#[derive(Serialize, Deserialize, Clone)]
struct SmallIpcChannel {
    id: u64,
    name: String,
    fd: Option<u32>,
}

const NAME: &str = "a name of exactly thirty-two b.";

fn small_round_trip(settings: &Settings) {
    let rt = current_thread();
    let fd = null_fd();

    let (a, b) = ConnectedSocket::pair().expect("pair");
    let (mut ta, mut tb) = (
        Channel::<Small, Small>::new(a),
        Channel::<Small, Small>::new(b),
    );
    let message = Small {
        id: 7,
        name: NAME.to_string(),
        fd: Some(Fd::from(fd.try_clone().expect("dup"))),
    };
    let typed = Side::new("tokio-imc typed::Channel", |n| {
        timed_async(&rt, async {
            for _ in 0..n {
                ta.send(&message).await.expect("send");
                let got = tb.recv().await.expect("recv").expect("open");
                tb.send(&got).await.expect("send");
                drop(ta.recv().await.expect("recv"));
            }
        })
    });

    // The raw path with the same bytes and descriptor.
    let (mut ra, mut rb) = ConnectedSocket::pair().expect("pair");
    let encoded = {
        let mut bytes = vec![0u8];
        bytes.extend(postcard::to_allocvec(&(7u64, NAME, Some(0u32))).expect("encode"));
        bytes
    };
    let raw = Side::new("tokio-imc ConnectedSocket, same bytes", |n| {
        timed_async(&rt, async {
            for _ in 0..n {
                ra.send(&encoded, &[fd.as_fd()]).await.expect("send");
                let got = rb.recv().await.expect("recv").expect("open");
                rb.send(&got.data, &[got.fds[0].as_fd()])
                    .await
                    .expect("send");
                drop(ra.recv().await.expect("recv"));
            }
        })
    });

    let (ua_tx, ua_rx) = rt
        .block_on(async { tokio_unix_ipc::channel::<SmallUnixIpc, SmallUnixIpc>() })
        .expect("channel");
    let (ub_tx, ub_rx) = rt
        .block_on(async { tokio_unix_ipc::channel::<SmallUnixIpc, SmallUnixIpc>() })
        .expect("channel");
    let unix_ipc = Side::new("tokio-unix-ipc 0.4", |n| {
        timed_async(&rt, async {
            for _ in 0..n {
                let out = SmallUnixIpc {
                    id: 7,
                    name: NAME.to_string(),
                    fd: Some(tokio_unix_ipc::serde::Handle::new(
                        fd.try_clone().expect("dup"),
                    )),
                };
                ua_tx.send(out).await.expect("send");
                let got = ua_rx.recv().await.expect("recv");
                ub_tx.send(got).await.expect("send");
                drop(ub_rx.recv().await.expect("recv"));
            }
        })
    });
    let results = compare(
        settings,
        "small typed message round trip (u64, 32-byte String, one fd), one current-thread runtime",
        "round trip",
        vec![typed, raw, unix_ipc],
    );
    target(
        "typed / raw ConnectedSocket, same bytes",
        results[0].ratio_to(&results[1]),
        1.15,
        false,
    );
    target(
        "typed / tokio-unix-ipc",
        results[0].ratio_to(&results[2]),
        0.7,
        false,
    );
}

/// Echo peers on their own threads, pinned to `echo_cpu`; the measuring
/// thread, pinned to CPU 0, sends and waits.
fn blocking_round_trip(settings: &Settings, echo_cpu: usize) {
    let before = pin_to(0);
    let (a, b) = blocking::ConnectedSocket::pair().expect("pair");
    let ours = blocking::typed::Channel::<Small, Small>::new(a);
    let mut theirs = blocking::typed::Channel::<Small, Small>::new(b);
    let imc_echo = std::thread::spawn(move || {
        pin_to(echo_cpu);
        while let Ok(Some(message)) = theirs.recv() {
            if theirs.send(&message).is_err() {
                break;
            }
        }
    });
    let fd = null_fd();
    let message = Small {
        id: 7,
        name: NAME.to_string(),
        fd: None,
    };
    let with_fd = Small {
        id: 7,
        name: NAME.to_string(),
        fd: Some(Fd::from(fd.try_clone().expect("dup"))),
    };
    let mut ours_fd = ours;
    let imc = Side::new("tokio-imc blocking::typed::Channel, fd None", |n| {
        let start = Instant::now();
        for _ in 0..n {
            ours_fd.send(&message).expect("send");
            drop(ours_fd.recv().expect("recv"));
        }
        start.elapsed()
    });

    let (tx, rx) = ipc_channel::ipc::channel::<SmallIpcChannel>().expect("channel");
    let (back_tx, back_rx) = ipc_channel::ipc::channel::<SmallIpcChannel>().expect("channel");
    let ipc_echo = std::thread::spawn(move || {
        pin_to(echo_cpu);
        while let Ok(message) = rx.recv() {
            if back_tx.send(message).is_err() {
                break;
            }
        }
    });
    let ipc_message = SmallIpcChannel {
        id: 7,
        name: NAME.to_string(),
        fd: None,
    };
    let ipc = Side::new("ipc-channel 0.23, fd None", |n| {
        let start = Instant::now();
        for _ in 0..n {
            tx.send(ipc_message.clone()).expect("send");
            drop(back_rx.recv().expect("recv"));
        }
        start.elapsed()
    });
    let place = match echo_cpu {
        0 => "same core",
        _ => "other core",
    };
    let results = compare(
        settings,
        &format!("small typed message round trip, blocking, echo on another thread, {place}"),
        "round trip",
        vec![imc, ipc],
    );
    let ratio = results[0].ratio_to(&results[1]);
    match echo_cpu {
        0 => target("blocking typed / ipc-channel, same core", ratio, 0.7, false),
        _ => println!("blocking typed / ipc-channel, other core: {ratio:.2} (reference)"),
    }
    drop(with_fd);
    drop(results);
    // Both echo threads end when their peer goes.
    drop(tx);
    drop(ours_fd);
    let _ = ipc_echo.join();
    let _ = imc_echo.join();
    unpin(before);
}

fn filled(size: usize) -> Vec<u8> {
    (0..size).map(|i| (i % 251) as u8).collect()
}

fn bulk_one_way(settings: &Settings, size: usize) {
    let rt = current_thread();
    let settings = settings.with_round_time(Duration::from_millis(200));
    let mb = size >> 20;

    let (a, b) = ConnectedSocket::pair().expect("pair");
    let (mut ta, mut tb) = (
        Channel::<Vec<u8>, ()>::new(a).with_max_message_size(size * 2),
        Channel::<(), Vec<u8>>::new(b).with_max_message_size(size * 2),
    );
    let typed = Side::new(format!("tokio-imc typed, Vec<u8> {mb} MiB"), |n| {
        timed_async(&rt, async {
            for _ in 0..n {
                let payload = filled(size);
                ta.send(&payload).await.expect("send");
                let got = tb.recv().await.expect("recv").expect("open");
                assert_eq!(got.len(), size);
                std::hint::black_box(got.iter().map(|&b| u64::from(b)).sum::<u64>());
            }
        })
    });

    let (ux, ur) = rt
        .block_on(async { tokio_unix_ipc::channel::<Vec<u8>, Vec<u8>>() })
        .expect("channel");
    let unix_ipc = Side::new(format!("tokio-unix-ipc 0.4, {mb} MiB"), |n| {
        timed_async(&rt, async {
            for _ in 0..n {
                let payload = filled(size);
                let (sent, got) = tokio::join!(ux.send(payload), ur.recv());
                sent.expect("send");
                let got = got.expect("recv");
                assert_eq!(got.len(), size);
                std::hint::black_box(got.iter().map(|&b| u64::from(b)).sum::<u64>());
            }
        })
    });

    let (itx, irx) = ipc_channel::ipc::channel::<Vec<u8>>().expect("channel");
    let (ack_tx, ack_rx) = std::sync::mpsc::channel::<()>();
    let ipc_receiver = std::thread::spawn(move || {
        while let Ok(got) = irx.recv() {
            assert_eq!(got.len(), size);
            std::hint::black_box(got.iter().map(|&b| u64::from(b)).sum::<u64>());
            if ack_tx.send(()).is_err() {
                break;
            }
        }
    });
    let ipc = Side::new(
        format!("ipc-channel 0.23, {mb} MiB (receiver thread)"),
        |n| {
            let start = Instant::now();
            for _ in 0..n {
                itx.send(filled(size)).expect("send");
                ack_rx.recv().expect("ack");
            }
            start.elapsed()
        },
    );

    // The floor: fill, one memcpy, read.
    let memcpy = Side::new(format!("memcpy of {mb} MiB (fill, copy, read)"), |n| {
        let mut target_buf = vec![0u8; size];
        let start = Instant::now();
        for _ in 0..n {
            let payload = filled(size);
            target_buf.copy_from_slice(std::hint::black_box(&payload));
            std::hint::black_box(target_buf.iter().map(|&b| u64::from(b)).sum::<u64>());
        }
        start.elapsed()
    });
    let results = compare(
        &settings,
        &format!("Vec<u8> of {mb} MiB one way, filled and read"),
        "message",
        vec![typed, unix_ipc, ipc, memcpy],
    );
    // Throughput ratios are inverse time ratios.
    target(
        &format!("typed throughput / tokio-unix-ipc, {mb} MiB"),
        1.0 / results[0].ratio_to(&results[1]),
        2.0,
        true,
    );
    target(
        &format!("typed throughput / ipc-channel, {mb} MiB"),
        1.0 / results[0].ratio_to(&results[2]),
        2.0,
        true,
    );
    target(
        &format!("typed throughput / memcpy floor, {mb} MiB"),
        1.0 / results[0].ratio_to(&results[3]),
        0.5,
        true,
    );
    drop(results);
    drop(itx);
    let _ = ipc_receiver.join();
}

fn handover(settings: &Settings) {
    let rt = current_thread();
    let mut channels = Vec::new();
    for size in [4usize << 10, 64 << 20] {
        let memory = SharedMemory::copy_from_slice(&filled(size)).expect("memory");
        let (a, b) = ConnectedSocket::pair().expect("pair");
        channels.push((
            Channel::<SharedMemory, ()>::new(a),
            Channel::<(), SharedMemory>::new(b),
            memory,
            size,
        ));
    }
    let mut sides = Vec::new();
    for (a, b, memory, size) in channels.iter_mut() {
        let rt = &rt;
        sides.push(Side::new(
            format!("hand over a {} KiB SharedMemory", *size >> 10),
            move |n| {
                timed_async(rt, async {
                    for _ in 0..n {
                        a.send(memory).await.expect("send");
                        let got = b.recv().await.expect("recv").expect("open");
                        assert_eq!(got.len(), *size);
                    }
                })
            },
        ));
    }
    let results = compare(
        settings,
        "SharedMemory handed over: send, receive, verify seals and size, map (pages untouched)",
        "handover",
        sides,
    );
    target(
        "64 MiB handover / 4 KiB handover",
        results[1].ratio_to(&results[0]),
        2.0,
        false,
    );
}

/// Where shared memory starts to pay: one message of each size, inline
/// (forced, as the raw path with the same bytes) against through shared memory.
fn threshold(settings: &Settings) {
    let rt = current_thread();
    for size in [16usize << 10, 64 << 10, 128 << 10] {
        let payload = filled(size);
        let (mut ra, mut rb) = ConnectedSocket::pair().expect("pair");
        let inline = Side::new(format!("{} KiB inline, one record", size >> 10), |n| {
            timed_async(&rt, async {
                for _ in 0..n {
                    ra.send(&payload, &[]).await.expect("send");
                    let got = rb.recv().await.expect("recv").expect("open");
                    std::hint::black_box(got.data.iter().map(|&b| u64::from(b)).sum::<u64>());
                }
            })
        });
        let (mut sa, mut sb) = ConnectedSocket::pair().expect("pair");
        let shared = Side::new(format!("{} KiB in sealed memory", size >> 10), |n| {
            timed_async(&rt, async {
                for _ in 0..n {
                    let memory = SharedMemory::copy_from_slice(&payload).expect("memory");
                    sa.send(b"m", &[memory.as_fd()]).await.expect("send");
                    drop(memory);
                    let mut got = sb.recv().await.expect("recv").expect("open");
                    let memory = SharedMemory::try_from(got.fds.remove(0)).expect("verify");
                    std::hint::black_box(memory.iter().map(|&b| u64::from(b)).sum::<u64>());
                }
            })
        });
        compare(
            settings,
            &format!("{} KiB: one record against sealed memory", size >> 10),
            "message",
            vec![inline, shared],
        );
    }
}
