-- Settles one delivery, fenced by its lease.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: id, receipt ('<id>/<token>'), action, arg (`SettleArgs` in scripts.rs).
--   action: 'ack' | 'release' (arg = delay ms) | 'dead' (arg = reason)
--         | 'return' (arg = delay ms: ready again, that delivery uncounted: a fetch whose
--           caller went away, or a task whose rate limit had no start slot near).
-- Reply: 0 when the lease is no longer held (nothing changed), else 1.
local q = queue_keys()
local id, member, action, arg = ARGV[1], ARGV[2], ARGV[3], ARGV[4]
if not holds(q, member) then return 0 end
if action == 'ack' then
  forget(q, id, member)
elseif action == 'release' or action == 'return' then
  redis.call('ZREM', q.inflight, member)
  if action == 'release' then
    -- The count hash holds deliveries that ended unsettled; fetch adds the new one.
    redis.call('HINCRBY', q.count, id, 1)
  end
  local delay = tonumber(arg) or 0
  if delay > 0 then
    redis.call('ZADD', q.delayed, now_ms() + delay, id)
  else
    push_ready(q, id)
  end
elseif action == 'dead' then
  local payload = redis.call('HGET', q.msg, id) or ''
  forget(q, id, member)
  redis.call('RPUSH', q.dead, dead_entry(arg, payload))
else
  return redis.error_reply('unknown settle action ' .. action)
end
return 1
