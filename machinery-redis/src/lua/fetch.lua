-- KEYS[1]: the queue's ready set. ARGV: prefix, queue, max, visibility_ms.
-- Promotes due delayed messages and expired leases (bounded batches), then takes up to
-- `max` ready messages, highest priority first, oldest first within a priority, giving
-- each a new lease token, one more delivery and a lease deadline `visibility_ms` ahead.
-- Returns {ms until the next delayed message or lease deadline is due (-1: none),
--          1 when more messages are ready (the client wakes another worker) else 0,
--          id, token, count, payload, ...}.
local prefix, queue = ARGV[1], ARGV[2]
local max, visibility = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local delayed = qkey(prefix, queue, 'delayed')
local inflight = qkey(prefix, queue, 'inflight')
local leases = qkey(prefix, queue, 'lease')

-- Bounded so one call never stalls Redis; the next call promotes the rest.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 5000)
if #due > 0 then
  redis.call('ZREM', delayed, unpack(due))
  for _, id in ipairs(due) do
    push_ready(prefix, queue, id)
  end
end
local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  redis.call('ZREM', inflight, unpack(expired))
  redis.call('HDEL', leases, unpack(expired))
  for _, id in ipairs(expired) do
    push_ready(prefix, queue, id)
  end
end

local out = {-1, 0}
local msgs = qkey(prefix, queue, 'msg')
local counts = qkey(prefix, queue, 'count')
local ready = qkey(prefix, queue, 'ready')
local popped = redis.call('ZPOPMIN', ready, max)
for i = 1, #popped, 2 do
  local id = popped[i]
  local payload = redis.call('HGET', msgs, id)
  if not payload then
    -- A member pushed by something else than this engine (or whose payload vanished):
    -- deliver the member itself as the payload under a proper id, so the worker decodes
    -- it and dead-letters what is not a message, instead of the queue choking on it.
    payload = id
    id = '0:' .. redis.call('INCR', qkey(prefix, queue, 'seq'))
    redis.call('HSET', msgs, id, payload)
  end
  local count = redis.call('HINCRBY', counts, id, 1)
  local token = tostring(redis.call('INCR', qkey(prefix, queue, 'lease_seq')))
  redis.call('HSET', leases, id, token)
  redis.call('ZADD', inflight, now + visibility, id)
  out[#out + 1] = id
  out[#out + 1] = token
  out[#out + 1] = count
  out[#out + 1] = payload
end

-- More waiting: the client passes the baton to another idle worker.
if #popped >= 2 * max and redis.call('ZCARD', ready) > 0 then
  out[2] = 1
end

-- Relative to the server's clock, so the client's clock does not matter.
local next_due = -1
local d = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if d[2] then next_due = tonumber(d[2]) end
local l = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
if l[2] and (next_due < 0 or tonumber(l[2]) < next_due) then next_due = tonumber(l[2]) end
if next_due >= 0 then
  next_due = math.max(next_due - now, 0)
end
out[1] = next_due
return out
