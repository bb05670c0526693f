-- Takes up to `max` ready messages of one queue.
-- KEYS: the queue's keys (`queue_keys`, 8), then its pause flag.
-- ARGV: max, visibility_ms (`FetchArgs` in scripts.rs).
-- Reply: {ms until the next delayed message or lease deadline is due (-1: none),
--         1 when more messages are ready (the client wakes another worker) else 0,
--         id, token, count, payload, ...}.
-- Promotes due delayed messages and expired leases (bounded batches), then takes up to
-- `max` ready messages, highest priority first, oldest first within a priority, giving
-- each a new lease token, one more delivery and a lease deadline `visibility_ms` ahead
-- (its receipt '<id>/<token>' in the in-flight set; the count hash keeps, per message,
-- the deliveries that ended unsettled: a lease that expired, a release).
-- A message delivered before (its count is in the count hash) comes in a batch of its
-- own. Every step is one command for the whole batch, not one per message. The lease token
-- is one per call, shared by the batch: a message is at most once in a batch, so
-- (message, token) still names one delivery, and the token is formatted once.
local q = queue_keys()
-- A paused queue hands out nothing and promotes nothing; nothing comes due for its
-- workers (-1), so they block on the wake-up list as on an empty queue, and resuming
-- pushes a wake-up token.
if redis.call('EXISTS', KEYS[QUEUE_KEY_COUNT + 1]) == 1 then
  return {-1, 0}
end
local max, visibility = tonumber(ARGV[1]), tonumber(ARGV[2])
local now = now_ms()
local delayed, inflight, counts = q.delayed, q.inflight, q.count

-- Bounded so one call never stalls Redis; the next call promotes the rest.
local due = redis.call('ZRANGEBYSCORE', delayed, '-inf', now, 'LIMIT', 0, 5000)
if #due > 0 then
  bulk('ZREM', delayed, due, 1)
  push_ready_all(q, due)
end
local expired = redis.call('ZRANGEBYSCORE', inflight, '-inf', now, 'LIMIT', 0, 1000)
if #expired > 0 then
  bulk('ZREM', inflight, expired, 1)
  local ids = {}
  for k, member in ipairs(expired) do
    ids[k] = member_id(member)
    redis.call('HINCRBY', counts, ids[k], 1)
  end
  push_ready_all(q, ids)
end

local out = {-1, 0}
local msgs, ready = q.msg, q.ready
-- Without scores: Redis would format each one as a float for the reply.
local ids = redis.call('ZRANGE', ready, 0, max - 1)
local n = #ids
local cut_short = false
local seen = {}
if n > 0 and redis.call('EXISTS', counts) == 1 then
  seen = redis.call('HMGET', counts, unpack(ids))
  -- A message delivered before whose delivery ended unsettled (its worker died, lost
  -- the lease, or handed it back) comes alone: if it kills its worker again, no other
  -- message is charged a delivery with it. The batch ends before it, or is just it.
  for k = 1, n do
    if seen[k] then
      local cut = k - 1
      if k == 1 then cut = 1 end
      for j = n, cut + 1, -1 do
        ids[j] = nil
        seen[j] = nil
      end
      cut_short = cut < n
      n = cut
      break
    end
  end
end
if n > 0 then
  redis.call('ZREMRANGEBYRANK', ready, 0, n - 1)
  local payloads = redis.call('HMGET', msgs, unpack(ids))
  for k = 1, n do
    if not payloads[k] then
      -- A member pushed by something else than this engine (or whose payload vanished):
      -- deliver the member itself as the payload under a proper id, so the worker
      -- decodes it and dead-letters what is not a message, instead of the queue choking
      -- on it.
      payloads[k] = ids[k]
      ids[k] = '0:' .. redis.call('INCR', q.seq)
      redis.call('HSET', msgs, ids[k], payloads[k])
    end
  end
  local token = tostring(redis.call('INCR', q.lease_seq))
  -- The member '~' (score +inf, never due) keeps the set alive when nothing is in
  -- flight. Redis 7.0 creates a sorted set as a listpack and inserts its first 128
  -- members one by one, parsing every score on the way (32,000 instructions each,
  -- measured): a set created anew for every batch cost more than the rest of the fetch.
  -- Kept, it turns into a skip list once and stays one.
  local deadlines = {'+inf', '~'}
  -- Numbers become strings once each (Lua formats them with sprintf): the deadline and
  -- the token once per call, a count only for a message delivered before.
  local deadline = tostring(now + visibility)
  for k = 1, n do
    local id = ids[k]
    local count = '1'
    if seen[k] then count = tostring(tonumber(seen[k]) + 1) end
    deadlines[#deadlines + 1] = deadline
    deadlines[#deadlines + 1] = lease_member(id, token)
    out[#out + 1] = id
    out[#out + 1] = token
    out[#out + 1] = count
    out[#out + 1] = payloads[k]
  end
  redis.call('ZADD', inflight, unpack(deadlines))
end

-- More waiting: the client passes the baton to another idle worker.
if (n >= max or cut_short) and redis.call('ZCARD', ready) > 0 then
  out[2] = 1
end

-- Relative to the server's clock, so the client's clock does not matter.
local next_due = -1
local d = redis.call('ZRANGE', delayed, 0, 0, 'WITHSCORES')
if d[2] then next_due = tonumber(d[2]) end
local l = redis.call('ZRANGE', inflight, 0, 0, 'WITHSCORES')
local lease_due = l[2] and tonumber(l[2])
if lease_due and lease_due ~= math.huge and (next_due < 0 or lease_due < next_due) then
  next_due = lease_due
end
if next_due >= 0 then
  next_due = math.max(next_due - now, 0)
end
out[1] = next_due
return out
