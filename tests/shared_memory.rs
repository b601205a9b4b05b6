//! Sealed shared memory: what `freeze` guarantees, and what `TryFrom<OwnedFd>`
//! checks before it maps.

mod common;

use std::io::ErrorKind;
use std::os::fd::{AsFd, OwnedFd};

use common::{ensure, fail, fails_with, run, run_without_runtime};
use nix::fcntl::{fcntl, FcntlArg, SealFlag};
use nix::sys::memfd::{memfd_create, MFdFlags};
use tokio_imc::{ConnectedSocket, SharedMemory, SharedMemoryMut};

fn all_seals() -> SealFlag {
    SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW | SealFlag::F_SEAL_SEAL
}

#[test]
fn after_freeze_nobody_can_change_the_bytes() {
    run_without_runtime(|| {
        let mut memory = SharedMemoryMut::new(8192).expect("new");
        assert!(memory.iter().all(|&b| b == 0), "starts zeroed");
        memory[..4].copy_from_slice(b"abcd");
        memory[8191] = 9;
        let frozen = memory.freeze().expect("freeze");
        assert_eq!(&frozen[..4], b"abcd");
        assert_eq!(frozen[8191], 9);
        let seals = SealFlag::from_bits_truncate(
            fcntl(frozen.as_fd(), FcntlArg::F_GET_SEALS).expect("seals"),
        );
        assert_eq!(seals, all_seals());
        // Not even through its own descriptor.
        assert_eq!(
            nix::sys::uio::pwrite(frozen.as_fd(), b"x", 0),
            Err(nix::errno::Errno::EPERM)
        );
        assert_eq!(
            nix::unistd::ftruncate(frozen.as_fd(), 1),
            Err(nix::errno::Errno::EPERM)
        );
        assert_eq!(
            nix::unistd::ftruncate(frozen.as_fd(), 1 << 20),
            Err(nix::errno::Errno::EPERM)
        );
        assert_eq!(&frozen[..4], b"abcd");
        let copy = SharedMemory::copy_from_slice(b"copied").expect("copy");
        assert_eq!(&copy[..], b"copied");
        let seals = SealFlag::from_bits_truncate(
            fcntl(copy.as_fd(), FcntlArg::F_GET_SEALS).expect("seals"),
        );
        assert_eq!(seals, all_seals());
    });
}

#[test]
fn clones_share_one_mapping_and_bytes_do_not_copy() {
    run_without_runtime(|| {
        let memory = SharedMemory::copy_from_slice(&[5u8; 10_000]).expect("copy");
        let clone = memory.clone();
        assert_eq!(memory.as_ptr(), clone.as_ptr());
        let bytes = clone.into_bytes();
        assert_eq!(
            bytes.as_ptr(),
            memory.as_ptr(),
            "into_bytes keeps the mapping"
        );
        assert_eq!(&bytes[..], &memory[..]);
        // With a clone alive, the descriptor given is a duplicate; the last
        // clone gives its own.
        let inode = common::inode(&memory);
        let duplicate = OwnedFd::from(memory.clone());
        assert_eq!(common::inode(&duplicate), inode);
        drop(bytes);
        let own = OwnedFd::from(memory);
        assert_eq!(common::inode(&own), inode);
        let again = SharedMemory::try_from(own).expect("a sealed memfd maps again");
        assert_eq!(&again[..], &[5u8; 10_000][..]);
        let empty = SharedMemory::copy_from_slice(&[]).expect("an empty object");
        assert!(empty.is_empty());
        assert!(SharedMemory::try_from(OwnedFd::from(empty))
            .expect("maps")
            .is_empty());
    });
}

fn memfd(len: i64, seals: SealFlag) -> OwnedFd {
    let fd =
        memfd_create(c"test", MFdFlags::MFD_CLOEXEC | MFdFlags::MFD_ALLOW_SEALING).expect("memfd");
    nix::unistd::ftruncate(&fd, len).expect("ftruncate");
    if !seals.is_empty() {
        fcntl(&fd, FcntlArg::F_ADD_SEALS(seals)).expect("seal");
    }
    fd
}

#[test]
fn try_from_checks_kind_seals_and_size_before_mapping() {
    run_without_runtime(|| {
        let cases: Vec<(&str, OwnedFd, &str)> = vec![
            ("a pipe", common::pipe().0, "carry seals"),
            (
                "a regular file",
                OwnedFd::from(std::fs::File::open("/proc/self/stat").expect("open")),
                "carry seals",
            ),
            (
                "an unsealed memfd",
                memfd(10, SealFlag::empty()),
                "without the seals",
            ),
            (
                "a memfd that can still grow",
                memfd(10, SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_SHRINK),
                "F_SEAL_GROW",
            ),
            (
                "a memfd that can still shrink",
                memfd(10, SealFlag::F_SEAL_WRITE | SealFlag::F_SEAL_GROW),
                "F_SEAL_SHRINK",
            ),
            (
                "a memfd that can still be written",
                memfd(10, SealFlag::F_SEAL_SHRINK | SealFlag::F_SEAL_GROW),
                "F_SEAL_WRITE",
            ),
            // 16 GiB, sparse: mapping it would cost nothing either, but it is
            // refused by its size alone.
            (
                "a sealed object above the limit",
                memfd(16 << 30, all_seals()),
                "larger than the limit",
            ),
            (
                "a memfd made without MFD_ALLOW_SEALING",
                {
                    let fd = memfd_create(c"test", MFdFlags::MFD_CLOEXEC).expect("memfd");
                    nix::unistd::ftruncate(&fd, 10).expect("ftruncate");
                    fd
                },
                "without the seals",
            ),
        ];
        for (what, fd, reason) in cases {
            let err = SharedMemory::try_from(fd).expect_err(what);
            assert_eq!(err.kind(), ErrorKind::InvalidData, "{what}: {err}");
            assert!(err.to_string().contains(reason), "{what}: {err}");
        }
        let err =
            SharedMemory::from_fd_with_limit(memfd(4097, all_seals()), 4096).expect_err("limit");
        assert!(
            err.to_string()
                .contains("4097 bytes is larger than the limit of 4096"),
            "{err}"
        );
        let ok =
            SharedMemory::from_fd_with_limit(memfd(4096, all_seals()), 4096).expect("at the limit");
        assert_eq!(ok.len(), 4096);
    });
}

#[test]
fn shared_memory_travels_as_a_descriptor() {
    run(|| async {
        let (mut a, mut b) = ConnectedSocket::pair()?;
        let memory = SharedMemory::copy_from_slice(&vec![3u8; 1 << 20])?;
        a.send(b"memory", &[memory.as_fd()]).await?;
        drop(memory);
        let mut message = b.recv().await?.ok_or_else(|| fail("closed"))?;
        let received = SharedMemory::try_from(message.fds.remove(0))?;
        ensure(
            received.len() == 1 << 20 && received.iter().all(|&b| b == 3),
            "the bytes",
        )?;
        fails_with(
            SharedMemory::try_from(common::pipe().0),
            ErrorKind::InvalidData,
            "a pipe",
        )
        .map(drop)
    });
}
