//! Impls that several public types share, written once: the descriptor traits,
//! and the queries every connection-like type answers alike.

/// Implements `Debug` (as `$name { fd, address_id }`), `AsFd` and `AsRawFd` for
/// `$type`, whose descriptor is `$fd` (an expression of `$this: &$type` giving a
/// `BorrowedFd`) and which has an `address_id` method. The `no_debug` form
/// leaves `Debug` to the type.
macro_rules! fd_traits {
    ($type:ty, $name:expr, |$this:ident| $fd:expr) => {
        impl std::fmt::Debug for $type {
            fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                f.debug_struct($name)
                    .field("fd", &std::os::fd::AsRawFd::as_raw_fd(self))
                    .field("address_id", &self.address_id())
                    .finish()
            }
        }

        $crate::shared_impls::fd_traits!(no_debug $type, |$this| $fd);
    };
    (no_debug $type:ty, |$this:ident| $fd:expr) => {
        impl std::os::fd::AsFd for $type {
            fn as_fd(&self) -> std::os::fd::BorrowedFd<'_> {
                let $this = self;
                $fd
            }
        }

        impl std::os::fd::AsRawFd for $type {
            fn as_raw_fd(&self) -> std::os::fd::RawFd {
                std::os::fd::AsRawFd::as_raw_fd(&std::os::fd::AsFd::as_fd(self))
            }
        }
    };
}

/// Implements `address_id`, `peer_credentials` and `shutdown` for a half (or a
/// blocking twin) of a connection: `$id` (an expression of `$this: &$type`) is
/// its address id, and `$fd` its descriptor as an `io::Result<BorrowedFd>` (a
/// connection can have lost its descriptor: an error, never a panic).
macro_rules! connection_queries {
    ($type:ty, |$this:ident| $id:expr, $fd:expr) => {
        impl $type {
            /// The address the connection was accepted through; see
            /// [`ConnectedSocket::address_id`](crate::ConnectedSocket::address_id).
            pub fn address_id(&self) -> Option<$crate::AddressId> {
                let $this = self;
                $id
            }

            /// The credentials of the peer's creator; see
            /// [`ConnectedSocket::peer_credentials`](crate::ConnectedSocket::peer_credentials).
            ///
            /// # Errors
            ///
            /// As [`ConnectedSocket::peer_credentials`](crate::ConnectedSocket::peer_credentials).
            pub fn peer_credentials(&self) -> std::io::Result<$crate::Credentials> {
                let $this = self;
                let fd: std::io::Result<std::os::fd::BorrowedFd<'_>> = $fd;
                $crate::Credentials::of_peer(fd?)
            }

            /// Shuts down one or both directions of the whole connection; see
            /// [`ConnectedSocket::shutdown`](crate::ConnectedSocket::shutdown).
            ///
            /// # Errors
            ///
            /// As [`ConnectedSocket::shutdown`](crate::ConnectedSocket::shutdown).
            pub fn shutdown(&self, how: std::net::Shutdown) -> std::io::Result<()> {
                let $this = self;
                let fd: std::io::Result<std::os::fd::BorrowedFd<'_>> = $fd;
                $crate::sys::socket::shutdown(fd?, how)
            }
        }
    };
}

pub(crate) use {connection_queries, fd_traits};
