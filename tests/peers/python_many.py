"""A Python holder that opens N connections through an inherited address at
once (N connect requests back to back, every kept end open), then waits on
each for the server's greeting and its end. It knows nothing of address
policies: a max_open address must throttle it all the same."""
import os
import socket
import sys


def main():
    count = int(sys.argv[1])
    entries = dict(e.split("=") for e in os.environ["TOKIO_IMC_FDS"].split(","))
    number = int(entries["address"].split(":")[0])
    address = socket.socket(fileno=number)
    kept = []
    for _ in range(count):
        mine, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        socket.send_fds(address, [b"c"], [theirs.fileno()])
        theirs.close()
        kept.append(mine)
    served = 0
    for mine in kept:
        if mine.recv(64) == b"welcome" and mine.recv(64) == b"":
            served += 1
        mine.close()
    print("served %d" % served)


main()
