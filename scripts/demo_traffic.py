"""Loopback traffic for `make demo`: TCP connections that open, exchange data at different rates and close, plus
UDP datagrams. Only 127.0.0.1, only inside the demo's private namespace; stops by itself after N seconds."""
import random
import socket
import sys
import threading
import time

DEADLINE = time.time() + float(sys.argv[1] if len(sys.argv) > 1 else 60)
PORTS = [9000, 9001, 9002]


def serve(port):
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", port))
    srv.listen(64)
    srv.settimeout(0.5)
    while time.time() < DEADLINE:
        try:
            conn, _ = srv.accept()
        except socket.timeout:
            continue
        threading.Thread(target=echo, args=(conn,), daemon=True).start()


def echo(conn):
    conn.settimeout(1)
    try:
        while time.time() < DEADLINE:
            data = conn.recv(65536)
            if not data:
                break
            conn.sendall(data)
    except OSError:
        pass
    conn.close()


def client(n):
    rng = random.Random(n)
    while time.time() < DEADLINE:
        try:
            s = socket.create_connection(("127.0.0.1", rng.choice(PORTS)), timeout=1)
            life = time.time() + rng.uniform(2, 15)
            size = rng.choice([64, 1024, 16384])
            while time.time() < min(life, DEADLINE):
                s.sendall(b"x" * size)
                s.recv(65536)
                time.sleep(rng.uniform(0.05, 0.5))
            s.close()
        except OSError:
            time.sleep(0.2)


def udp():
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    while time.time() < DEADLINE:
        s.sendto(b"ping", ("127.0.0.1", random.randint(5300, 5310)))
        time.sleep(0.3)


for p in PORTS:
    threading.Thread(target=serve, args=(p,), daemon=True).start()
time.sleep(0.2)
for i in range(8):
    threading.Thread(target=client, args=(i,), daemon=True).start()
threading.Thread(target=udp, daemon=True).start()
while time.time() < DEADLINE:
    time.sleep(0.5)
