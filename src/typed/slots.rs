//! Descriptor slots: how a value that owns a descriptor ([`Fd`],
//! [`SocketAddress`], [`ConnectedSocket`], [`SharedMemory`]) is serialized.
//!
//! On the wire a slot is a `u32`: an index into the record's descriptor array
//! (as D-Bus does). While a typed send serializes, each slot puts a duplicate
//! of its descriptor in this thread's table and writes its index; while a typed
//! receive deserializes, each slot takes its descriptor out of the table by
//! index. Outside a typed send or receive there is no table, and a slot is a
//! serialization error, not a panic.

use std::cell::RefCell;
use std::io;
use std::os::fd::{AsFd, BorrowedFd, OwnedFd};
use std::sync::Arc;

use serde::{de, ser, Deserialize, Deserializer, Serialize, Serializer};

use crate::{ConnectedSocket, SharedMemory, SocketAddress};

/// A descriptor inside a typed message: it owns its [`OwnedFd`], and travels
/// as a slot of the record (see [`typed`](crate::typed)).
///
/// # Examples
///
/// ```
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> std::io::Result<()> {
/// use tokio_imc::typed::{Channel, Fd};
///
/// let (a, b) = tokio_imc::ConnectedSocket::pair()?;
/// let (mut a, mut b) = (Channel::<Fd, ()>::new(a), Channel::<(), Fd>::new(b));
/// let file = std::fs::File::open("/dev/null")?;
/// a.send(&Fd::from(std::os::fd::OwnedFd::from(file))).await?;
/// let received: Fd = b.recv().await?.expect("a message");
/// # drop(received);
/// # Ok(()) }
/// ```
#[derive(Debug)]
pub struct Fd(Arc<OwnedFd>);

impl Fd {
    /// The descriptor, out of its slot.
    pub fn into_inner(self) -> OwnedFd {
        unshared(self.0)
    }
}

/// The `Arc` is shared only with the tables of sends under way, which borrow
/// the value the `Fd` is in; only interior mutability (an `Fd` taken out of a
/// `Mutex` while another thread's send of it waits) lets its owner move it
/// meanwhile, and then it gets a duplicate (a panic only if the process is
/// out of descriptors).
fn unshared(fd: Arc<OwnedFd>) -> OwnedFd {
    Arc::try_unwrap(fd).unwrap_or_else(|shared| match shared.try_clone() {
        Ok(duplicate) => duplicate,
        Err(err) => panic!("an Fd still shared with a send: {err}"),
    })
}

impl From<OwnedFd> for Fd {
    fn from(fd: OwnedFd) -> Fd {
        Fd(Arc::new(fd))
    }
}

impl From<Fd> for OwnedFd {
    fn from(fd: Fd) -> OwnedFd {
        fd.into_inner()
    }
}

impl AsFd for Fd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.0.as_fd()
    }
}

/// A descriptor in the table of a send: an `Fd`'s own (shared, not
/// duplicated: no system call per slot), a shared memory object's own, or a
/// duplicate (addresses and connections).
#[derive(Debug)]
pub(crate) enum SlotFd {
    Owned(OwnedFd),
    Shared(Arc<OwnedFd>),
    Memory(SharedMemory),
}

impl AsFd for SlotFd {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            SlotFd::Owned(fd) => fd.as_fd(),
            SlotFd::Shared(fd) => fd.as_fd(),
            SlotFd::Memory(memory) => memory.as_fd(),
        }
    }
}

/// The table of one typed send.
#[derive(Default)]
struct Sending {
    fds: Vec<SlotFd>,
    error: Option<io::Error>,
}

/// The table of one typed receive.
struct Receiving {
    fds: Vec<Option<OwnedFd>>,
    error: Option<io::Error>,
}

thread_local! {
    static SENDING: RefCell<Option<Sending>> = const { RefCell::new(None) };
    static RECEIVING: RefCell<Option<Receiving>> = const { RefCell::new(None) };
}

/// Runs `body` with `table` installed in `key`, and returns what it gave and
/// the table. Whatever happens in `body` (a user's `Serialize` or
/// `Deserialize` may panic), the table that was installed before is put back
/// when this returns or unwinds, and this one is dropped with its descriptors.
fn with_table<T: 'static, R>(
    key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
    table: T,
    body: impl FnOnce() -> R,
) -> (R, Option<T>) {
    struct Restore<T: 'static> {
        key: &'static std::thread::LocalKey<RefCell<Option<T>>>,
        outer: Option<T>,
    }
    impl<T: 'static> Drop for Restore<T> {
        fn drop(&mut self) {
            let outer = self.outer.take();
            // Taken out first and dropped after the borrow ends: dropping a
            // table runs no code of ours that touches the key, but keep it so.
            let ours = self.key.with(|slot| slot.replace(outer));
            drop(ours);
        }
    }
    let outer = key.with(|slot| slot.replace(Some(table)));
    let restore = Restore { key, outer };
    let result = body();
    let table = key.with(|slot| slot.take());
    drop(restore);
    (result, table)
}

/// Runs `serialize` with a fresh slot table and returns what it made and the
/// descriptors its slots put in the table, in index order. The first error a
/// slot reported is returned in place of the serializer's (which cannot carry
/// it).
pub(crate) fn serializing<T>(
    serialize: impl FnOnce() -> Result<T, postcard::Error>,
    failed: impl FnOnce(postcard::Error) -> io::Error,
) -> io::Result<(T, Vec<SlotFd>)> {
    let (result, table) = with_table(&SENDING, Sending::default(), serialize);
    let table = table.unwrap_or_default();
    match (result, table.error) {
        (_, Some(error)) => Err(error),
        (Ok(value), None) => Ok((value, table.fds)),
        (Err(error), None) => Err(failed(error)),
    }
}

/// Runs `deserialize` with `fds` as the slot table: every descriptor must be
/// claimed by exactly one slot. On any error every descriptor is closed.
pub(crate) fn deserializing<T>(
    fds: Vec<OwnedFd>,
    deserialize: impl FnOnce() -> Result<T, postcard::Error>,
) -> io::Result<T> {
    let table = Receiving {
        fds: fds.into_iter().map(Some).collect(),
        error: None,
    };
    let (result, table) = with_table(&RECEIVING, table, deserialize);
    let Some(table) = table else {
        return Err(io::Error::other("the slot table vanished during a receive"));
    };
    if let Some(error) = table.error {
        return Err(error);
    }
    let value = result.map_err(|error| invalid(format!("a malformed message: {error}")))?;
    let unclaimed: Vec<usize> = (table.fds.iter().enumerate())
        .filter_map(|(index, fd)| fd.is_some().then_some(index))
        .collect();
    if !unclaimed.is_empty() {
        return Err(invalid(format!(
            "descriptor(s) {unclaimed:?} of the record were claimed by no slot of the message; \
             all were closed"
        )));
    }
    Ok(value)
}

fn invalid(why: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why)
}

/// Why a slot cannot be (de)serialized without a table.
fn outside(kind: &str, done: &str, by: &str) -> String {
    format!(
        "a {kind} can be {done} only by a typed {by} (tokio_imc::typed), which carries its \
         descriptor beside the bytes"
    )
}

/// Puts a slot's descriptor (made by `make`, which may fail) in the table of
/// the send under way: its index.
fn put<E: ser::Error>(kind: &str, make: impl FnOnce() -> io::Result<SlotFd>) -> Result<u32, E> {
    SENDING.with(|table| {
        let mut table = table.borrow_mut();
        let Some(table) = table.as_mut() else {
            return Err(E::custom(outside(kind, "serialized", "send")));
        };
        let failed = |table: &mut Sending, error: io::Error| {
            let message = error.to_string();
            table.error.get_or_insert(error);
            E::custom(message)
        };
        let Ok(index) = u32::try_from(table.fds.len()) else {
            let error = io::Error::new(io::ErrorKind::InvalidInput, "too many descriptor slots");
            return Err(failed(table, error));
        };
        match make() {
            Ok(fd) => {
                table.fds.push(fd);
                Ok(index)
            }
            Err(error) => {
                let error = io::Error::new(
                    error.kind(),
                    format!("duplicating the descriptor of a {kind} slot: {error}"),
                );
                Err(failed(table, error))
            }
        }
    })
}

/// Takes the descriptor at `index` out of the table of the receive under way,
/// and makes a `T` of it.
fn take<T, E: de::Error>(
    index: u32,
    kind: &str,
    make: impl FnOnce(OwnedFd) -> io::Result<T>,
) -> Result<T, E> {
    RECEIVING.with(|table| {
        let mut table = table.borrow_mut();
        let Some(table) = table.as_mut() else {
            return Err(E::custom(outside(kind, "deserialized", "receive")));
        };
        let count = table.fds.len();
        let fd = match table.fds.get_mut(index as usize) {
            None => Err(format!(
                "a {kind} slot names descriptor {index}, past the record's {count}"
            )),
            Some(fd) => fd.take().ok_or_else(|| {
                format!("descriptor {index} is claimed by two slots (the second a {kind})")
            }),
        };
        let made = fd.and_then(|fd| {
            make(fd).map_err(|error| format!("descriptor {index} in a {kind} slot: {error}"))
        });
        made.map_err(|why| {
            let message = why.clone();
            table.error.get_or_insert(invalid(why));
            E::custom(message)
        })
    })
}

/// Serializes a slot whose descriptor `make` gives.
fn serialize_slot<S: Serializer>(
    kind: &str,
    make: impl FnOnce() -> io::Result<SlotFd>,
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let index = put(kind, make)?;
    serializer.serialize_u32(index)
}

/// Deserializes a slot and makes a `T` of its descriptor.
fn deserialize_slot<'de, D: Deserializer<'de>, T>(
    deserializer: D,
    kind: &str,
    make: impl FnOnce(OwnedFd) -> io::Result<T>,
) -> Result<T, D::Error> {
    let index = u32::deserialize(deserializer)?;
    take(index, kind, make)
}

macro_rules! slot_type {
    ($type:ty, $kind:literal, |$this:ident| $put:expr, $make:expr) => {
        impl Serialize for $type {
            fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
                let $this = self;
                serialize_slot($kind, || $put, serializer)
            }
        }

        impl<'de> Deserialize<'de> for $type {
            fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
                deserialize_slot(deserializer, $kind, $make)
            }
        }
    };
}

slot_type!(Fd, "Fd", |fd| Ok(SlotFd::Shared(Arc::clone(&fd.0))), |fd| {
    Ok(Fd::from(fd))
});
slot_type!(
    SocketAddress,
    "SocketAddress",
    |address| address.as_fd().try_clone_to_owned().map(SlotFd::Owned),
    SocketAddress::try_from
);
slot_type!(
    ConnectedSocket,
    "ConnectedSocket",
    |connection| connection.as_fd().try_clone_to_owned().map(SlotFd::Owned),
    ConnectedSocket::try_from
);
slot_type!(
    SharedMemory,
    "SharedMemory",
    |memory| Ok(SlotFd::Memory(memory.clone())),
    SharedMemory::try_from
);
