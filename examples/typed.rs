//! Typed jobs for a sandboxed worker: each job's input is a multi-megabyte
//! sealed `SharedMemory`, and its reply address is a minted `SocketAddress`
//! the worker answers through.
//!
//! ```text
//! cargo run --example typed
//! ```
//!
//! The worker is this program as a child, confined as in `examples/sandboxed.rs`
//! (no filesystem, no network, no privileges, a seccomp allowlist) before it
//! starts its runtime. It gets one connection by inheritance; everything else
//! (memory, addresses) arrives inside typed messages.

use std::io;
use std::os::fd::AsFd;

use serde::{Deserialize, Serialize};
use tokio_imc::typed::Channel;
use tokio_imc::{handoff, make_bound_socket, ConnectedSocket, SharedMemory, SocketAddress};

mod sandbox;

/// What the server sends the worker.
#[derive(Serialize, Deserialize)]
struct Job {
    id: u64,
    input: SharedMemory,
    reply_to: SocketAddress,
}

/// What the worker answers, through the job's own address.
#[derive(Serialize, Deserialize, Debug)]
struct Answer {
    id: u64,
    len: usize,
    checksum: u64,
}

fn checksum(bytes: &[u8]) -> u64 {
    // FNV-1a, over every byte.
    bytes.iter().fold(0xcbf2_9ce4_8422_2325, |hash, &b| {
        (hash ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

fn main() -> io::Result<()> {
    sandbox::main("worker", worker, server)
}

fn server() -> io::Result<()> {
    sandbox::runtime()?.block_on(async {
        let (ours, theirs) = ConnectedSocket::pair()?;
        let mut command = std::process::Command::new(std::env::current_exe()?);
        command.arg("worker");
        handoff::pass(&mut command, &[("jobs", theirs.as_fd())])?;
        let mut child = command.spawn()?;
        drop((command, theirs));
        println!("[server] started a sandboxed worker (pid {})", child.id());

        let mut jobs: Channel<Job, ()> = Channel::new(ours);
        let (_original, replies) = make_bound_socket()?;
        for id in 1..=3u64 {
            let len = (id as usize) * (3 << 20);
            let mut input = tokio_imc::SharedMemoryMut::new(len)?;
            for (i, byte) in input.iter_mut().enumerate() {
                *byte = (i as u64 * id % 251) as u8;
            }
            let input = input.freeze()?;
            let expected = checksum(&input);
            let (reply_id, reply_to) = replies.mint_address()?;
            jobs.send(&Job {
                id,
                input,
                reply_to,
            })
            .await?;
            println!("[server] sent job {id}: {len} bytes of sealed memory and a reply address");

            // The answer, unless the worker goes away first (its end of the job
            // channel closes).
            let connection = tokio::select! {
                accepted = replies.accept() => accepted?,
                _ = jobs.recv() => return Err(io::Error::other("the worker exited without answering")),
            };
            if connection.address_id() != Some(reply_id) {
                return Err(io::Error::other("an answer through the wrong address"));
            }
            let mut answers: Channel<(), Answer> = Channel::new(connection);
            let answer = answers
                .recv()
                .await?
                .ok_or_else(|| io::Error::other("the worker sent no answer"))?;
            let ok = answer.id == id && answer.len == len && answer.checksum == expected;
            println!(
                "[server] job {id} answered through its own address: {} bytes, checksum {}",
                answer.len,
                if ok { "matches" } else { "WRONG" }
            );
            if !ok {
                return Err(io::Error::other(format!("a wrong answer: {answer:?}")));
            }
            // One answer per address: it is done.
            replies.revoke(reply_id)?;
        }
        drop(jobs);
        let status = tokio::task::spawn_blocking(move || child.wait())
            .await
            .map_err(io::Error::other)??;
        println!("[server] the worker exited with {status}");
        if status.success() {
            Ok(())
        } else {
            Err(io::Error::other(format!("worker failed: {status}")))
        }
    })
}

fn worker() -> io::Result<()> {
    let jobs_fd = handoff::take("jobs")?;
    let entries = sandbox::confine()?;
    println!(
        "[worker] confined: my root has {entries} entries, no capabilities, Landlock and \
         seccomp on"
    );
    sandbox::runtime()?.block_on(async {
        let mut jobs: Channel<(), Job> = Channel::new(ConnectedSocket::try_from(jobs_fd)?);
        while let Some(job) = jobs.recv().await? {
            // The mapping is read-only and sealed: nobody can change it under us.
            let answer = Answer {
                id: job.id,
                len: job.input.len(),
                checksum: checksum(&job.input),
            };
            let mut reply: Channel<Answer, ()> = Channel::new(job.reply_to.connect().await?);
            reply.send(&answer).await?;
            println!(
                "[worker] job {}: read {} bytes from shared memory, answered",
                job.id,
                job.input.len()
            );
        }
        Ok(())
    })
}
