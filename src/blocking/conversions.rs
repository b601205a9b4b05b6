//! The conversions every blocking type shares with its async twin.

/// Implements `Debug`, `AsFd` and `AsRawFd` for a blocking type
/// `$blocking { inner }` whose `inner` has a descriptor.
macro_rules! blocking_fd {
    ($blocking:ident) => {
        impl std::fmt::Debug for $blocking {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct(concat!("blocking::", stringify!($blocking)))
                    .field("fd", &std::os::fd::AsRawFd::as_raw_fd(&self.inner))
                    .finish()
            }
        }

        impl std::os::fd::AsFd for $blocking {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                self.inner.as_fd()
            }
        }

        impl std::os::fd::AsRawFd for $blocking {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                self.inner.as_raw_fd()
            }
        }
    };
}

/// Implements [`blocking_fd`]'s traits and `From<$blocking> for OwnedFd`,
/// `TryFrom<OwnedFd>`, `into_async` and `from_async` for a blocking wrapper
/// `$blocking { inner: $async }`.
macro_rules! blocking_wrapper {
    ($blocking:ident, $async:ty) => {
        $crate::blocking::conversions::blocking_fd!($blocking);

        impl From<$blocking> for std::os::fd::OwnedFd {
            fn from(value: $blocking) -> std::os::fd::OwnedFd {
                value.inner.into()
            }
        }

        impl TryFrom<std::os::fd::OwnedFd> for $blocking {
            type Error = std::io::Error;

            /// Validates the descriptor as the async type does. Works with or
            /// without a runtime.
            fn try_from(fd: std::os::fd::OwnedFd) -> std::io::Result<Self> {
                Ok($blocking {
                    inner: <$async>::try_from(fd)?,
                })
            }
        }

        impl $blocking {
            /// Turns this into the async type, the same object (address ids and
            /// minted addresses kept), which registers with the runtime it first
            /// waits in.
            pub fn into_async(self) -> $async {
                self.inner.unregistered()
            }

            /// Turns an async object into this blocking one, the same object, which
            /// registers with the blocking runtime when it first waits. Works
            /// inside or outside a runtime.
            pub fn from_async(value: $async) -> Self {
                $blocking {
                    inner: value.unregistered(),
                }
            }
        }
    };
}

pub(crate) use {blocking_fd, blocking_wrapper};
