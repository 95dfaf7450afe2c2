#!/usr/bin/env python3
"""plugboard benchmarks: the host against its physical limits and a peer.

Runs, for 256-byte and 4 KiB events, the ceilings (ZeroMQ inproc, SQLite
batched inserts) and plugboard routing through the real router, journal and
connector actors (bench/pb_bench); then webhook ingress over HTTP with wrk
(bench/stripe.lua) and an open-loop load at half the peak rate
(bench/pb_load); the host's memory with the demo config; the latency of one
event at a low rate; and, with --peers, the same webhook -> file flow on
Node-RED.  Prints a table and writes bench/results.json.

Every figure that is compared is compared as a ratio measured in the same
run; repeated runs are interleaved (ceiling, plugboard, ceiling, ...) and
the median is kept, so a noisy neighbour hurts both sides alike.

Loopback only; every process started here is stopped before it exits; each
step has a time bound.  Uses only the Python standard library.
"""
import argparse
import json
import os
import platform
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECRET = "whsec_plugboard_bench_only"
SIZES = (256, 4096)

QUICK = dict(repeats=1, zmq=200000, sqlite=10000, route=10000, fanout=4000,
             lat_count=50, lat_rate=50.0, wrk_s=3, half_s=2, rss_load_s=2,
             http_lat_count=40, upgrades=3, upgrade_s=6,
             upgrade_rate=100.0)
FULL = dict(repeats=3, zmq=2000000, sqlite=100000, route=100000,
            fanout=40000, lat_count=200, lat_rate=20.0, wrk_s=15, half_s=10,
            rss_load_s=5, http_lat_count=200, upgrades=5, upgrade_s=15,
            upgrade_rate=100.0)

WRK_THREADS = 1        # leave the second core to the host
WRK_CONNECTIONS = 32
HALF_CONNECTIONS = 32


class BenchError(Exception):
    pass


# --------------------------------------------------------------------------
# processes
# --------------------------------------------------------------------------

class Procs:
    """Every long-running process started here, stopped at the end."""

    def __init__(self):
        self.procs = []

    def start(self, argv, log_path, env=None, cwd=None):
        log = open(log_path, "wb")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT,
                             stdin=subprocess.DEVNULL, env=env, cwd=cwd,
                             start_new_session=True)
        log.close()
        self.procs.append(p)
        return p

    def stop(self, p, timeout=15):
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
            try:
                p.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait()
        if p in self.procs:
            self.procs.remove(p)

    def stop_all(self):
        for p in list(self.procs):
            self.stop(p, timeout=5)


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url, proc, seconds=30.0):
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(url, timeout=1):
                return True
        except urllib.error.HTTPError:
            return True  # it answers
        except (urllib.error.URLError, ConnectionError, OSError):
            time.sleep(0.1)
    return False


def wait_post(url, proc, body_path, seconds):
    """Wait until url answers a POST of body_path with 2xx."""
    with open(body_path, "rb") as f:
        body = f.read()
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            req = urllib.request.Request(url, data=body, method="POST",
                                         headers={"Content-Type":
                                                  "application/json"})
            with urllib.request.urlopen(req, timeout=2) as r:
                if 200 <= r.status < 300:
                    return True
        except (urllib.error.URLError, ConnectionError, OSError):
            pass
        time.sleep(0.2)
    return False


def run_json(argv, timeout, what):
    """Run a command that prints one JSON object on its last line."""
    try:
        r = subprocess.run(argv, capture_output=True, text=True,
                           timeout=timeout, stdin=subprocess.DEVNULL)
    except subprocess.TimeoutExpired:
        raise BenchError(f"{what}: no result within {timeout} s")
    if r.returncode != 0:
        raise BenchError(f"{what}: exit {r.returncode}: "
                         f"{(r.stderr or r.stdout).strip()[-400:]}")
    lines = [l for l in r.stdout.splitlines() if l.startswith("{")]
    if not lines:
        raise BenchError(f"{what}: no result: {r.stdout[-400:]}")
    return json.loads(lines[-1])


def vm_status(pid):
    out = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(("VmRSS:", "VmHWM:")):
                k, v = line.split(":", 1)
                out[k] = int(v.split()[0]) / 1024.0  # MiB
    return out


def count_lines(path):
    try:
        with open(path, "rb") as f:
            return sum(chunk.count(b"\n")
                       for chunk in iter(lambda: f.read(1 << 20), b""))
    except FileNotFoundError:
        return 0


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------
# in-process: ceilings and routing
# --------------------------------------------------------------------------

def median_of(runs, key):
    return statistics.median(r[key] for r in runs)


def in_process(b, work, p):
    pb = os.path.join(b, "bench", "pb_bench")
    res = {}
    for size in SIZES:
        log(f"in-process, {size}-byte events ...")
        runs = {k: [] for k in ("zmq", "sqlite", "sqlite3", "off", "on",
                                "fan_off", "fan_on")}
        for rep in range(p["repeats"]):
            d = lambda name: os.path.join(work, f"{name}-{size}-{rep}")
            common = ["--size", str(size)]
            runs["zmq"].append(run_json(
                [pb, "zmq", *common, "--count", str(p["zmq"])], 120, "zmq"))
            runs["off"].append(run_json(
                [pb, "route", *common, "--count", str(p["route"]),
                 "--journal", "off", "--dir", d("off")], 180, "route off"))
            runs["sqlite"].append(run_json(
                [pb, "sqlite", *common, "--count", str(p["sqlite"]),
                 "--batch", "1024", "--targets", "1", "--dir", d("sql")],
                180, "sqlite"))
            runs["on"].append(run_json(
                [pb, "route", *common, "--count", str(p["route"]),
                 "--journal", "on", "--dir", d("on")], 180, "route on"))
            runs["sqlite3"].append(run_json(
                [pb, "sqlite", *common, "--count", str(p["sqlite"]),
                 "--batch", "1024", "--targets", "3", "--dir", d("sql3")],
                180, "sqlite fan-out"))
            runs["fan_on"].append(run_json(
                [pb, "route", *common, "--count", str(p["fanout"]),
                 "--sinks", "3", "--journal", "on", "--dir", d("fanon")],
                180, "fan-out on"))
            runs["fan_off"].append(run_json(
                [pb, "route", *common, "--count", str(p["fanout"]),
                 "--sinks", "3", "--journal", "off", "--dir", d("fanoff")],
                180, "fan-out off"))
            for name in os.listdir(work):
                shutil.rmtree(os.path.join(work, name), ignore_errors=True)
        m = {k: median_of(v, "events_per_s") for k, v in runs.items()}
        res[str(size)] = {
            "zmq_ceiling_per_s": m["zmq"],
            "sqlite_ceiling_per_s": m["sqlite"],
            "sqlite_ceiling_3_targets_per_s": m["sqlite3"],
            "route_journal_off_per_s": m["off"],
            "route_journal_on_per_s": m["on"],
            "fanout3_journal_off_per_s": m["fan_off"],
            "fanout3_journal_on_per_s": m["fan_on"],
            "off_vs_zmq": m["off"] / m["zmq"],
            "on_vs_sqlite": m["on"] / m["sqlite"],
            "fanout_on_vs_sqlite3": m["fan_on"] / m["sqlite3"],
            "fanout_off_vs_zmq": m["fan_off"] / m["zmq"],
            "events_per_commit_on": median_of(runs["on"],
                                              "events_per_commit"),
            "runs": runs,
        }
    log("in-process latency at a low rate ...")
    lat = run_json([pb, "latency", "--size", "256",
                    "--count", str(p["lat_count"]),
                    "--rate", str(p["lat_rate"]),
                    "--dir", os.path.join(work, "latency")],
                   120, "latency")
    res["latency"] = lat
    return res


# --------------------------------------------------------------------------
# HTTP: webhooks, the demo config, Node-RED
# --------------------------------------------------------------------------

def write_template(work):
    """A Stripe payment_intent.succeeded event, as Stripe sends it
    (pretty-printed), with a placeholder event id and a customer email."""
    src = os.path.join(ROOT, "etc", "samples", "stripe",
                       "payment_intent.succeeded.json")
    with open(src) as f:
        ev = json.load(f)
    ev["id"] = "__EVENT_ID__"
    ev["data"]["object"]["receipt_email"] = "customer@example.com"
    path = os.path.join(work, "stripe-template.json")
    with open(path, "w") as f:
        json.dump(ev, f, indent=2)
    return path, os.path.getsize(path)


def webhook_config(work, port, b):
    os.makedirs(os.path.join(work, "webhook"), exist_ok=True)
    out = os.path.join(work, "webhook", "outbox.jsonl")
    cfg = os.path.join(work, "webhook.cfg")
    with open(cfg, "w") as f:
        f.write(f"""
plugboard = {{
    data_dir = "{work}/webhook/data";
    log_level = "warn";
    plugin_path = [ "{b}/plugins" ];
    http = {{ listen = "127.0.0.1:{port}"; }};
}};
connectors = (
    {{ name = "payments"; plugin = "stripe";
       settings = {{ signing_secret = "env:STRIPE_WEBHOOK_SECRET"; }}; }},
    {{ name = "crm"; plugin = "file"; settings = {{ path = "{out}"; }}; }}
);
routes = (
    {{ name = "payments-to-crm"; from = "payments"; when = "payment.*";
       to = [ "crm" ];
       why = "measure webhook ingress";
       owner = "bench@example.com"; }}
);
""")
    return cfg, out


def demo_config(work, port):
    """etc/plugboard.cfg with its paths moved under the work directory
    and its port made free; nothing else changes."""
    with open(os.path.join(ROOT, "etc", "plugboard.cfg")) as f:
        text = f.read()
    d = os.path.join(work, "demo")
    text = text.replace('data_dir = "var"', f'data_dir = "{d}/var"')
    text = text.replace('"var/', f'"{d}/var/')
    text = text.replace('"etc/templates"',
                        f'"{os.path.join(ROOT, "etc", "templates")}"')
    text = text.replace("127.0.0.1:8787", f"127.0.0.1:{port}")
    os.makedirs(d, exist_ok=True)
    cfg = os.path.join(d, "plugboard.cfg")
    with open(cfg, "w") as f:
        f.write(text)
    return cfg


def host_env():
    env = dict(os.environ)
    env["STRIPE_WEBHOOK_SECRET"] = SECRET
    return env


def start_host(procs, b, cfg, port, work, name):
    logp = os.path.join(work, f"{name}.log")
    p = procs.start([os.path.join(b, "plugboard"), "run", "-c", cfg], logp,
                    env=host_env(), cwd=work)
    if not wait_http(f"http://127.0.0.1:{port}/healthz", p):
        procs.stop(p)
        with open(logp, errors="replace") as f:
            tail = f.read()[-800:]
        raise BenchError(f"the host did not start: {tail}")
    return p


def run_wrk(port, path, template, seconds, conns=WRK_CONNECTIONS):
    url = f"http://127.0.0.1:{port}{path}"
    return run_json(["wrk", f"-t{WRK_THREADS}", f"-c{conns}",
                     f"-d{seconds}s", "--latency", "-s",
                     os.path.join(ROOT, "bench", "stripe.lua"), url, "--",
                     SECRET, template], seconds + 60, "wrk")


def run_load(b, port, template, rate, seconds=None, count=None,
             conns=HALF_CONNECTIONS, tail=None):
    argv = [os.path.join(b, "bench", "pb_load"), "--port", str(port),
            "--template", template, "--secret", SECRET, "--rate",
            f"{rate:.1f}", "--connections", str(conns)]
    if count:
        argv += ["--count", str(count)]
        bound = count / rate + 60
    else:
        argv += ["--duration", str(seconds)]
        bound = seconds + 60
    if tail:
        argv += ["--tail", tail]
    return run_json(argv, bound, "pb_load")


def webhooks(b, work, p, procs, template):
    port = free_port()
    cfg, outbox = webhook_config(work, port, b)
    log("webhook ingress over HTTP ...")
    host = start_host(procs, b, cfg, port, work, "webhook-host")
    try:
        # the low-rate latency first, while the file sink is idle
        lat = run_load(b, port, template, 20.0, count=p["http_lat_count"],
                       conns=1, tail=outbox)
        before = count_lines(outbox)
        peak = run_wrk(port, "/hooks/payments", template, p["wrk_s"])
        peak["delivered_per_s"] = ((count_lines(outbox) - before)
                                   / peak["seconds"])
        rss = vm_status(host.pid)
    finally:
        procs.stop(host, timeout=30)
    # half the peak on a fresh host: not behind the backlog the peak run
    # left for the file sink to drain
    d = os.path.join(work, "half")
    os.makedirs(d, exist_ok=True)
    port = free_port()
    cfg, _ = webhook_config(d, port, b)
    host = start_host(procs, b, cfg, port, d, "half-host")
    try:
        half_rate = max(1.0, peak["requests_per_s"] / 2)
        half = run_load(b, port, template, half_rate, seconds=p["half_s"])
    finally:
        procs.stop(host, timeout=30)
    return {"peak": peak, "half": half, "low_rate": lat,
            "rss_after_mib": rss.get("VmRSS"), "wrk_threads": WRK_THREADS,
            "wrk_connections": WRK_CONNECTIONS}


def upgrade_under_load(b, work, p, procs, template):
    """`plugboard ctl upgrade crm` several times while webhooks arrive at a
    steady rate: how long until the new build serves (the command returns
    once it does), the longest pause between two lines the file sink writes
    around each upgrade against the longest pause with no upgrade, and how
    many acknowledged webhooks never reached the file (must be 0)."""
    import threading
    log("plugin upgrade under load ...")
    port = free_port()
    d = os.path.join(work, "upgrade")
    os.makedirs(d, exist_ok=True)
    cfg, outbox = webhook_config(d, port, b)
    host = start_host(procs, b, cfg, port, d, "upgrade-host")
    stamps, stop = [], threading.Event()

    def tail():
        seen = 0
        while not stop.is_set():
            n = count_lines(outbox)
            if n > seen:
                t = time.monotonic()
                stamps.extend([t] * (n - seen))
                seen = n
            time.sleep(0.001)

    rate, seconds = p["upgrade_rate"], p["upgrade_s"]
    upgrades = []
    tailer = threading.Thread(target=tail, daemon=True)
    try:
        tailer.start()
        load = {}
        loader = threading.Thread(target=lambda: load.update(run_load(
            b, port, template, rate, seconds=seconds, conns=4)))
        loader.start()
        time.sleep(seconds / (p["upgrades"] + 2))
        for _ in range(p["upgrades"]):
            t0 = time.monotonic()
            r = subprocess.run([os.path.join(b, "plugboard"), "ctl",
                                "upgrade", "crm", "-c", cfg, "--json"],
                               capture_output=True, text=True, timeout=60,
                               stdin=subprocess.DEVNULL, env=host_env())
            t1 = time.monotonic()
            if r.returncode != 0:
                raise BenchError("ctl upgrade: " + (r.stderr or r.stdout)
                                 .strip()[-300:])
            upgrades.append((t0, t1))
            time.sleep(seconds / (p["upgrades"] + 2))
        loader.join(timeout=seconds + 90)
        # everything acknowledged must reach the file; give it time
        deadline = time.time() + 60
        while (count_lines(outbox) < load.get("ok", 0)
               and time.time() < deadline):
            time.sleep(0.1)
        time.sleep(0.5)
    finally:
        stop.set()
        tailer.join(timeout=5)
        procs.stop(host, timeout=30)
    ids = set()
    with open(outbox, errors="replace") as f:
        for line in f:
            try:
                ids.add(json.loads(line).get("dedupe"))
            except ValueError:
                pass
    gaps_in, gaps_out = [0.0], [0.0]
    for a, c in zip(stamps, stamps[1:]):
        near = any(t0 - 0.05 <= c and a <= t1 + 0.05 for t0, t1 in upgrades)
        (gaps_in if near else gaps_out).append(c - a)
    took = [1000 * (t1 - t0) for t0, t1 in upgrades]
    return {"rate": rate, "seconds": seconds, "upgrades": len(upgrades),
            "acknowledged": load.get("ok", 0),
            "errors": load.get("errors", 0),
            "delivered_unique": len(ids),
            "lost": max(0, load.get("ok", 0) - len(ids)),
            "upgrade_ms_median": statistics.median(took),
            "upgrade_ms_max": max(took),
            "longest_pause_during_upgrade_ms": 1000 * max(gaps_in),
            "longest_pause_otherwise_ms": 1000 * max(gaps_out)}


def demo_rss(b, work, p, procs, template):
    log("memory with the demo config ...")
    port = free_port()
    cfg = demo_config(work, port)
    host = start_host(procs, b, cfg, port, os.path.join(work, "demo"),
                      "demo-host")
    try:
        time.sleep(1.0)
        idle = vm_status(host.pid)
        run_wrk(port, "/hooks/payments", template, p["rss_load_s"])
        loaded = vm_status(host.pid)
    finally:
        procs.stop(host, timeout=30)
    return {"idle_rss_mib": idle.get("VmRSS"),
            "loaded_rss_mib": loaded.get("VmRSS"),
            "peak_rss_mib": loaded.get("VmHWM")}


NODE_RED_VERSION = "4"


def node_red(b, work, p, procs, template):
    peers = os.path.join(ROOT, "bench", ".peers")
    red = os.path.join(peers, "node_modules", "node-red", "red.js")
    if not shutil.which("node") or not shutil.which("npm"):
        return {"skipped": "node and npm are not installed "
                           "(make bench PEERS=1 installs them)"}
    if not os.path.exists(red):
        log(f"installing node-red@{NODE_RED_VERSION} into bench/.peers ...")
        os.makedirs(peers, exist_ok=True)
        try:
            r = subprocess.run(["npm", "install", "--prefix", peers,
                                "--no-audit", "--no-fund", "--omit=dev",
                                f"node-red@{NODE_RED_VERSION}"],
                               capture_output=True, text=True, timeout=600,
                               stdin=subprocess.DEVNULL)
        except subprocess.TimeoutExpired:
            return {"skipped": "npm install node-red took over 600 s"}
        if r.returncode != 0 or not os.path.exists(red):
            why = (r.stderr or r.stdout).strip().splitlines()[-3:]
            return {"skipped": "npm install node-red failed: "
                               + " | ".join(why)}
    port = free_port()
    d = os.path.join(work, "node-red")
    os.makedirs(d, exist_ok=True)
    out = os.path.join(d, "outbox.jsonl")
    # http in -> file (append the body as one line) -> http response 200
    flow = [
        {"id": "b0e1c0de00000001", "type": "tab", "label": "bench"},
        {"id": "b0e1c0de00000002", "type": "http in",
         "z": "b0e1c0de00000001", "url": "/hooks/payments",
         "method": "post", "upload": False,
         "wires": [["b0e1c0de00000003"]]},
        {"id": "b0e1c0de00000003", "type": "file",
         "z": "b0e1c0de00000001", "filename": out, "filenameType": "str",
         "appendNewline": True, "createDir": True, "overwriteFile": "false",
         "encoding": "none", "wires": [["b0e1c0de00000004"]]},
        {"id": "b0e1c0de00000004", "type": "http response",
         "z": "b0e1c0de00000001", "statusCode": "200", "headers": {},
         "wires": []},
    ]
    with open(os.path.join(d, "flows.json"), "w") as f:
        json.dump(flow, f)
    with open(os.path.join(d, "settings.js"), "w") as f:
        f.write(f"""module.exports = {{
    uiHost: "127.0.0.1", uiPort: {port},
    flowFile: "flows.json", userDir: {json.dumps(d)},
    httpAdminRoot: false, httpNodeRoot: "/",
    apiMaxLength: "5mb",
    logging: {{ console: {{ level: "warn" }} }},
    editorTheme: {{ tours: false }},
    telemetry: {{ enabled: false }},
}};
""")
    log("Node-RED peer ...")
    proc = procs.start(["node", red, "--settings",
                        os.path.join(d, "settings.js"), "--userDir", d],
                       os.path.join(d, "node-red.log"), cwd=d)
    try:
        if not wait_post(f"http://127.0.0.1:{port}/hooks/payments", proc,
                         template, 60):
            with open(os.path.join(d, "node-red.log"),
                      errors="replace") as f:
                tail = f.read()[-600:]
            return {"skipped": f"Node-RED did not answer a POST: {tail}"}
        # warm up (Node.js compiles the hot path in the first seconds),
        # then interleave with plugboard (a fresh host each time), so a noisy
        # neighbour hurts both sides of the ratio alike
        run_wrk(port, "/hooks/payments", template, 3)
        pb_runs, red_runs = [], []
        for rep in range(p["repeats"]):
            pb_runs.append(plugboard_peak(b, work, p, procs, template, rep))
            red_runs.append(run_wrk(port, "/hooks/payments", template,
                                    p["wrk_s"]))
            if not red_runs[-1]["requests"]:
                return {"skipped": "Node-RED answered no request under wrk"}
    finally:
        procs.stop(proc, timeout=15)
    peak = median_run(red_runs)
    ver = "?"
    try:
        with open(os.path.join(peers, "node_modules", "node-red",
                               "package.json")) as f:
            ver = json.load(f).get("version", "?")
    except OSError:
        pass
    return {"version": ver, "peak": peak, "runs": red_runs,
            "plugboard_runs": pb_runs,
            "plugboard_peak_per_s": median_run(pb_runs)["requests_per_s"]}


def median_run(runs):
    """The run with the median requests per second."""
    ranked = sorted(runs, key=lambda r: r["requests_per_s"])
    return ranked[(len(ranked) - 1) // 2]


def plugboard_peak(b, work, p, procs, template, rep):
    """One wrk run against a fresh webhook host (no backlog from before)."""
    port = free_port()
    d = os.path.join(work, f"pair-{rep}")
    os.makedirs(d, exist_ok=True)
    cfg, _ = webhook_config(d, port, b)
    host = start_host(procs, b, cfg, port, d, "pair-host")
    try:
        return run_wrk(port, "/hooks/payments", template, p["wrk_s"])
    finally:
        procs.stop(host, timeout=30)
        shutil.rmtree(d, ignore_errors=True)


# --------------------------------------------------------------------------
# report
# --------------------------------------------------------------------------

def si(v):
    if v is None:
        return "-"
    if v >= 1e6:
        return f"{v / 1e6:.2f}M"
    if v >= 1e3:
        return f"{v / 1e3:.1f}k"
    return f"{v:.0f}"


def pct(v):
    return f"{100 * v:.1f}%"


def table(res):
    rows = []
    ip = res.get("in_process", {})
    a, b = ip.get("256", {}), ip.get("4096", {})

    def row(label, f):
        rows.append((label, f(a) if a else "-", f(b) if b else "-"))

    row("ceiling: ZeroMQ inproc PUSH/PULL, ev/s",
        lambda x: si(x["zmq_ceiling_per_s"]))
    row("ceiling: SQLite batched inserts, ev/s",
        lambda x: si(x["sqlite_ceiling_per_s"]))
    row("route 1->1, journal off, ev/s (vs ZeroMQ)",
        lambda x: f'{si(x["route_journal_off_per_s"])} '
                  f'({pct(x["off_vs_zmq"])})')
    row("route 1->1, journal on, ev/s (vs SQLite)",
        lambda x: f'{si(x["route_journal_on_per_s"])} '
                  f'({pct(x["on_vs_sqlite"])})')
    row("  events per commit, journal on",
        lambda x: f'{x["events_per_commit_on"]:.1f}')
    row("ceiling: SQLite, 3 delivery rows/event, ev/s",
        lambda x: si(x["sqlite_ceiling_3_targets_per_s"]))
    row("fan-out 1->3, journal off, ev/s (vs ZeroMQ)",
        lambda x: f'{si(x["fanout3_journal_off_per_s"])} '
                  f'({pct(x["fanout_off_vs_zmq"])})')
    row("fan-out 1->3, journal on, ev/s (vs SQLite 3)",
        lambda x: f'{si(x["fanout3_journal_on_per_s"])} '
                  f'({pct(x["fanout_on_vs_sqlite3"])})')
    lines = []
    w = max(len(r[0]) for r in rows) + 2
    lines.append(f'{"in-process":<{w}}{"256 B":>18}{"4 KiB":>18}')
    for r in rows:
        lines.append(f"{r[0]:<{w}}{r[1]:>18}{r[2]:>18}")
    lat = ip.get("latency")
    if lat:
        lines.append(
            f"one event at {lat['rate']:.0f}/s, emit -> accepted p50/p99: "
            f"{lat['accepted_p50_ms']:.2f} / {lat['accepted_p99_ms']:.2f} ms;"
            f" -> delivered p50/p99: {lat['delivered_p50_ms']:.2f} / "
            f"{lat['delivered_p99_ms']:.2f} ms")
    wh = res.get("webhook")
    if wh and "peak" in wh:
        pk, hf, lo = wh["peak"], wh["half"], wh["low_rate"]
        lines.append("")
        lines.append(f"webhook -> journal -> file sink over HTTP "
                     f"({res['template_bytes']}-byte Stripe event, wrk "
                     f"-t{wh['wrk_threads']} -c{wh['wrk_connections']})")
        lines.append(f"  peak: {si(pk['requests_per_s'])} req/s, "
                     f"p50 {pk['p50_ms']:.2f} ms, p99 {pk['p99_ms']:.2f} ms"
                     f" (non-2xx {pk['non2xx']}, socket errors "
                     f"{pk['socket_errors']})")
        lines.append(f"  file sink meanwhile: {si(pk['delivered_per_s'])} "
                     f"lines/s (fsync per line, the file plugin's default);"
                     f" the rest stays pending in the journal")
        lines.append(f"  at half peak ({hf['rate']:.0f}/s open loop, "
                     f"{hf['connections']} conns): p50 {hf['p50_ms']:.2f} ms,"
                     f" p99 {hf['p99_ms']:.2f} ms (errors {hf['errors']})")
        lines.append(f"  one at a time at {lo['rate']:.0f}/s: sent -> 200 "
                     f"p50/p99 {lo['p50_ms']:.2f} / {lo['p99_ms']:.2f} ms; "
                     f"sent -> line in the file p50/p99 "
                     f"{lo.get('delivered_p50_ms', 0):.2f} / "
                     f"{lo.get('delivered_p99_ms', 0):.2f} ms")
    elif wh:
        lines.append(f"webhook: skipped: {wh.get('skipped')}")
    nr = res.get("node_red")
    if nr and "peak" in nr and wh and "peak" in wh:
        ratio = nr["plugboard_peak_per_s"] / nr["peak"]["requests_per_s"]
        lines.append(f"  Node-RED {nr['version']} http in -> file: "
                     f"{si(nr['peak']['requests_per_s'])} req/s, p99 "
                     f"{nr['peak']['p99_ms']:.2f} ms; plugboard in the "
                     f"same {len(nr['runs'])} interleaved runs "
                     f"{si(nr['plugboard_peak_per_s'])} req/s; "
                     f"plugboard / Node-RED = {ratio:.1f}x")
    elif nr:
        lines.append(f"  Node-RED: skipped: {nr.get('skipped')}")
    rss = res.get("rss")
    if rss and "idle_rss_mib" in rss:
        lines.append(f"demo config RSS: idle {rss['idle_rss_mib']:.1f} MiB, "
                     f"loaded {rss['loaded_rss_mib']:.1f} MiB, peak "
                     f"{rss['peak_rss_mib']:.1f} MiB")
    up = res.get("upgrade")
    if up:
        lines.append(f"ctl upgrade x{up['upgrades']} under {up['rate']:.0f} "
                     f"webhooks/s: new build serving after "
                     f"{up['upgrade_ms_median']:.0f} ms (max "
                     f"{up['upgrade_ms_max']:.0f}); longest delivery pause "
                     f"{up['longest_pause_during_upgrade_ms']:.0f} ms "
                     f"(without upgrade {up['longest_pause_otherwise_ms']:.0f}"
                     f" ms); acknowledged {up['acknowledged']}, lost "
                     f"{up['lost']}")
    lines.append("")
    lines.append("targets")
    for t in res.get("targets", []):
        lines.append(f"  [{t['status']:^6}] {t['name']}: {t['value']}")
    return "\n".join(lines)


def targets(res):
    out = []

    def add(name, ok, value):
        out.append({"name": name, "status": "n/a" if ok is None else
                    ("met" if ok else "missed"), "value": value})

    a = res.get("in_process", {}).get("256")
    if a:
        add("journal off >= 50% of ZeroMQ (256 B)", a["off_vs_zmq"] >= 0.5,
            pct(a["off_vs_zmq"]))
        add("journal on >= 70% of SQLite batched inserts (256 B)",
            a["on_vs_sqlite"] >= 0.7, pct(a["on_vs_sqlite"]))
    wh, nr = res.get("webhook", {}), res.get("node_red", {})
    if "peak" in wh and "peak" in nr:
        r = nr["plugboard_peak_per_s"] / nr["peak"]["requests_per_s"]
        add("webhook >= 5x Node-RED req/s", r >= 5, f"{r:.1f}x")
    else:
        add("webhook >= 5x Node-RED req/s", None,
            "run make bench PEERS=1")
    if "half" in wh:
        add("webhook p99 < 5 ms at half peak", wh["half"]["p99_ms"] < 5,
            f"{wh['half']['p99_ms']:.2f} ms")
    up = res.get("upgrade", {})
    if "lost" in up:
        add("events lost during ctl upgrade under load = 0", up["lost"] == 0,
            str(up["lost"]))
    rss = res.get("rss", {})
    if "idle_rss_mib" in rss:
        add("idle RSS < 16 MiB (demo config)", rss["idle_rss_mib"] < 16,
            f"{rss['idle_rss_mib']:.1f} MiB")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--build", default=os.path.join(ROOT, "build-bench"))
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--peers", action="store_true")
    ap.add_argument("--check", action="store_true",
                    help="only check that the full and quick runs take "
                         "the same parameters (a test runs this)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench",
                                                  "results.json"))
    args = ap.parse_args()
    odd = sorted(set(QUICK) ^ set(FULL))
    if odd:
        log(f"bench: parameters not in both the full and quick runs: "
            f"{', '.join(odd)}")
        return 2
    if args.check:
        return 0
    p = QUICK if args.quick else FULL
    b = os.path.abspath(args.build)
    started = time.time()
    res = {"mode": "quick" if args.quick else "full",
           "started": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
           "machine": {"cpus": os.cpu_count(), "kernel": platform.release(),
                       "load_before": os.getloadavg()}}
    procs = Procs()
    work = tempfile.mkdtemp(prefix="plugboard-bench-")
    rc = 0
    try:
        ipdir = os.path.join(work, "ip")
        os.makedirs(ipdir)
        res["in_process"] = in_process(b, ipdir, p)
        template, tsize = write_template(work)
        res["template_bytes"] = tsize
        if shutil.which("wrk"):
            res["webhook"] = webhooks(b, work, p, procs, template)
            res["rss"] = demo_rss(b, work, p, procs, template)
            res["upgrade"] = upgrade_under_load(b, work, p, procs, template)
            if args.peers:
                res["node_red"] = node_red(b, work, p, procs, template)
        else:
            res["webhook"] = {"skipped": "wrk is not installed "
                                         "(scripts/install-deps --bench)"}
    except BenchError as e:
        log(f"bench: {e}")
        res["error"] = str(e)
        rc = 1
    finally:
        procs.stop_all()
        shutil.rmtree(work, ignore_errors=True)
    res["targets"] = targets(res)
    res["seconds"] = round(time.time() - started, 1)
    with open(args.out, "w") as f:
        json.dump(res, f, indent=2)
    print(table(res))
    print(f"\n({res['mode']} run, {res['seconds']} s; "
          f"{os.path.relpath(args.out, ROOT)})")
    return rc


if __name__ == "__main__":
    sys.exit(main())
