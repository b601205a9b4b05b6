"""An independent tokio-imc peer written with Python's standard library only.

It inherits an address (TOKIO_IMC_FDS=address=N:DEVICE:INODE), checks that N is
that file, connects through it, exchanges bytes and descriptors, then makes its
own bound pair, hands the address to the Rust side inside a message, accepts the
Rust client's connection and answers it.
"""
import os
import socket
import sys


def expect(condition, what):
    if not condition:
        sys.exit("python peer: " + what)


def main():
    entries = dict(e.split("=") for e in os.environ["TOKIO_IMC_FDS"].split(","))
    number, device, inode = (int(field) for field in entries["address"].split(":"))
    status = os.fstat(number)
    expect((status.st_dev, status.st_ino) == (device, inode),
           "descriptor %d is another file" % number)
    address = socket.socket(fileno=number)

    # connect: a fresh SOCK_SEQPACKET pair, "c" plus one end through the address.
    mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    socket.send_fds(address, [b"c"], [theirs.fileno()])
    theirs.close()

    data, fds, _, _ = socket.recv_fds(mine, 4096, 8)
    expect(data == b"hello python" and len(fds) == 1, "first message: %r %r" % (data, fds))
    os.write(fds[0], b"python wrote this")
    os.close(fds[0])

    memfd = os.memfd_create("python")
    os.write(memfd, b"python memfd")
    socket.send_fds(mine, [b"from python"], [memfd])
    os.close(memfd)

    # Serve: our own bound pair; the address goes to the Rust side in a message.
    bound, client_end = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    socket.send_fds(mine, [b"my address"], [client_end.fileno()])
    client_end.close()

    # accept: one byte and one descriptor.
    byte, fds, _, _ = socket.recv_fds(bound, 1, 1)
    expect(byte == b"c" and len(fds) == 1, "connect request: %r %r" % (byte, fds))
    connection = socket.socket(fileno=fds[0])
    expect(connection.type == socket.SOCK_SEQPACKET, "connection type %r" % connection.type)
    # A received descriptor keeps the file status flags its sender gave it (here
    # O_NONBLOCK); as PROTOCOL.md says, the receiver sets the ones it needs.
    connection.setblocking(True)
    data, fds, _, _ = socket.recv_fds(connection, 4096, 8)
    expect(data == b"rust client" and len(fds) == 1, "rust client message: %r %r" % (data, fds))
    socket.send_fds(connection, [b"python server reply"], [fds[0]])
    os.close(fds[0])
    print("python peer: ok")


main()
