"""A tiny terminal frontend: logs in and prints the busiest connections every 2 s. Password from $CTD_PASSWORD or
the terminal (never the command line). Usage: watch.py URL USER [SECONDS]"""
import getpass
import os
import sys
import time
import xmlrpc.client

url, user = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60
password = os.environ.get("CTD_PASSWORD") or getpass.getpass(f"password for {user}: ")
server = xmlrpc.client.ServerProxy(url)
session = server.login(user, password)
end = time.time() + seconds
while time.time() < end:
    page = server.view(session, {}, "byte_rate", "DESC", 0, 15)
    print("\033[2J\033[H", end="")
    print(f"ctd demo: {page['total']} connections, generation {page['generation']}  (ordered by byte rate)")
    print(f"{'id':>10} {'proto':5} {'source':>21} {'destination':>21} {'state':11} {'mark':>5} {'B/s':>10} {'bytes':>10}")
    for c in page["connections"]:
        src = f"{c['orig_src']}:{c['orig_port_src']}"
        dst = f"{c['orig_dst']}:{c['orig_port_dst']}"
        print(f"{c['id']:>10} {c['l4proto']:5} {src:>21} {dst:>21} {c['state']:11} {c['mark']:>5} "
              f"{c['byte_rate']:>10.0f} {c['orig_bytes'] + c['repl_bytes']:>10.0f}")
    time.sleep(2)
server.logout(session)
