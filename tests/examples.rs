//! Runs every example the way a newcomer would, and checks what it prints.
//! `cargo test` builds the examples into `target/<profile>/examples/`.

use std::io::Read;
use std::path::PathBuf;
use std::process::Command;

fn example(name: &str) -> PathBuf {
    let exe = std::env::current_exe().expect("current_exe");
    let profile_dir = exe
        .parent()
        .and_then(|deps| deps.parent())
        .expect("target/<profile>");
    profile_dir.join("examples").join(name)
}

fn run(name: &str, expected: &[&str]) {
    let path = example(name);
    assert!(
        path.exists(),
        "{} was not built (cargo test builds examples)",
        path.display()
    );
    // Bounded: an example that hangs fails the test instead of stalling CI.
    // The pipes are drained on threads so a chatty example cannot fill them.
    let mut child = Command::new(&path)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run example");
    let drain = |mut pipe: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout_reader = drain(Box::new(child.stdout.take().expect("stdout")));
    let stderr_reader = drain(Box::new(child.stderr.take().expect("stderr")));
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(120);
    let status = loop {
        if let Some(status) = child.try_wait().expect("wait for example") {
            break status;
        }
        if std::time::Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!(
                "{name} hung:\n{}\n{}",
                String::from_utf8_lossy(&stdout_reader.join().expect("stdout")),
                String::from_utf8_lossy(&stderr_reader.join().expect("stderr"))
            );
        }
        std::thread::sleep(std::time::Duration::from_millis(10));
    };
    let output = std::process::Output {
        status,
        stdout: stdout_reader.join().expect("stdout"),
        stderr: stderr_reader.join().expect("stderr"),
    };
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "{name} failed: {}\n{stdout}\n{stderr}",
        output.status
    );
    for line in expected {
        assert!(
            stdout.contains(line),
            "{name} did not print {line:?}:\n{stdout}\n{stderr}"
        );
    }
}

#[test]
fn echo() {
    run(
        "echo",
        &[
            "[client] echo: \"hello, server\"",
            "[server] wrote into the client's memfd",
            "[client] the memfd now holds: \"written by the server",
            "accept now fails at once",
        ],
    );
}

#[test]
fn blocking() {
    run(
        "blocking",
        &[
            "[client] echo: \"hello, blocking server\"",
            "the memfd now holds: \"written by the blocking server\"",
        ],
    );
}

#[test]
fn broker() {
    run(
        "broker",
        &[
            "[client] echo: \"capabilities, not names\"",
            "not from the broker",
            "served 2 messages",
        ],
    );
}

#[test]
fn sandboxed() {
    // CI runs where user namespaces, Landlock and seccomp are available; the
    // example must really confine (it fails, naming the step, where it cannot).
    run(
        "sandboxed",
        &[
            "[child] confined: my root directory has 0 entries, no capabilities, \
             Landlock fully enforced, seccomp allowlist on",
            "[child] listing / now: EACCES",
            // Each way out fails, stopped by the layer meant to stop it.
            "[child] the chroot escape: EPERM (no CAP_SYS_CHROOT)",
            "[child] mkdir x: EACCES (Landlock, and a read-only root)",
            "[child] open /etc/passwd: ENOENT (the host's root is detached)",
            "[child] connect to the parent's path-named socket: ENOENT (the host's root is detached)",
            "[child] connect to the parent's abstract name: ECONNREFUSED (a network namespace of its own)",
            "[child] connect over TCP: EPERM (seccomp allows socket only for AF_UNIX)",
            // And the inherited address still works, descriptors both ways.
            "[parent] from the sandbox: \"hello from inside the sandbox\"",
            "[parent] read from the child's descriptor: \"written inside the sandbox\"",
            "[child] parent says: \"the parent hears you\", and its descriptor holds \"written by the parent\"",
        ],
    );
}

#[test]
fn revoke() {
    run(
        "revoke",
        &[
            "[server] revoked bob's address; alice's is untouched",
            "[bob] cut off before visit 3",
            "[alice] made all 4 visits",
            "alice visited 4 times, bob 2 times",
        ],
    );
}

#[test]
fn typed() {
    run(
        "typed",
        &[
            "[worker] confined: my root has 0 entries, no capabilities, Landlock and seccomp on",
            "[server] sent job 1: 3145728 bytes of sealed memory and a reply address",
            "[worker] job 3: read 9437184 bytes from shared memory, answered",
            "[server] job 1 answered through its own address: 3145728 bytes, checksum matches",
            "[server] job 3 answered through its own address: 9437184 bytes, checksum matches",
            "[server] the worker exited with exit status: 0",
        ],
    );
}
