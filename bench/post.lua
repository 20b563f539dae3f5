-- wrk script: POST one fixed body carrying an image file, report a JSON summary line.
--
-- Usage: wrk -t1 -c8 -d10s -s bench/post.lua http://127.0.0.1:8000/digits -- IMAGE [FILENAME] [CONTENT_TYPE] [BODY]
--   IMAGE         path of the image file sent
--   FILENAME      filename of the part (default digit.png)
--   CONTENT_TYPE  Content-Type of the part (default image/png)
--   BODY          "multipart" (default): the file as the single part named "file";
--                 "v2": an Open Inference Protocol infer request with binary tensor data: the JSON inference
--                 header, then the file as a BYTES tensor of shape [1] named "image" (its 4-byte little-endian
--                 length, then its bytes), every output asked back as binary data; the
--                 Inference-Header-Content-Length header gives the JSON's length (Triton's extension)
--
-- Contract: done() prints exactly one line starting with "WRK_JSON " followed by a JSON
-- object: requests, duration_s, bytes, errors {connect, read, write, timeout, status},
-- latency_ms {mean, p50, p90, p99, max}. wrk counts responses with status > 399 in
-- errors.status (a 1xx/3xx would not be counted; bench/http.py preflights each payload).

local BOUNDARY = "----modelhouse-bench-7d1f0c2a9b"

local function read_file(path)
   local handle, err = io.open(path, "rb")
   if not handle then
      error("post.lua: cannot open " .. tostring(path) .. ": " .. tostring(err))
   end
   local data = handle:read("*a")
   handle:close()
   return data
end

local function multipart(data, filename, content_type)
   return table.concat({
      "--", BOUNDARY, "\r\n",
      'Content-Disposition: form-data; name="file"; filename="', filename, '"\r\n',
      "Content-Type: ", content_type, "\r\n\r\n",
      data, "\r\n",
      "--", BOUNDARY, "--\r\n",
   })
end

local function le32(n)
   return string.char(n % 256, math.floor(n / 256) % 256, math.floor(n / 65536) % 256, math.floor(n / 16777216) % 256)
end

local function v2_infer(data)
   local header = string.format(
      '{"inputs":[{"name":"image","datatype":"BYTES","shape":[1],"parameters":{"binary_data_size":%d}}],' ..
      '"parameters":{"binary_data_output":true}}', #data + 4)
   return header .. le32(#data) .. data, #header
end

-- Runs once per wrk thread before its request is built (wrk.init formats the request afterwards).
function init(args)
   local path = args[1] or os.getenv("BENCH_BODY_FILE")
   if not path then
      error("post.lua: pass the image path after --, or set BENCH_BODY_FILE")
   end
   wrk.method = "POST"
   local body = args[4] or "multipart"
   if body == "v2" then
      local header_length
      wrk.body, header_length = v2_infer(read_file(path))
      wrk.headers["Content-Type"] = "application/octet-stream"
      wrk.headers["Inference-Header-Content-Length"] = tostring(header_length)
   elseif body == "multipart" then
      wrk.body = multipart(read_file(path), args[2] or "digit.png", args[3] or "image/png")
      wrk.headers["Content-Type"] = "multipart/form-data; boundary=" .. BOUNDARY
   else
      error("post.lua: BODY must be multipart or v2, got " .. body)
   end
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
