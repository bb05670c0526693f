-- ARGV: prefix, visibility_ms, then (queue, id, token) per delivery. Returns 1/0 each.
local prefix, visibility = ARGV[1], tonumber(ARGV[2])
local deadline = now_ms() + visibility
local out = {}
for i = 3, #ARGV, 3 do
  local queue, id, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  if holds(prefix, queue, id, token) then
    redis.call('ZADD', qkey(prefix, queue, 'inflight'), 'XX', deadline, id)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
