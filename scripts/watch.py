"""A tiny terminal frontend: logs in and prints the busiest connections and a summary every 2 s. Password from
$CTD_PASSWORD or the terminal (never the command line). With CTD_DEMO_ACTIONS=1 (`make demo`, an operator account)
it also acts every 10 s, in turn: changes the mark of the busiest connection, kills one connection to port 9002, and
kills every connection to port 9001 through kill_preview + kill_matching (the demo's traffic opens new ones).
Usage: watch.py URL USER [SECONDS]"""
import getpass
import os
import sys
import time
import xmlrpc.client

url, user = sys.argv[1], sys.argv[2]
seconds = float(sys.argv[3]) if len(sys.argv) > 3 else 60
password = os.environ.get("CTD_PASSWORD") or getpass.getpass(f"password for {user}: ")
acting = os.environ.get("CTD_DEMO_ACTIONS") == "1"
server = xmlrpc.client.ServerProxy(url)
session = server.login(user, password)
end = time.time() + seconds
log = []


def act(step):
    """One scripted action; returns the sentence it prints."""
    if step % 3 == 0:
        top = server.view(session, {"l4proto": "tcp"}, "byte_rate", "DESC", 0, 1)["connections"]
        if not top:
            return "change: no TCP connection yet"
        c = top[0]
        after = server.change(session, "mark", c["id"], 4242)
        return f"change: mark of {c['orig_src']}:{c['orig_port_src']} -> :{c['orig_port_dst']} set to {after['mark']}"
    if step % 3 == 1:
        victims = server.view(session, {"orig_port_dst": 9002}, "id", "ASC", 0, 1)["connections"]
        if not victims:
            return "kill: no connection to port 9002 yet"
        r = server.kill(session, [victims[0]["id"]])
        return f"kill: id {victims[0]['id']} (port 9002): killed {r['killed']}, not found {r['not_found']}"
    preview = server.kill_preview(session, {"orig_port_dst": 9001})
    if not preview["token"]:
        return f"kill by filter port 9001: {preview.get('note', 'nothing to kill')}"
    sources = ", ".join(f"{g['key']} ({g['count']})" for g in preview["groups"]["sources"][:3])
    r = server.kill_matching(session, preview["token"], preview["total"])
    return f"kill by filter port 9001: preview {preview['total']} from {sources}; killed {r['killed']}"


step = 0
while time.time() < end:
    page = server.view(session, {}, "byte_rate", "DESC", 0, 12)
    services = server.summary(session, {}, "orig_port_dst", "count", 4)
    print("\033[2J\033[H", end="")
    print(f"ctd demo: {page['total']} connections, generation {page['generation']}  (ordered by byte rate)")
    print(f"{'id':>10} {'proto':5} {'source':>21} {'destination':>21} {'state':11} {'mark':>5} {'B/s':>10} {'bytes':>10}")
    for c in page["connections"]:
        src = f"{c['orig_src']}:{c['orig_port_src']}"
        dst = f"{c['orig_dst']}:{c['orig_port_dst']}"
        print(f"{c['id']:>10} {c['l4proto']:5} {src:>21} {dst:>21} {c['state']:11} {c['mark']:>5} "
              f"{c['byte_rate']:>10.0f} {c['orig_bytes'] + c['repl_bytes']:>10.0f}")
    print("summary by destination port: " + ", ".join(f"{g['key']}: {g['count']}" for g in services["groups"]))
    if acting and step % 5 == 4:
        try:
            log.append(time.strftime("%H:%M:%S ") + act(step // 5))
        except xmlrpc.client.Fault as fault:
            log.append(time.strftime("%H:%M:%S ") + f"refused: {fault.faultString}")
    for line in log[-4:]:
        print(line)
    step += 1
    time.sleep(2)
server.logout(session)
