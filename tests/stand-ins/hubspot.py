#!/usr/bin/python3
"""
hubspot.py - a local stand-in for the HubSpot CRM v3 API.

Follows HubSpot's documented endpoints, answers and headers for what the
plugboard hubspot connector uses:

  POST  /crm/v3/objects/contacts/search     filterGroups, EQ (e-mail is
                                            compared case-insensitively)
  POST  /crm/v3/objects/contacts            409 CONFLICT "Contact already
                                            exists. Existing ID: <id>" when
                                            the e-mail is taken
  PATCH /crm/v3/objects/contacts/{id}       404 OBJECT_NOT_FOUND
  POST  /crm/v3/objects/contacts/batch/read 200 COMPLETE, or 207 with errors
                                            for ids that do not exist
  POST  /crm/v3/objects/notes               with associations (type 202 =
                                            note to contact)
  POST  /crm/v3/objects/notes/search        CONTAINS_TOKEN on hs_note_body
  PATCH /crm/v3/objects/deals/{id}          dealstage must be a known stage

Authentication is "Authorization: Bearer <private app token>" (401
INVALID_AUTHENTICATION otherwise); property values are validated (400
VALIDATION_ERROR); every non-search answer carries the
X-HubSpot-RateLimit-* headers.  Ids are numeric strings, large ones.

Seed (POST /__standin/seed): {"token": "...", "contacts": [{"id": "...",
"properties": {...}}], "deals": [...], "deal_stages": [...],
"contact_properties": [...], "search_lag_ms": 0}.  search_lag_ms hides
objects created less than that long ago from search, as HubSpot's search
index does.
"""

import re
import sys
import time
import uuid
from datetime import datetime, timezone

import standin
from standin import Reply

DEFAULT_TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
CONTACT_PROPERTIES = {
    "email", "firstname", "lastname", "phone", "company", "website",
    "lifecyclestage", "hs_object_id", "createdate", "lastmodifieddate",
}
NOTE_PROPERTIES = {"hs_timestamp", "hs_note_body", "hubspot_owner_id",
                   "hs_attachment_ids"}
DEAL_PROPERTIES = {"dealname", "dealstage", "pipeline", "amount",
                   "closedate", "hubspot_owner_id"}
DEFAULT_STAGES = ["appointmentscheduled", "qualifiedtobuy",
                  "presentationscheduled", "decisionmakerboughtin",
                  "contractsent", "closedwon", "closedlost"]


def now_iso():
    return datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%f")[
        :-3] + "Z"


def error(status, message, category, **extra):
    body = {"status": "error", "message": message,
            "correlationId": str(uuid.uuid4()), "category": category}
    body.update(extra)
    return Reply(status, body)


def invalid(name, message, code):
    detail = ('[{"isValid":false,"message":"%s","error":"%s","name":"%s"}]'
              % (message.replace('"', '\\"'), code, name))
    return error(400, "Property values were not valid: " + detail,
                 "VALIDATION_ERROR")


class HubSpot(standin.Vendor):
    """HubSpot CRM v3 stand-in"""

    def __init__(self):
        super().__init__()
        self.reset()

    def reset(self):
        self.token = DEFAULT_TOKEN
        self.objects = {"contacts": {}, "notes": {}, "deals": {}}
        self.created_at = {}
        self.associations = []
        self.next_id = 332507367100
        self.stages = list(DEFAULT_STAGES)
        self.contact_props = set(CONTACT_PROPERTIES)
        self.search_lag_ms = 0
        self.daily_used = 0

    # -- seeding and state ------------------------------------------------
    def seed(self, data):
        self.token = data.get("token", self.token)
        self.search_lag_ms = data.get("search_lag_ms", self.search_lag_ms)
        self.stages = data.get("deal_stages", self.stages)
        self.contact_props |= set(data.get("contact_properties", []))
        for kind in ("contacts", "deals"):
            for o in data.get(kind, []):
                self._store(kind, str(o["id"]), dict(o.get("properties", {})),
                            seeded=True)
        return self.state()

    def state(self):
        return {
            "contacts": list(self.objects["contacts"].values()),
            "notes": list(self.objects["notes"].values()),
            "deals": list(self.objects["deals"].values()),
            "associations": self.associations,
        }

    # -- helpers ------------------------------------------------------------
    def _store(self, kind, oid, props, seeded=False):
        ts = now_iso()
        props = dict(props)
        props.setdefault("createdate", ts)
        props["lastmodifieddate"] = ts
        props["hs_object_id"] = oid
        obj = {"id": oid, "properties": props, "createdAt": ts,
               "updatedAt": ts, "archived": False}
        self.objects[kind][oid] = obj
        self.created_at[(kind, oid)] = 0 if seeded else time.time()
        return obj

    def _new_id(self):
        self.next_id += 17
        return str(self.next_id)

    def _view(self, obj, wanted=None):
        props = obj["properties"]
        keep = {"createdate", "lastmodifieddate", "hs_object_id"}
        if wanted:
            keep |= set(wanted)
        else:
            keep |= set(props)
        return {"id": obj["id"],
                "properties": {k: v for k, v in props.items() if k in keep},
                "createdAt": obj["createdAt"], "updatedAt": obj["updatedAt"],
                "archived": False}

    def _validate(self, kind, props):
        allowed = {"contacts": self.contact_props, "notes": NOTE_PROPERTIES,
                   "deals": DEAL_PROPERTIES}[kind]
        if not isinstance(props, dict):
            return error(400, "Invalid input JSON on line 1: properties",
                         "VALIDATION_ERROR")
        for name, value in props.items():
            if name not in allowed:
                return invalid(name, 'Property "%s" does not exist' % name,
                               "PROPERTY_DOESNT_EXIST")
            if not isinstance(value, str):
                return invalid(name, "%s was not a string" % name,
                               "INVALID_STRING")
        email = props.get("email")
        if kind == "contacts" and email is not None:
            if not re.fullmatch(r"[^@\s]+@[^@\s]+\.[^@\s]+", email):
                return invalid("email", "Email address %s is invalid" % email,
                               "INVALID_EMAIL")
        stage = props.get("dealstage")
        if kind == "deals" and stage is not None and stage not in self.stages:
            return invalid("dealstage",
                           "%s was not one of the allowed options" % stage,
                           "INVALID_OPTION")
        return None

    def _email_owner(self, email, skip=None):
        for obj in self.objects["contacts"].values():
            e = obj["properties"].get("email")
            if e and e.lower() == email.lower() and obj["id"] != skip:
                return obj
        return None

    def _searchable(self, kind, oid):
        created = self.created_at.get((kind, oid), 0)
        return (time.time() - created) * 1000 >= self.search_lag_ms

    @staticmethod
    def _matches(obj, f):
        prop = obj["properties"].get(f.get("propertyName"))
        op = f.get("operator")
        value = f.get("value")
        if prop is None:
            return op == "NOT_HAS_PROPERTY"
        if op == "EQ":
            return prop.lower() == str(value).lower()
        if op == "CONTAINS_TOKEN":
            tokens = re.split(r"[^0-9A-Za-z]+", re.sub(r"<[^>]*>", " ", prop))
            return str(value).lower() in (t.lower() for t in tokens)
        if op == "HAS_PROPERTY":
            return True
        return False

    # -- endpoints ----------------------------------------------------------
    def _search(self, kind, req):
        body = req.json()
        groups = body.get("filterGroups", [])
        limit = int(body.get("limit", 10))
        if limit > 200:
            return error(400, "limit must be at most 200", "VALIDATION_ERROR")
        out = []
        for obj in self.objects[kind].values():
            if not self._searchable(kind, obj["id"]):
                continue
            if groups and not any(all(self._matches(obj, f)
                                      for f in g.get("filters", []))
                                  for g in groups):
                continue
            out.append(self._view(obj, body.get("properties")))
        return Reply(200, {"total": len(out), "results": out[:limit]})

    def _create(self, kind, req):
        body = req.json()
        props = body.get("properties")
        bad = self._validate(kind, props)
        if bad:
            return bad
        if kind == "contacts" and props.get("email"):
            owner = self._email_owner(props["email"])
            if owner:
                return error(409, "Contact already exists. Existing ID: %s"
                             % owner["id"], "CONFLICT")
        if kind == "notes" and "hs_timestamp" not in props:
            return invalid("hs_timestamp", "hs_timestamp is required",
                           "REQUIRED_PROPERTY")
        links = []
        for a in body.get("associations", []) or []:
            to = str(a.get("to", {}).get("id"))
            types = a.get("types", [])
            if to not in self.objects["contacts"]:
                return error(400, "One or more associations are invalid: "
                             "no contact %s" % to, "VALIDATION_ERROR")
            if not any(t.get("associationTypeId") == 202 and
                       t.get("associationCategory") == "HUBSPOT_DEFINED"
                       for t in types):
                return error(400, "association type is not note_to_contact",
                             "VALIDATION_ERROR")
            links.append(to)
        oid = self._new_id()
        obj = self._store(kind, oid, props)
        for to in links:
            self.associations.append({"from": oid, "to": to, "typeId": 202})
        return Reply(201, self._view(obj))

    def _update(self, kind, oid, req):
        obj = self.objects[kind].get(oid)
        if obj is None:
            return error(404, "Object not found.  objectId are usually "
                         "numeric.", "OBJECT_NOT_FOUND",
                         context={"id": [oid]})
        props = req.json().get("properties")
        bad = self._validate(kind, props)
        if bad:
            return bad
        if kind == "contacts" and props.get("email"):
            if self._email_owner(props["email"], skip=oid):
                return error(409, "A contact with the email '%s' already "
                             "exists." % props["email"], "CONFLICT")
        obj["properties"].update(props)
        obj["properties"]["lastmodifieddate"] = now_iso()
        obj["updatedAt"] = obj["properties"]["lastmodifieddate"]
        return Reply(200, self._view(obj))

    def _batch_read(self, req):
        body = req.json()
        started = now_iso()
        results, missing = [], []
        for i in body.get("inputs", []):
            obj = self.objects["contacts"].get(str(i.get("id")))
            if obj is None:
                missing.append(str(i.get("id")))
            else:
                results.append(self._view(obj, body.get("properties")))
        out = {"status": "COMPLETE", "results": results,
               "startedAt": started, "completedAt": now_iso()}
        if missing:
            out["numErrors"] = 1
            out["errors"] = [{
                "status": "error", "category": "OBJECT_NOT_FOUND",
                "message": "Could not get some CONTACT objects, they may be "
                           "deleted or not exist. Check that ids are valid.",
                "context": {"ids": missing}}]
            return Reply(207, out)
        return Reply(200, out)

    def extra_headers(self, req, reply):
        if req.path.endswith("/search"):
            return {}  # HubSpot sends no rate-limit headers on search
        self.daily_used += 1
        return {
            "X-HubSpot-RateLimit-Daily": "250000",
            "X-HubSpot-RateLimit-Daily-Remaining": str(250000 -
                                                       self.daily_used),
            "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
            "X-HubSpot-RateLimit-Max": "100",
            "X-HubSpot-RateLimit-Remaining": "99",
        }

    def handle(self, req):
        auth = req.header("authorization") or ""
        if auth != "Bearer " + self.token:
            return error(401, "Authentication credentials not found. This "
                         "API supports OAuth 2.0 authentication and you can "
                         "find more details at https://developers.hubspot."
                         "com/docs/methods/auth/oauth-overview",
                         "INVALID_AUTHENTICATION")
        if req.method in ("POST", "PATCH") and not (
                req.header("content-type") or "").startswith(
                    "application/json"):
            return error(415, "Content type not supported",
                         "VALIDATION_ERROR")
        try:
            m = re.fullmatch(r"/crm/v3/objects/(contacts|notes|deals)"
                             r"(?:/([^/]+))?(?:/([^/]+))?", req.path)
            if m:
                kind, a, b = m.groups()
                if req.method == "POST" and a == "search" and b is None:
                    return self._search(kind, req)
                if (req.method == "POST" and kind == "contacts"
                        and a == "batch" and b == "read"):
                    return self._batch_read(req)
                if req.method == "POST" and a is None:
                    return self._create(kind, req)
                if req.method == "PATCH" and a and b is None:
                    return self._update(kind, a, req)
        except (ValueError, AttributeError, TypeError):
            return error(400, "Invalid input JSON on line 1",
                         "VALIDATION_ERROR")
        return error(404, "Unable to route %s request: %s"
                     % (req.method, req.path), "NOT_FOUND")


if __name__ == "__main__":
    standin.main(HubSpot(), sys.argv[1:])
