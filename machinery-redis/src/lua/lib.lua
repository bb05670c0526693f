-- Shared by every script. Key names mirror keys.rs: one hash tag per queue, so the
-- keys of one queue live in one Redis Cluster slot. Every script works on one queue's
-- keys only (KEYS[1] is one of them, for routing); work on other queues is done by the
-- client, one script call per queue. Wake-up tokens for blocked workers live in another
-- slot (one for all queues, so a worker can block on several queues in one command):
-- the client pushes them after a script queued something.
local function qkey(prefix, queue, kind)
  return prefix .. ':{q:' .. queue .. '}:' .. kind
end

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- Message ids are '<priority>:<sequence>'. The ready set is ordered by priority
-- (higher first), then by sequence (older first): the lowest ranks are the next messages, and a
-- message that comes back (expired lease, release) gets its old place again.
local function ready_score(priority, seq)
  return (9 - priority) * 1e13 + seq
end

-- The ready-set score of a message id; an id that is not ours (pushed by something
-- else) is first of the lowest priority, and fetch gives it a proper id.
local function id_score(id)
  local priority, seq = string.match(id, '^(%d):(%d+)$')
  if priority then
    return ready_score(tonumber(priority), tonumber(seq))
  end
  return ready_score(0, 0)
end

-- Runs `cmd key <args...>` in calls of at most 2,000 arguments (Lua's unpack has a
-- stack limit); `step` keeps pairs together.
local function bulk(cmd, key, args, step)
  local chunk = 2000 - (2000 % step)
  for i = 1, #args, chunk do
    redis.call(cmd, key, unpack(args, i, math.min(i + chunk - 1, #args)))
  end
end

-- Makes `ids` ready again, each at its old place: one ZADD for all.
local function push_ready_all(prefix, queue, ids)
  if #ids == 0 then return end
  local pairs_ = {}
  for _, id in ipairs(ids) do
    pairs_[#pairs_ + 1] = id_score(id)
    pairs_[#pairs_ + 1] = id
  end
  bulk('ZADD', qkey(prefix, queue, 'ready'), pairs_, 2)
end

local function push_ready(prefix, queue, id)
  redis.call('ZADD', qkey(prefix, queue, 'ready'), id_score(id), id)
end

-- Stores and queues one message; returns 1 when it is ready now, 0 when delayed.
local function enqueue(prefix, queue, eta, priority, payload, now)
  local id = priority .. ':' .. redis.call('INCR', qkey(prefix, queue, 'seq'))
  redis.call('HSET', qkey(prefix, queue, 'msg'), id, payload)
  if eta > now then
    redis.call('ZADD', qkey(prefix, queue, 'delayed'), eta, id)
    return 0
  end
  push_ready(prefix, queue, id)
  return 1
end

-- A delivery is held while '<id>/<token>' (its receipt) is a member of the queue's
-- in-flight set, scored by its lease deadline: the lease check is one lookup in a set
-- Redis indexes by member, whatever its size (a hash of leases is a listpack, searched
-- end to end, up to `hash-max-listpack-entries`, and a batch in flight is that big).
local function lease_member(id, token)
  return id .. '/' .. token
end

local function member_id(member)
  return string.match(member, '^(.*)/[^/]*$') or member
end

-- The lease check of every settling step: the delivery must still be in flight.
local function holds(prefix, queue, id, token)
  return redis.call('ZSCORE', qkey(prefix, queue, 'inflight'), lease_member(id, token)) ~= false
end

-- Drops everything kept for the settled messages `ids`, in flight as `members`.
local function forget_all(prefix, queue, ids, members)
  if #ids == 0 then return end
  bulk('ZREM', qkey(prefix, queue, 'inflight'), members, 1)
  bulk('HDEL', qkey(prefix, queue, 'msg'), ids, 1)
  -- Only a message delivered before has a count; usually no message has one.
  local counts = qkey(prefix, queue, 'count')
  if redis.call('EXISTS', counts) == 1 then
    bulk('HDEL', counts, ids, 1)
  end
end

local function forget(prefix, queue, id, token)
  forget_all(prefix, queue, {id}, {lease_member(id, token)})
end

-- Records a chord member's final state; returns true when this call completes the
-- chord (last success, or first failure) and must publish the callback: exactly once.
-- The chord is kept under the queue of its callback, which it publishes into.
local function chord_member(prefix, ttl, queue, group, index, success, result, name, err)
  local ck = qkey(prefix, queue, 'chord:' .. group)
  local rk = ck .. ':results'
  if redis.call('EXISTS', ck) == 0 then return nil end
  if success == '1' then
    redis.call('HSET', rk, index, result)
  else
    redis.call('HSETNX', ck, 'failure', index .. '\n' .. name .. '\n' .. err)
  end
  if ttl > 0 then
    redis.call('PEXPIRE', ck, ttl)
    redis.call('PEXPIRE', rk, ttl)
  end
  local count = tonumber(redis.call('HGET', ck, 'count'))
  local finished = redis.call('HLEN', rk) >= count or redis.call('HEXISTS', ck, 'failure') == 1
  return finished and redis.call('HSETNX', ck, 'fired', 1) == 1
end

-- Queues a fired chord's callback into the chord's queue.
local function enqueue_callback(prefix, queue, group, now)
  local ck = qkey(prefix, queue, 'chord:' .. group)
  enqueue(prefix, queue, 0, redis.call('HGET', ck, 'priority'), redis.call('HGET', ck, 'callback'), now)
end
