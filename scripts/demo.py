#!/usr/bin/env python3
"""plugboard demo: real Stripe webhooks through the host to three outboxes.

Starts the host on the default config, sends every sample Stripe event in
etc/samples/stripe/ signed the way Stripe signs them, then one forged
request and one duplicate, waits for the deliveries, stops the host
cleanly and shows what reached the CRM outbox, the mail Maildir and the
support outbox, and what was refused and why.

Uses only the Python standard library.  State goes to var/ (cleared first).
"""
import argparse
import email
import email.header
import email.policy
import glob
import hashlib
import hmac
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request

SECRET = "whsec_plugboard_demo_only"
LISTEN = "127.0.0.1:8787"


def sign(body: bytes, secret: str, t: int) -> str:
    mac = hmac.new(secret.encode(), f"{t}.".encode() + body, hashlib.sha256)
    return f"t={t},v1={mac.hexdigest()}"


def post(url: str, body: bytes, headers: dict):
    req = urllib.request.Request(url, data=body, method="POST", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace")


def wait_healthy(base: str, proc, seconds: float = 10.0) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if proc.poll() is not None:
            return False
        try:
            with urllib.request.urlopen(base + "/healthz", timeout=1) as r:
                if r.status == 200:
                    return True
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.1)
    return False


def read_lines(path: str):
    try:
        with open(path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]
    except FileNotFoundError:
        return []


def maildir_messages(root: str):
    out = []
    for path in sorted(glob.glob(os.path.join(root, "new", "*"))):
        with open(path, "rb") as f:
            msg = email.message_from_binary_file(f, policy=email.policy.default)
        out.append(msg)
    return out


def count_all(cfg_outboxes):
    crm, mail, support = cfg_outboxes
    return len(read_lines(crm)) + len(maildir_messages(mail)) + len(read_lines(support))


def money(data):
    amount = data.get("amount")
    cur = data.get("currency", "")
    if isinstance(amount, int):
        return f"{amount / 100:.2f} {cur}"
    return ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--binary", default="build/plugboard")
    ap.add_argument("--config", default="etc/plugboard.cfg")
    ap.add_argument("--samples", default="etc/samples/stripe")
    args = ap.parse_args()

    shutil.rmtree("var", ignore_errors=True)
    os.makedirs("var", mode=0o700, exist_ok=True)  # customer data: owner only
    outboxes = ("var/outbox/crm.jsonl", "var/mail", "var/outbox/support.jsonl")

    env = dict(os.environ, STRIPE_WEBHOOK_SECRET=SECRET)
    log = open("var/plugboard.log", "wb")
    print(f"== starting: {args.binary} run -c {args.config}   (log: var/plugboard.log)")
    proc = subprocess.Popen([args.binary, "run", "-c", args.config], env=env,
                            stdout=log, stderr=subprocess.STDOUT)
    base = "http://" + LISTEN
    try:
        if not wait_healthy(base, proc):
            print("the host did not come up; its log says:")
            log.flush()
            print(open("var/plugboard.log", encoding="utf-8", errors="replace").read())
            return 1
        url = base + "/hooks/payments"
        refused = []
        print(f"\n== sending real Stripe sample events to POST {url}")
        samples = sorted(glob.glob(os.path.join(args.samples, "*.json")))
        first_body = None
        for path in samples:
            body = open(path, "rb").read()
            first_body = first_body or body
            t = int(time.time())
            status, text = post(url, body, {"Content-Type": "application/json",
                                            "Stripe-Signature": sign(body, SECRET, t)})
            print(f"  {os.path.basename(path):40s} -> {status} {text.strip()}")
            if status >= 300:
                refused.append((os.path.basename(path), status, text.strip()))

        print("\n== sending a forged request (signed with the wrong secret)")
        t = int(time.time())
        status, text = post(url, first_body, {"Content-Type": "application/json",
                                              "Stripe-Signature": sign(first_body, "whsec_attacker", t)})
        print(f"  forged {os.path.basename(samples[0]):33s} -> {status} {text.strip()}")
        refused.append(("forged " + os.path.basename(samples[0]), status, text.strip()))

        print("\n== sending a duplicate (Stripe retrying an event already accepted)")
        t = int(time.time())
        status, text = post(url, first_body, {"Content-Type": "application/json",
                                              "Stripe-Signature": sign(first_body, SECRET, t)})
        print(f"  again  {os.path.basename(samples[0]):33s} -> {status} {text.strip()}")

        # wait until deliveries stop arriving
        last, stable_since = -1, time.time()
        deadline = time.time() + 15
        while time.time() < deadline:
            n = count_all(outboxes)
            if n != last:
                last, stable_since = n, time.time()
            elif n > 0 and time.time() - stable_since > 1.0:
                break
            time.sleep(0.1)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            code = proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            code = proc.wait()
        log.close()
    print(f"\n== host stopped cleanly (exit {code})")

    crm = read_lines(outboxes[0])
    print(f"\n== crm outbox ({outboxes[0]}): {len(crm)} events")
    for ev in crm:
        d = ev.get("data", {})
        print(f"  {ev['type']:22s} key={ev.get('key', ''):28s} {money(d)}")
    mails = maildir_messages(outboxes[1])
    print(f"\n== mail ({outboxes[1]}/new, a Maildir: try `mutt -f {outboxes[1]}`): {len(mails)} messages")
    for m in mails:
        print(f"  To: {m['To']}\n      Subject: {m['Subject']}")
    support = read_lines(outboxes[2])
    print(f"\n== support outbox ({outboxes[2]}): {len(support)} events")
    for ev in support:
        d = ev.get("data", {})
        print(f"  {ev['type']:22s} key={ev.get('key', ''):28s} {money(d)}")
    print("\n== refused")
    for name, status, text in refused:
        print(f"  {name}: HTTP {status}: {text}")
    print("  duplicate: accepted once, not routed again (see 'duplicates' above)")
    print("\n== dead letters (see `plugboard dlq list` while a host runs)")
    print("  Stripe's sample events mostly carry no customer e-mail, so the mail")
    print("  connector refuses them permanently; each becomes a dead letter and the")
    print("  route's owner gets a notice in the Maildir (the '[plugboard] ... could")
    print("  not reach mail' messages above). Nothing is dropped silently.")
    return 0 if code == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
