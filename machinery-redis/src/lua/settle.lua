-- KEYS[1]: the queue's ready set. ARGV: prefix, queue, id, token, action, arg.
-- action: 'ack' | 'release' (arg = delay ms) | 'dead' (arg = reason)
--       | 'return' (a fetch whose caller went away: ready again, that delivery uncounted).
-- Returns 0 when the lease is no longer held (nothing changed), else 1.
local prefix, queue, id, token, action, arg = ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5], ARGV[6]
if not holds(prefix, queue, id, token) then return 0 end
if action == 'ack' then
  forget(prefix, queue, id, token)
elseif action == 'release' or action == 'return' then
  redis.call('ZREM', qkey(prefix, queue, 'inflight'), lease_member(id, token))
  if action == 'release' then
    -- The count hash holds deliveries that ended unsettled; fetch adds the new one.
    redis.call('HINCRBY', qkey(prefix, queue, 'count'), id, 1)
  end
  local delay = tonumber(arg) or 0
  if delay > 0 then
    redis.call('ZADD', qkey(prefix, queue, 'delayed'), now_ms() + delay, id)
  else
    push_ready(prefix, queue, id)
  end
elseif action == 'dead' then
  local payload = redis.call('HGET', qkey(prefix, queue, 'msg'), id) or ''
  forget(prefix, queue, id, token)
  -- '<reason length>:<reason><payload>', read back by DeadLetter parsing in broker.rs.
  redis.call('RPUSH', qkey(prefix, queue, 'dead'), #arg .. ':' .. arg .. payload)
else
  return redis.error_reply('unknown settle action ' .. action)
end
return 1
