-- KEYS[1]: the queue's ready set. ARGV: prefix, queue, visibility_ms, then
-- (id, token) per delivery. Returns 1/0 each: whether the lease was still held.
local prefix, queue, visibility = ARGV[1], ARGV[2], tonumber(ARGV[3])
local deadline = now_ms() + visibility
local inflight = qkey(prefix, queue, 'inflight')
local out = {}
for i = 4, #ARGV, 2 do
  local id, token = ARGV[i], ARGV[i + 1]
  if holds(prefix, queue, id, token) then
    redis.call('ZADD', inflight, 'XX', deadline, lease_member(id, token))
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
