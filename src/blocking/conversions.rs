//! The conversions every blocking type shares with its async twin.

/// Implements `Debug`, `AsFd`, `AsRawFd`, `From<$blocking> for OwnedFd`,
/// `TryFrom<OwnedFd>`, `into_async` and `from_async` for a blocking wrapper
/// `$blocking { inner: $async }`.
macro_rules! blocking_wrapper {
    ($blocking:ident, $async:ty) => {
        $crate::shared_impls::fd_traits!(
            no_debug $blocking,
            |this| std::os::fd::AsFd::as_fd(&this.inner)
        );

        impl std::fmt::Debug for $blocking {
            /// The async twin's `Debug` (descriptor, address id), named
            /// `blocking::Name`.
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                let inner = if f.alternate() {
                    format!("{:#?}", self.inner)
                } else {
                    format!("{:?}", self.inner)
                };
                write!(f, "blocking::{inner}")
            }
        }

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

pub(crate) use blocking_wrapper;
