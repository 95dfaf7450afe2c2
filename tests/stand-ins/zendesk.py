#!/usr/bin/python3
"""
zendesk.py - a local stand-in for the Zendesk Support Tickets API.

Follows Zendesk's documented endpoints, answers and headers for what the
plugboard zendesk connector uses:

  GET  /api/v2/tickets.json?external_id=X    {"tickets": [...], "count": n,
                                              "next_page": null, ...}
  POST /api/v2/tickets.json                  201 {"ticket", "audit"},
                                              Location; Idempotency-Key
                                              honoured (x-idempotency-lookup:
                                              hit | miss; the same key with
                                              another body is refused)
  PUT  /api/v2/tickets/{id}.json             a comment; 422 when closed
  GET  /api/v2/tickets/{id}/comments.json    {"comments": [...]}

Authentication: "Basic base64(<email>/token:<api token>)" or "Bearer
<oauth token>"; anything else is 401 {"error": "Couldn't authenticate
you"}.  Validation failures are 422 RecordInvalid with "details", as
Zendesk sends them.  The ".json" suffix is optional, as at Zendesk.

Seed (POST /__standin/seed): {"email": "...", "api_token": "...",
"oauth_token": "...", "tickets": [{"id": 35436, "external_id": "...",
"status": "open", ...}]}.
"""

import base64
import hashlib
import json
import re
import sys
from datetime import datetime, timezone

import standin
from standin import Reply

STATUSES = {"new", "open", "pending", "hold", "solved", "closed"}
PRIORITIES = {"urgent", "high", "normal", "low"}


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def invalid(field, description, code="InvalidValue"):
    return Reply(422, {"error": "RecordInvalid",
                       "description": "Record validation errors",
                       "details": {field: [{"description": description,
                                            "error": code}]}})


class Zendesk(standin.Vendor):
    """Zendesk Tickets API stand-in"""

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self):
        self.email = "agent@example.com"
        self.api_token = "zd-api-token-0123456789"
        self.oauth_token = "zd-oauth-token-9876543210"
        self.tickets = {}
        self.comments = {}
        self.users = {}
        self.idempotency = {}
        self.next_ticket = 35436
        self.next_user = 6596848315901
        self.next_comment = 7000000001

    def seed(self, data):
        for k in ("email", "api_token", "oauth_token"):
            setattr(self, k, data.get(k, getattr(self, k)))
        for t in data.get("tickets", []):
            t = dict(t)
            t.setdefault("status", "open")
            t.setdefault("subject", "seeded")
            self.tickets[int(t["id"])] = t
            self.comments.setdefault(int(t["id"]), [])
            self.next_ticket = max(self.next_ticket, int(t["id"]) + 1)
        return self.state()

    def state(self):
        return {"tickets": list(self.tickets.values()),
                "comments": {str(k): v for k, v in self.comments.items()},
                "users": list(self.users.values())}

    # -- helpers ------------------------------------------------------------
    def _authorized(self, req):
        auth = req.header("authorization") or ""
        basic = base64.b64encode(("%s/token:%s" % (self.email,
                                                   self.api_token)).encode())
        return auth in ("Basic " + basic.decode(),
                        "Bearer " + self.oauth_token)

    def _user(self, requester):
        email = requester.get("email", "")
        for u in self.users.values():
            if u["email"] == email.lower():
                return u
        u = {"id": self.next_user, "email": email.lower(),
             "name": requester.get("name") or email.split("@")[0],
             "role": "end-user"}
        self.next_user += 1
        self.users[u["id"]] = u
        return u

    def _add_comment(self, tid, comment):
        c = {"id": self.next_comment, "type": "Comment",
             "body": comment["body"], "plain_body": comment["body"],
             "html_body": "<p>%s</p>" % comment["body"],
             "public": comment.get("public", True), "author_id": 1,
             "created_at": now_iso()}
        self.next_comment += 1
        self.comments.setdefault(tid, []).append(c)
        return c

    def _audit(self, tid):
        return {"id": self.next_comment, "ticket_id": tid,
                "created_at": now_iso(), "author_id": 1, "events": []}

    # -- endpoints ----------------------------------------------------------
    def _list(self, req):
        ext = req.query.get("external_id", [None])[0]
        tickets = [t for t in self.tickets.values()
                   if ext is None or t.get("external_id") == ext]
        return Reply(200, {"tickets": tickets, "next_page": None,
                           "previous_page": None, "count": len(tickets)})

    def _create(self, req):
        body = req.json()
        t = body.get("ticket") if isinstance(body, dict) else None
        if not isinstance(t, dict):
            return Reply(400, {"error": "InvalidEndpoint",
                               "description": "ticket is required"})
        comment = t.get("comment") or {}
        if not comment.get("body") and not t.get("description"):
            return invalid("base", "Description: cannot be blank",
                           "BlankValue")
        if t.get("priority") and t["priority"] not in PRIORITIES:
            return invalid("priority", "Priority: is not included in the "
                           "list")
        requester = t.get("requester")
        if requester is not None:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+",
                                requester.get("email", "")):
                return invalid("requester", "Requester: Email is invalid")
        for tag in t.get("tags", []):
            if not isinstance(tag, str) or re.search(r"\s", tag):
                return invalid("tags", "Tags: %r is invalid" % tag)
        tid = self.next_ticket
        self.next_ticket += 1
        user = self._user(requester) if requester else None
        ticket = {
            "id": tid,
            "url": "https://example.zendesk.com/api/v2/tickets/%d.json" % tid,
            "external_id": t.get("external_id"),
            "subject": t.get("subject") or "",
            "raw_subject": t.get("subject") or "",
            "description": comment.get("body") or t.get("description"),
            "priority": t.get("priority"),
            "status": t.get("status") or "new",
            "requester_id": user["id"] if user else 1,
            "submitter_id": 1,
            "tags": sorted(set(t.get("tags", []))),
            "created_at": now_iso(),
            "updated_at": now_iso(),
        }
        self.tickets[tid] = ticket
        self._add_comment(tid, {"body": ticket["description"],
                                "public": comment.get("public", True)})
        return Reply(201, {"ticket": ticket, "audit": self._audit(tid)},
                     headers={"Location": ticket["url"]})

    def _update(self, tid, req):
        ticket = self.tickets.get(tid)
        if ticket is None:
            return Reply(404, {"error": "RecordNotFound",
                               "description": "Not found"})
        if ticket["status"] == "closed":
            return invalid("status", "Status: closed prevents ticket update")
        t = req.json().get("ticket") or {}
        if "status" in t:
            if t["status"] not in STATUSES:
                return invalid("status", "Status: is not valid")
            ticket["status"] = t["status"]
        comment = t.get("comment")
        if comment is not None:
            if not comment.get("body"):
                return invalid("comment", "Comment: cannot be blank",
                               "BlankValue")
            self._add_comment(tid, comment)
        ticket["updated_at"] = now_iso()
        return Reply(200, {"ticket": ticket, "audit": self._audit(tid)})

    def _comments(self, tid, req):
        if tid not in self.tickets:
            return Reply(404, {"error": "RecordNotFound",
                               "description": "Not found"})
        comments = list(self.comments.get(tid, []))
        if req.query.get("sort_order", ["asc"])[0] == "desc":
            comments.reverse()
        return Reply(200, {"comments": comments, "next_page": None,
                           "previous_page": None, "count": len(comments)})

    def extra_headers(self, req, reply):
        return {"X-Rate-Limit": "700", "X-Rate-Limit-Remaining": "699",
                "X-Zendesk-API-Version": "v2"}

    def handle(self, req):
        if not self._authorized(req):
            return Reply(401, {"error": "Couldn't authenticate you"})
        if req.method in ("POST", "PUT") and not (
                req.header("content-type") or "").startswith(
                    "application/json"):
            return Reply(400, {"error": "Unsupported Content-Type",
                               "description": "use application/json"})
        path = re.sub(r"\.json$", "", req.path)
        try:
            if path == "/api/v2/tickets" and req.method == "GET":
                return self._list(req)
            if path == "/api/v2/tickets" and req.method == "POST":
                return self._idempotent(req, self._create)
            m = re.fullmatch(r"/api/v2/tickets/(\d+)", path)
            if m and req.method == "PUT":
                return self._update(int(m.group(1)), req)
            m = re.fullmatch(r"/api/v2/tickets/(\d+)/comments", path)
            if m and req.method == "GET":
                return self._comments(int(m.group(1)), req)
        except (ValueError, AttributeError, TypeError):
            return Reply(400, {"error": "Unprocessable JSON",
                               "description": "the body is not valid JSON"})
        return Reply(404, {"error": "InvalidEndpoint",
                           "description": "Not found"})

    def _idempotent(self, req, action):
        key = req.header("idempotency-key")
        if not key:
            return action(req)
        digest = hashlib.sha256(req.body).hexdigest()
        seen = self.idempotency.get(key)
        if seen is not None:
            if seen[0] != digest:
                return Reply(400, {
                    "error": "IdempotentRequestError",
                    "description": "Idempotency key was already used with "
                                   "a different request"})
            reply = Reply(seen[1].status, seen[1].body, seen[1].headers)
            reply.headers["x-idempotency-lookup"] = "hit"
            return reply
        reply = action(req)
        if 200 <= reply.status < 300:
            self.idempotency[key] = (digest, reply)
        reply.headers["x-idempotency-lookup"] = "miss"
        return reply


if __name__ == "__main__":
    standin.main(Zendesk(), sys.argv[1:])
