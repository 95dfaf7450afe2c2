#!/usr/bin/python3
"""smtp_server.py - a real SMTP server (aiosmtpd) for the smtp connector's tests.

Run with Debian's /usr/bin/python3 (python3-aiosmtpd).  It listens on
127.0.0.1 and a port the kernel picks, writes that port to DIR/port once it
accepts connections, and stores every message it accepts as

    DIR/messages/NNNN.eml   the message as received (dot-stuffing removed)
    DIR/messages/NNNN.json  {"mail_from", "rcpt_tos", "auth", "tls"}

both written to a temporary name and renamed, .json last, so a reader that
sees the .json sees the whole message.  DIR/session.log gets one line per
EHLO, completed STARTTLS and AUTH attempt (the login, never the password).

Replies can be scripted at any time through DIR/rules, read on every
command; one rule a line:

    rcpt ADDRESS CODE TEXT   answer RCPT TO:<ADDRESS> with "CODE TEXT"
    mail CODE TEXT           answer MAIL FROM with "CODE TEXT"
    data CODE TEXT           answer the end of DATA with "CODE TEXT"
                             (the message is stored only for a 2xx)
    data-delay SECONDS       store the message, then wait before answering

TLS: --cert/--key with --starttls (offered, and required before MAIL) or
--implicit-tls (TLS from the first byte).  --auth USER:PASS offers AUTH
PLAIN/LOGIN; --auth-plaintext offers it without TLS too (a careless
server, to prove the client refuses to use it).  SIGTERM stops it; it also
stops by itself after --max-lifetime seconds so a crashed test cannot leave
it running.
"""

import argparse
import asyncio
import json
import os
import signal
import ssl
import sys

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


def write_atomic(path, data):
    tmp = path + ".tmp"
    with open(tmp, "wb") as f:
        f.write(data)
    os.rename(tmp, path)


class Store:
    def __init__(self, root):
        self.root = root
        self.messages = os.path.join(root, "messages")
        os.makedirs(self.messages, exist_ok=True)
        self.count = 0

    def rules(self):
        try:
            with open(os.path.join(self.root, "rules"), encoding="utf-8") as f:
                return [line.split(None, 2) for line in f if line.strip()]
        except FileNotFoundError:
            return []

    def rule(self, kind, subject=None):
        for words in self.rules():
            if not words or words[0] != kind:
                continue
            if kind == "rcpt":
                rest = words[2].split(None, 1) if len(words) > 2 else []
                if words[1].lower() == (subject or "").lower() and rest:
                    return " ".join(rest)
            elif kind == "data-delay":
                return float(words[1])
            elif len(words) > 1:
                return " ".join(words[1:])
        return None

    def log(self, line):
        with open(os.path.join(self.root, "session.log"), "a",
                  encoding="utf-8") as f:
            f.write(line + "\n")

    def save(self, envelope, session, tls):
        self.count += 1
        base = os.path.join(self.messages, "%04d" % self.count)
        write_atomic(base + ".eml", envelope.original_content)
        meta = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "auth": getattr(session, "authenticated_as", None),
            "tls": tls,
        }
        write_atomic(base + ".json", json.dumps(meta).encode())


class Handler:
    def __init__(self, store):
        self.store = store

    async def handle_EHLO(self, server, session, envelope, hostname, responses):
        self.store.log("EHLO " + hostname)
        session.host_name = hostname
        return responses

    def handle_STARTTLS(self, server, session, envelope):
        # called once the TLS handshake after STARTTLS is done
        self.store.log("STARTTLS")
        return True

    async def handle_MAIL(self, server, session, envelope, address, options):
        reply = self.store.rule("mail")
        if reply:
            return reply
        envelope.mail_from = address
        envelope.mail_options.extend(options)
        return "250 OK"

    async def handle_RCPT(self, server, session, envelope, address, options):
        reply = self.store.rule("rcpt", address)
        if reply:
            return reply
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        reply = self.store.rule("data") or "250 2.0.0 OK stored"
        if reply.startswith("2"):
            tls = (session.ssl is not None
                   or server.transport.get_extra_info("ssl_object") is not None)
            self.store.save(envelope, session, tls)
        delay = self.store.rule("data-delay")
        if delay:
            await asyncio.sleep(delay)
        return reply


def make_authenticator(store, user, password):
    def authenticate(server, session, envelope, mechanism, auth_data):
        if not isinstance(auth_data, LoginPassword):
            return AuthResult(success=False, handled=False)
        store.log("AUTH %s %s" % (mechanism, auth_data.login.decode()))
        ok = (auth_data.login.decode() == user
              and auth_data.password.decode() == password)
        if ok:
            session.authenticated_as = user
        return AuthResult(success=ok, handled=False)
    return authenticate


async def serve(args):
    store = Store(args.dir)
    ctx = None
    if args.cert:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.load_cert_chain(args.cert, args.key)
    kwargs = {"hostname": "stand-in.example", "decode_data": False}
    if args.auth:
        user, password = args.auth.split(":", 1)
        kwargs["authenticator"] = make_authenticator(store, user, password)
        kwargs["auth_require_tls"] = not (args.auth_plaintext
                                          or args.implicit_tls)
    if ctx is not None and args.starttls:
        kwargs["tls_context"] = ctx
        kwargs["require_starttls"] = True

    def factory():
        return SMTP(Handler(store), **kwargs)

    loop = asyncio.get_running_loop()
    server = await loop.create_server(
        factory, "127.0.0.1", 0,
        ssl=ctx if args.implicit_tls else None)
    port = server.sockets[0].getsockname()[1]
    write_atomic(os.path.join(args.dir, "port"), str(port).encode())

    stop = asyncio.Event()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    loop.call_later(args.max_lifetime, stop.set)
    await stop.wait()
    server.close()


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--dir", required=True)
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--starttls", action="store_true")
    p.add_argument("--implicit-tls", action="store_true")
    p.add_argument("--auth")
    p.add_argument("--auth-plaintext", action="store_true")
    p.add_argument("--max-lifetime", type=float, default=120.0)
    args = p.parse_args()
    if (args.starttls or args.implicit_tls) and not (args.cert and args.key):
        p.error("--starttls and --implicit-tls need --cert and --key")
    asyncio.run(serve(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
