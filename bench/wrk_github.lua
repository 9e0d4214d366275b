-- wrk script of bench/ingress.py: one signed GitHub webhook body (WRK_BODY, a file; its
-- signature in WRK_SIGNATURE), each request with a delivery id of its own
-- (WRK_RUN-<thread>-<n>), so the ingress stores every one. Prints one RESULT line and one
-- LATENCY line (microseconds) for the runner to read.

local threads = {}

function setup(thread)
  table.insert(threads, thread)
  thread:set("tid", #threads)
end

function init(args)
  local file = assert(io.open(os.getenv("WRK_BODY"), "rb"))
  body = file:read("*a")
  file:close()
  counter = 0
  head = "POST /webhooks/github HTTP/1.1\r\nHost: 127.0.0.1\r\n"
    .. "Content-Type: application/json\r\nX-GitHub-Event: issues\r\n"
    .. "X-Hub-Signature-256: " .. os.getenv("WRK_SIGNATURE") .. "\r\n"
    .. "Content-Length: " .. #body .. "\r\n"
    .. "X-GitHub-Delivery: " .. os.getenv("WRK_RUN") .. "-" .. tid .. "-"
end

function request()
  counter = counter + 1
  return head .. counter .. "\r\n\r\n" .. body
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT %d %d %d %d %d %d %d\n", summary.requests, summary.duration,
    e.status, e.connect, e.read, e.write, e.timeout))
  io.write(string.format("LATENCY %d %d %d\n", latency:percentile(50), latency:percentile(99),
    latency.max))
end
