#!/usr/bin/python3
"""
stripe.py - a local stand-in for the Stripe API (customers).

Follows Stripe's documented endpoints, answers and headers for what the
plugboard stripe sink uses:

  GET  /v1/customers?email=X&limit=N   a list object; the e-mail filter is
                                       exact and case-sensitive, as Stripe
                                       documents it
  GET  /v1/customers/{id}              a customer, a deleted customer
                                       ({"deleted": true}), or 404
                                       resource_missing
  POST /v1/customers/{id}              form-encoded update (email, name,
                                       phone, description, metadata[k])

Every answer has a Request-Id header.  Authentication is "Authorization:
Bearer <secret key>" (or Basic with the key as user name); a wrong key is
401 invalid_request_error.  POSTs must be application/x-www-form-urlencoded.
Idempotency-Key: the first answer to a key is stored; the same key with the
same parameters replays it (Idempotent-Replayed: true), with other
parameters it is 400 idempotency_error.

Seed (POST /__standin/seed): {"api_key": "...", "customers": [{"id":
"cus_...", "email": "...", "name": "...", "metadata": {...}, "deleted":
false}]}.
"""

import base64
import json
import re
import sys
import time
import uuid

import standin
from standin import Reply

UPDATABLE = {"email", "name", "phone", "description"}


def stripe_error(status, message, etype="invalid_request_error", **extra):
    err = {"message": message, "type": etype}
    err.update(extra)
    return Reply(status, {"error": err})


class Stripe(standin.Vendor):
    """Stripe API stand-in (customers)"""

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self):
        self.api_key = "sk_test_plugboard0000000000000000"
        self.customers = {}
        self.idempotency = {}

    def seed(self, data):
        self.api_key = data.get("api_key", self.api_key)
        for c in data.get("customers", []):
            c = dict(c)
            c.setdefault("object", "customer")
            c.setdefault("metadata", {})
            c.setdefault("created", int(time.time()))
            c.setdefault("livemode", False)
            self.customers[c["id"]] = c
        return self.state()

    def state(self):
        return {"customers": list(self.customers.values())}

    def _key(self, req):
        auth = req.header("authorization") or ""
        if auth.startswith("Bearer "):
            return auth[7:]
        if auth.startswith("Basic "):
            try:
                return base64.b64decode(auth[6:]).decode().split(":")[0]
            except ValueError:
                return ""
        return ""

    def extra_headers(self, req, reply):
        h = {"Request-Id": "req_" + uuid.uuid4().hex[:14],
             "Stripe-Version": req.header("stripe-version") or "2024-06-20"}
        return h

    def _list(self, req):
        email = req.query.get("email", [None])[0]
        limit = int(req.query.get("limit", ["10"])[0])
        if limit < 1 or limit > 100:
            return stripe_error(400, "Invalid integer: %d" % limit,
                                param="limit", code="parameter_invalid_integer")
        data = [c for c in self.customers.values()
                if not c.get("deleted") and
                (email is None or c.get("email") == email)]
        return Reply(200, {"object": "list", "url": "/v1/customers",
                           "has_more": len(data) > limit,
                           "data": data[:limit]})

    def _get(self, cid):
        c = self.customers.get(cid)
        if c is None:
            return stripe_error(404, "No such customer: '%s'" % cid,
                                code="resource_missing", param="id",
                                doc_url="https://stripe.com/docs/error-codes/"
                                        "resource-missing")
        if c.get("deleted"):
            return Reply(200, {"id": cid, "object": "customer",
                               "deleted": True})
        return Reply(200, c)

    def _update(self, cid, req):
        c = self.customers.get(cid)
        if c is None or c.get("deleted"):
            return self._get(cid) if c is None else stripe_error(
                404, "No such customer: '%s'" % cid, code="resource_missing",
                param="id")
        form = req.form()
        changes, meta = {}, {}
        for k, v in form.items():
            m = re.fullmatch(r"metadata\[([^\[\]]+)\]", k)
            if m:
                meta[m.group(1)] = v[-1]
            elif k in UPDATABLE:
                changes[k] = v[-1]
            else:
                return stripe_error(400, "Received unknown parameter: %s" % k,
                                    code="parameter_unknown", param=k)
        email = changes.get("email")
        if email is not None and email != "" and not re.fullmatch(
                r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
            return stripe_error(400, "Invalid email address: %s" % email,
                                code="email_invalid", param="email")
        c.update(changes)
        c["metadata"].update(meta)
        return Reply(200, json.loads(json.dumps(c)))

    def handle(self, req):
        key = self._key(req)
        if key != self.api_key:
            shown = key[:8] + "*" * 12 + key[-4:] if len(key) > 12 else "****"
            return stripe_error(401, "Invalid API Key provided: %s" % shown)
        if req.method == "POST" and not (req.header("content-type") or
                                         "").startswith(
                "application/x-www-form-urlencoded"):
            return stripe_error(400, "Invalid request: unsupported "
                                "Content-Type. Use "
                                "application/x-www-form-urlencoded.")
        if req.path == "/v1/customers" and req.method == "GET":
            return self._list(req)
        m = re.fullmatch(r"/v1/customers/([A-Za-z0-9_]+)", req.path)
        if m and req.method == "GET":
            return self._get(m.group(1))
        if m and req.method == "POST":
            return self._idempotent(req, lambda: self._update(m.group(1),
                                                              req))
        return stripe_error(404, "Unrecognized request URL (%s: %s)."
                            % (req.method, req.path))

    def _idempotent(self, req, action):
        key = req.header("idempotency-key")
        if not key:
            return action()
        params = sorted(req.form().items())
        seen = self.idempotency.get(key)
        if seen is not None:
            if seen[0] != (req.path, params):
                return stripe_error(
                    400, "Keys for idempotent requests can only be used "
                    "with the same parameters they were first used with. "
                    "Try using a key other than '%s' if you meant to "
                    "execute a different request." % key,
                    etype="idempotency_error")
            reply = Reply(seen[1].status, seen[1].body, seen[1].headers)
            reply.headers["Idempotent-Replayed"] = "true"
            return reply
        reply = action()
        if reply.status < 500:
            self.idempotency[key] = ((req.path, params), reply)
        return reply


if __name__ == "__main__":
    standin.main(Stripe(), sys.argv[1:])
