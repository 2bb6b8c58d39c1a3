-- wrk script for bench/ingest.py's de-duplication scenarios: as post.lua, except that every
-- request makes each `@@@@@@@@@@@@` in its body unique, so that event ids never repeat.
--
--   wrk -t1 -c64 -d10s -s bench/lua/post_unique.lua URL -- TOKEN BODIES.jsonl RUN
--
-- RUN (4 characters) tells this wrk run from the others on the same server (the warm-up, other
-- rounds). A placeholder becomes RUN, the thread's number (2 digits) and a counter (6 digits):
-- 12 characters, so a body keeps its size. Both scenarios of a comparison (ids in `event_id`, or
-- in a field the server ignores) go through this same per-request work in wrk.

local token, bodies_path, run = nil, nil, nil
local bodies, pool_size, next_index, counter = {}, 0, 0, 0
local thread_count = 0
local PLACEHOLDER = "@@@@@@@@@@@@"

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_number", thread_count)
end

function init(args)
  token, bodies_path, run = args[1], args[2], args[3]
  if not token or not bodies_path or not run or #run ~= 4 then
    error("usage: wrk ... -s post_unique.lua URL -- TOKEN BODIES.jsonl RUN(4 characters)")
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
      bodies[pool_size] = line
    end
  end
  file:close()
  assert(pool_size > 0, "no bodies in " .. bodies_path)
end

local function unique()
  counter = counter + 1
  return string.format("%s%02d%06d", run, (thread_number or 1) % 100, counter % 1000000)
end

function request()
  next_index = next_index % pool_size + 1
  local body = string.gsub(bodies[next_index], PLACEHOLDER, unique)
  return wrk.format(nil, nil, nil, body)
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
