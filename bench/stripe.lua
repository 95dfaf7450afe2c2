-- stripe.lua - wrk script: POST Stripe-shaped webhooks, each with a fresh
-- event id and a valid Stripe-Signature, over keep-alive connections.
--
--   wrk -t1 -c32 -d10s --latency -s bench/stripe.lua \
--       http://127.0.0.1:PORT/hooks/payments -- SECRET TEMPLATE
--
-- TEMPLATE is a Stripe event (JSON) whose event id is "__EVENT_ID__".
-- The signature is HMAC-SHA256(SECRET, "<t>.<body>") with t = now, the
-- scheme Stripe uses, computed through LuaJIT's FFI with the libcrypto
-- that wrk itself links (falls back to loading libcrypto).  Prints one
-- JSON line at the end (after wrk's own summary) for bench/run.py.

local ffi = require("ffi")
ffi.cdef [[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md,
                    unsigned int *md_len);
]]
local ok, crypto = pcall(function()
    local _ = ffi.C.HMAC
    return ffi.C
end)
if not ok then
    crypto = ffi.load("crypto")
end

local threads = {}
local counter = 0
local secret, pre, post, run
local mac = ffi.new("unsigned char[32]")
local maclen = ffi.new("unsigned int[1]")
non2xx = 0 -- global: done() reads it from each thread

-- tid is a global each thread gets from setup()
function setup(thread)
    thread:set("tid", #threads + 1)
    table.insert(threads, thread)
end

function init(args)
    secret = args[1]
    local f = assert(io.open(args[2], "rb"))
    local template = f:read("*a")
    f:close()
    local at = assert(template:find("__EVENT_ID__", 1, true),
                      "no __EVENT_ID__ in the template")
    pre = template:sub(1, at - 1)
    post = template:sub(at + #"__EVENT_ID__")
    math.randomseed(os.time())
    run = string.format("%x%04x", os.time(), math.random(0, 65535))
end

local function hex(buf, n)
    local out = {}
    for i = 0, n - 1 do
        out[#out + 1] = string.format("%02x", buf[i])
    end
    return table.concat(out)
end

function request()
    counter = counter + 1
    local body = pre .. string.format("evt_wrk%s_%d_%d", run, tid, counter)
                 .. post
    local t = tostring(os.time())
    local signed = t .. "." .. body
    crypto.HMAC(crypto.EVP_sha256(), secret, #secret, signed, #signed, mac,
                maclen)
    return wrk.format("POST", nil, {
        ["Content-Type"] = "application/json",
        ["Stripe-Signature"] = "t=" .. t .. ",v1=" .. hex(mac, 32),
    }, body)
end

function response(status, headers, body)
    if status < 200 or status > 299 then
        non2xx = non2xx + 1
    end
end

function done(summary, latency, requests)
    local bad = 0
    for _, thread in ipairs(threads) do
        bad = bad + (thread:get("non2xx") or 0)
    end
    local e = summary.errors
    io.write(string.format(
        '{"requests":%d,"seconds":%.3f,"requests_per_s":%.1f,' ..
        '"p50_ms":%.3f,"p90_ms":%.3f,"p99_ms":%.3f,"max_ms":%.3f,' ..
        '"non2xx":%d,"socket_errors":%d}\n',
        summary.requests, summary.duration / 1e6,
        summary.requests / (summary.duration / 1e6),
        latency:percentile(50) / 1000, latency:percentile(90) / 1000,
        latency:percentile(99) / 1000, latency.max / 1000, bad,
        e.connect + e.read + e.write + e.timeout))
end
