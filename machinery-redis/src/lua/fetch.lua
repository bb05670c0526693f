-- ARGV: prefix, queue, max, visibility_ms.
-- Promotes due delayed messages and expired leases, then takes up to `max` ready
-- messages, highest priority first, oldest first within a priority. Returns {next_due_ms or -1, id, token, count,
-- payload, ...}.
local prefix, queue = ARGV[1], ARGV[2]
local max, visibility = tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local delayed = qkey(prefix, queue, 'delayed')
local inflight = qkey(prefix, queue, 'inflight')
local leases = qkey(prefix, queue, 'lease')

local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 5000)
for _, id in ipairs(due) do
  redis.call('ZREM', delayed, id)
  push_ready(prefix, queue, id)
end
local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
for _, id in ipairs(expired) do
  redis.call('ZREM', inflight, id)
  redis.call('HDEL', leases, id)
  push_ready(prefix, queue, id)
end

local out = {-1}
local msgs = qkey(prefix, queue, 'msg')
local counts = qkey(prefix, queue, 'count')
local ready = qkey(prefix, queue, 'ready')
local popped = redis.call('ZPOPMIN', ready, max)
for i = 1, #popped, 2 do
  local id = popped[i]
  local payload = redis.call('HGET', msgs, id)
  if payload then
    local count = redis.call('HINCRBY', counts, id, 1)
    local token = tostring(redis.call('INCR', qkey(prefix, queue, 'lease_seq')))
    redis.call('HSET', leases, id, token)
    redis.call('ZADD', inflight, now + visibility, id)
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = count
    out[#out + 1] = payload
  end
end

-- More waiting: pass the baton to another idle worker.
if #popped >= 2 * max and redis.call('ZCARD', ready) > 0 then
  wake(prefix, queue)
end

local next_due = -1
local d = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if d[2] then next_due = tonumber(d[2]) end
local l = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
if l[2] and (next_due < 0 or tonumber(l[2]) < next_due) then next_due = tonumber(l[2]) end
out[1] = next_due
return out
