"""
standin.py - the shared skeleton of plugboard's local vendor stand-ins.

A stand-in is a small HTTP server (Python 3 standard library only) that
answers like one vendor API on 127.0.0.1, so connector tests never reach the
Internet.  This module owns what every stand-in shares:

  * the command line:  --port N (0 = any free port), --record FILE (one JSON
    line per request received, flushed before the answer is sent), --ready
    FILE (the chosen port is written there once the server listens);
  * fault injection, commanded over HTTP by the test itself:
        POST /__standin/faults   {"method": "POST", "path": "/v1/customers/*",
                                   "kind": "status" | "timeout" | "malformed"
                                           | "close",
                                   "status": 429, "headers": {...},
                                   "body": "...", "delay_ms": 3000,
                                   "apply": false, "times": 1}
      "path" is an fnmatch pattern on the URL path.  A fault with "apply":
      true lets the vendor logic run first (the record is created) and only
      then misbehaves: that is how a test makes "created, but the answer was
      lost" happen.  "timeout" sleeps delay_ms and then answers (too late);
      "malformed" answers 200 with a truncated JSON body; "close" drops the
      connection without an answer;
  * POST /__standin/seed (vendor specific JSON), GET /__standin/state (the
    vendor's records, for assertions), POST /__standin/reset.

Control requests are not recorded.  The vendor modules (hubspot.py,
zendesk.py, stripe.py) subclass Vendor and implement handle().
"""

import argparse
import fnmatch
import json
import os
import signal
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit


class Reply:
    """What the vendor logic answers: status, JSON-able body, headers."""

    def __init__(self, status, body=None, headers=None, raw=None):
        self.status = status
        self.body = body
        self.headers = dict(headers or {})
        self.raw = raw  # bytes that replace the JSON body when set

    def payload(self):
        if self.raw is not None:
            return self.raw
        if self.body is None:
            return b""
        return json.dumps(self.body).encode()


class Vendor:
    """One vendor's behaviour; subclasses implement handle() and seed()."""

    def __init__(self):
        self.lock = threading.RLock()

    def handle(self, req):  # pragma: no cover - abstract
        raise NotImplementedError

    def seed(self, data):
        pass

    def state(self):
        return {}

    def reset(self):
        pass

    def content_type(self):
        return "application/json; charset=utf-8"

    def extra_headers(self, req, reply):
        """Headers the vendor adds to every answer."""
        return {}


class Request:
    """One received request, as the vendor logic sees it."""

    def __init__(self, method, path, query, headers, body):
        self.method = method
        self.path = path
        self.query = query  # dict name -> list of values
        self.raw_query = ""
        self.headers = headers  # dict lower-case name -> value
        self.body = body  # bytes

    def header(self, name):
        return self.headers.get(name.lower())

    def json(self):
        return json.loads(self.body.decode("utf-8"))

    def form(self):
        return parse_qs(self.body.decode("utf-8"), keep_blank_values=True)


class Server:
    def __init__(self, vendor, record_path):
        self.vendor = vendor
        self.record_path = record_path
        self.record_lock = threading.Lock()
        self.seq = 0
        self.faults = []
        self.faults_lock = threading.Lock()
        if record_path:
            open(record_path, "w").close()

    def record(self, req, fault):
        with self.record_lock:
            self.seq += 1
            line = {
                "seq": self.seq,
                "method": req.method,
                "path": req.path,
                "query": req.raw_query,
                "headers": req.headers,
                "body": req.body.decode("utf-8", "replace"),
                "fault": fault.get("kind") if fault else None,
            }
            if self.record_path:
                with open(self.record_path, "a") as f:
                    f.write(json.dumps(line) + "\n")
                    f.flush()

    def take_fault(self, req):
        with self.faults_lock:
            for f in self.faults:
                if f.get("method") not in (None, req.method):
                    continue
                if not fnmatch.fnmatchcase(req.path, f.get("path", "*")):
                    continue
                f["times"] = f.get("times", 1) - 1
                if f["times"] <= 0:
                    self.faults.remove(f)
                return f
        return None


def make_handler(server):
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, fmt, *args):
            if os.environ.get("STANDIN_VERBOSE"):
                sys.stderr.write("standin: " + (fmt % args) + "\n")

        def _read(self):
            n = int(self.headers.get("Content-Length") or 0)
            return self.rfile.read(n) if n > 0 else b""

        def _send(self, status, payload, headers, content_type):
            self.send_response(status)
            if payload or status not in (204, 304):
                self.send_header("Content-Type", content_type)
            for k, v in headers.items():
                self.send_header(k, str(v))
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)
            self.wfile.flush()

        def _control(self, path, body):
            v = server.vendor
            if path == "/__standin/faults" and self.command == "POST":
                spec = json.loads(body or b"{}")
                specs = spec if isinstance(spec, list) else [spec]
                with server.faults_lock:
                    server.faults.extend(specs)
                return 200, {"faults": len(server.faults)}
            if path == "/__standin/seed" and self.command == "POST":
                with v.lock:
                    out = v.seed(json.loads(body or b"{}"))
                return 200, out if out is not None else {}
            if path == "/__standin/state":
                with v.lock:
                    return 200, v.state()
            if path == "/__standin/reset" and self.command == "POST":
                with server.faults_lock:
                    server.faults.clear()
                with v.lock:
                    v.reset()
                return 200, {}
            return 404, {"error": "no such control endpoint"}

        def _handle(self):
            split = urlsplit(self.path)
            body = self._read()
            if split.path.startswith("/__standin/"):
                status, out = self._control(split.path, body)
                self._send(status, json.dumps(out).encode(), {},
                           "application/json")
                return
            headers = {k.lower(): v for k, v in self.headers.items()}
            req = Request(self.command, split.path,
                          parse_qs(split.query, keep_blank_values=True),
                          headers, body)
            req.raw_query = split.query
            fault = server.take_fault(req)
            server.record(req, fault)
            vendor = server.vendor
            reply = None
            if fault is None or fault.get("apply"):
                with vendor.lock:
                    reply = vendor.handle(req)
            if fault is not None:
                kind = fault.get("kind", "status")
                if kind == "close":
                    self.close_connection = True
                    return
                if kind == "timeout":
                    time.sleep(fault.get("delay_ms", 5000) / 1000.0)
                    if reply is None:
                        reply = Reply(504, {"error": "stand-in timeout"})
                elif kind == "malformed":
                    reply = Reply(fault.get("status", 200),
                                  raw=fault.get("body",
                                                '{"id": "1", "proper'
                                                ).encode())
                else:
                    reply = Reply(fault.get("status", 500),
                                  raw=fault.get("body", "").encode(),
                                  headers=fault.get("headers"))
                    if "json" in fault:
                        reply.raw = None
                        reply.body = fault["json"]
            headers = dict(vendor.extra_headers(req, reply))
            headers.update(reply.headers)
            try:
                self._send(reply.status, reply.payload(), headers,
                           vendor.content_type())
            except (BrokenPipeError, ConnectionResetError):
                self.close_connection = True

        do_GET = _handle
        do_POST = _handle
        do_PUT = _handle
        do_PATCH = _handle
        do_DELETE = _handle

    return Handler


def new_id():
    return uuid.uuid4().hex


def main(vendor, argv=None):
    ap = argparse.ArgumentParser(description=vendor.__class__.__doc__)
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--record", default=None)
    ap.add_argument("--ready", default=None)
    ap.add_argument("--parent", type=int, default=0,
                    help="exit when this process (the test) is gone")
    args = ap.parse_args(argv)
    server = Server(vendor, args.record)
    httpd = ThreadingHTTPServer(("127.0.0.1", args.port),
                                make_handler(server))
    httpd.daemon_threads = True
    port = httpd.server_address[1]
    if args.ready:
        tmp = args.ready + ".tmp"
        with open(tmp, "w") as f:
            f.write("%d\n" % port)
        os.rename(tmp, args.ready)

    def stop(signum, frame):
        threading.Thread(target=httpd.shutdown, daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    if args.parent:
        def watch():
            while os.getppid() == args.parent:
                time.sleep(0.2)
            httpd.shutdown()

        threading.Thread(target=watch, daemon=True).start()
    try:
        httpd.serve_forever(poll_interval=0.05)
    finally:
        httpd.server_close()
