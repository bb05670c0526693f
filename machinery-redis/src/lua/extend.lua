-- Pushes the lease deadlines of deliveries of one queue ahead.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: visibility_ms, then one receipt ('<id>/<token>') per delivery (`ExtendArgs` in
--       scripts.rs).
-- Reply: {1 or 0 per delivery}: whether its lease was still held (and is extended).
local q = queue_keys()
local deadline = now_ms() + tonumber(ARGV[1])
local out = {}
for i = 2, #ARGV do
  local member = ARGV[i]
  if holds(q, member) then
    redis.call('ZADD', q.inflight, 'XX', deadline, member)
    out[#out + 1] = 1
  else
    out[#out + 1] = 0
  end
end
return out
