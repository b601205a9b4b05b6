"""An independent tokio-imc peer written with Python's standard library only.

It inherits an address (TOKIO_IMC_FDS=address=N:DEVICE:INODE), checks that N is
that file, connects through it, exchanges bytes and descriptors, then makes its
own bound pair, hands the address to the Rust side inside a message, accepts the
Rust client's connection and answers it; then floods the address with more
connect requests than its queue holds. Every call is a plain blocking one: it
never calls setblocking, so it works only if the descriptors tokio-imc hands out
are blocking, as socketpair(2) makes them.
"""
import os
import socket
import sys

# Connect requests in the last phase: more than a bound pair's queue holds
# (about 278 with the default buffer sizes).
FLOOD = 400


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
    # Say which descriptor we are about to wait on, so that the Rust side can
    # tell this recvmsg from the accept's.
    mine.sendall(b"waiting on %d" % connection.fileno())
    # No setblocking: the end tokio-imc sent is in the state socketpair(2) made
    # it, blocking, so this recvmsg waits (the Rust side sends only once it sees
    # us blocked in it).
    data, fds, _, _ = socket.recv_fds(connection, 4096, 8)
    expect(data == b"rust client" and len(fds) == 1, "rust client message: %r %r" % (data, fds))
    socket.send_fds(connection, [b"python server reply"], [fds[0]])
    os.close(fds[0])

    # A client of a server that stops accepting: more connect requests than the
    # address's queue holds. A blocking sendmsg waits for room (the Rust side
    # accepts once it sees us blocked in it) instead of failing with EAGAIN.
    kept = []
    for _ in range(FLOOD):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        socket.send_fds(address, [b"c"], [theirs.fileno()])
        theirs.close()
        kept.append(mine)
    for mine in kept:
        data, _, _, _ = socket.recv_fds(mine, 64, 1)
        expect(data == b"accepted", "flood reply: %r" % data)
    print("python peer: ok")


main()
