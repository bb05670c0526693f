-- Deletes up to `max` messages of one queue that are ready or delayed (ready first),
-- with their payloads and counts; messages in flight and dead letters stay.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: max (`PurgeArgs` in scripts.rs).
-- Reply: how many were deleted; fewer than `max` when none is left.
-- The client calls it until it deletes fewer than `max`, so a large queue is purged in
-- bounded steps and Redis serves other clients in between.
local q = queue_keys()
local max = tonumber(ARGV[1])
local n = 0
local has_counts = redis.call('EXISTS', q.count) == 1
for _, set in ipairs({q.ready, q.delayed}) do
  if n < max then
    local ids = redis.call('ZRANGE', set, 0, max - n - 1)
    if #ids > 0 then
      redis.call('ZREMRANGEBYRANK', set, 0, #ids - 1)
      bulk('HDEL', q.msg, ids, 1)
      if has_counts then bulk('HDEL', q.count, ids, 1) end
      n = n + #ids
    end
  end
end
return n
