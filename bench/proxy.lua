-- wrk script: send absolute-URI requests (proxy form) to the proxy given as
-- wrk's URL, for the origin in BENCH_TARGET (ip:port on loopback).
local target = os.getenv("BENCH_TARGET")
assert(target and target:match("^127%.%d+%.%d+%.%d+:%d+$"), "BENCH_TARGET must be a loopback ip:port")
wrk.headers["Host"] = target
local req = wrk.format("GET", "http://" .. target .. "/")
request = function()
	return req
end
