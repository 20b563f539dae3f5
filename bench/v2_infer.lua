-- wrk script: POST one Open Inference Protocol v2 infer request with binary tensor data: the image file
-- as a BYTES tensor of shape [1] (named "image"), every output asked back as binary data.
--
-- Usage: wrk -t1 -c8 -d10s -s bench/v2_infer.lua http://127.0.0.1:8000/v2/models/digits/infer -- IMAGE
--   IMAGE   path of the image file sent (further arguments, as bench/post.lua takes them, are ignored)
--
-- The body is the JSON inference header, then the element's 4-byte little-endian length and the file's
-- bytes; the Inference-Header-Content-Length header gives the JSON's length (Triton's binary tensor
-- data extension). Contract of done(): as bench/post.lua, one line "WRK_JSON {...}".

local function read_file(path)
   local handle, err = io.open(path, "rb")
   if not handle then
      error("v2_infer.lua: cannot open " .. tostring(path) .. ": " .. tostring(err))
   end
   local data = handle:read("*a")
   handle:close()
   return data
end

local function le32(n)
   return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, math.floor(n / 16777216) % 256)
end

function init(args)
   local path = args[1] or os.getenv("BENCH_BODY_FILE")
   if not path then
      error("v2_infer.lua: pass the image path after --, or set BENCH_BODY_FILE")
   end
   local data = read_file(path)
   local header = string.format(
      '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":%d}}],' ..
      '"parameters":{"binary_data_output":true}}', #data + 4)
   wrk.method = "POST"
   wrk.body = header .. le32(#data) .. data
   wrk.headers["Content-Type"] = "application/octet-stream"
   wrk.headers["Inference-Header-Content-Length"] = tostring(#header)
end

local function ms(microseconds)
   return microseconds / 1000.0
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'WRK_JSON {"requests": %d, "duration_s": %.6f, "bytes": %d, ' ..
      '"errors": {"connect": %d, "read": %d, "write": %d, "timeout": %d, "status": %d}, ' ..
      '"latency_ms": {"mean": %.3f, "p50": %.3f, "p90": %.3f, "p99": %.3f, "max": %.3f}}\n',
      summary.requests, summary.duration / 1e6, summary.bytes,
      e.connect, e.read, e.write, e.timeout, e.status,
      ms(latency.mean), ms(latency:percentile(50)), ms(latency:percentile(90)),
      ms(latency:percentile(99)), ms(latency.max)))
end
