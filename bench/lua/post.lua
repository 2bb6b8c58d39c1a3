-- wrk script for bench/ingest.py and bench/delete.py: POST JSON bodies with a bearer key, report
-- figures as JSON.
--
--   wrk -t1 -c64 -d10s -s bench/lua/post.lua http://127.0.0.1:PORT/v1/track -- TOKEN BODIES.jsonl [DELAY_MS]
--
-- BODIES.jsonl holds one request body per line. Every request of a thread cycles through them:
-- the requests are pre-built in init(), so request() only returns a string (cheap next to the
-- server's work). With a single line, wrk's static-request fast path is used (no request()).
-- done() prints one line `WRK_JSON {...}` that bench/ingest.py parses.
-- DELAY_MS (optional) paces the load: each connection waits that long after a response before it
-- sends its next request (wrk's delay() hook; the wait is not part of the measured latency), so
-- C connections send at most about C * 1000 / DELAY_MS requests/s.

local token, bodies_path = nil, nil
local requests_pool, pool_size, next_index, first_body = {}, 0, 0, nil

function init(args)
  token, bodies_path = args[1], args[2]
  if not token or not bodies_path then
    error("usage: wrk ... -s post.lua URL -- TOKEN BODIES.jsonl")
  end
  local delay_ms = tonumber(args[3] or "")
  if delay_ms and delay_ms > 0 then
    delay = function() return delay_ms end
  end
  wrk.method = "POST"
  wrk.headers["Authorization"] = "Bearer " .. token
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["User-Agent"] = "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
    .. "(KHTML, like Gecko) Chrome/126.0.0.0 Safari/537.36"
  local file = assert(io.open(bodies_path, "r"))
  for line in file:lines() do
    if #line > 0 then
      pool_size = pool_size + 1
      requests_pool[pool_size] = wrk.format(nil, nil, nil, line)
      first_body = first_body or line
    end
  end
  file:close()
  assert(pool_size > 0, "no bodies in " .. bodies_path)
  if pool_size == 1 then
    -- static request: wrk formats wrk.method/headers/body once and never calls into Lua per request
    wrk.body = first_body
    request = nil
  end
end

function request()
  next_index = next_index % pool_size + 1
  return requests_pool[next_index]
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"duration_us":%d,"requests":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p75":%d,"p90":%d,"p99":%d,"p999":%d}}\n',
    summary.duration, summary.requests, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(75), latency:percentile(90),
    latency:percentile(99), latency:percentile(99.9)))
end
