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
-- The chord is kept under the queue of its callback, which it publishes into. It has no
-- TTL until its callback's state is final (`chord_finished`), however long its members
-- take.
local function chord_member(prefix, queue, group, index, success, result, name, err)
  local ck = qkey(prefix, queue, 'chord:' .. group)
  local rk = ck .. ':results'
  if redis.call('EXISTS', ck) == 0 then return nil end
  if success == '1' then
    redis.call('HSET', rk, index, result)
  else
    redis.call('HSETNX', ck, 'failure', index .. '\n' .. name .. '\n' .. err)
  end
  local count = tonumber(redis.call('HGET', ck, 'count'))
  local finished = redis.call('HLEN', rk) >= count or redis.call('HEXISTS', ck, 'failure') == 1
  return finished and redis.call('HSETNX', ck, 'fired', 1) == 1
end

-- The chord's callback reached its final state: its bookkeeping is kept for the results
-- TTL from now (forever when the TTL is 0).
local function chord_finished(prefix, queue, group, ttl)
  if ttl <= 0 then return end
  local ck = qkey(prefix, queue, 'chord:' .. group)
  redis.call('PEXPIRE', ck, ttl)
  redis.call('PEXPIRE', ck .. ':results', ttl)
end

-- Queues a fired chord's callback into the chord's queue.
local function enqueue_callback(prefix, queue, group, now)
  local ck = qkey(prefix, queue, 'chord:' .. group)
  enqueue(prefix, queue, 0, redis.call('HGET', ck, 'priority'), redis.call('HGET', ck, 'callback'), now)
end

-- Stored states are MessagePack maps written by `TaskState::encode`. Whether one is
-- final is read from its `state` field, walking the map's top-level pairs up to that
-- key (the fourth: after uuid, name and queue), so a state's size does not matter and
-- its result is never read. Searching the bytes for `\xa5state\xa7SUCCESS` would be
-- cheaper but not exact: a UUID (`bin`, 16 arbitrary bytes) can hold those 14 bytes
-- (UTF-8 strings cannot: 0xa5 and 0xa7 are continuation bytes, and `e` then 0xa7 is not
-- UTF-8). Redis's `cmsgpack` does not read `bin`, so the walk is done here.
local mp_fixed = {[0xcc] = 1, [0xcd] = 2, [0xce] = 4, [0xcf] = 8, [0xd0] = 1, [0xd1] = 2,
                  [0xd2] = 4, [0xd3] = 8, [0xca] = 4, [0xcb] = 8}
local mp_sized = {[0xd9] = 1, [0xda] = 2, [0xdb] = 4, [0xc4] = 1, [0xc5] = 2, [0xc6] = 4}

-- The start and length of the string or binary at `p`; nil for another type.
local function mp_bytes(s, p, binary)
  local b = string.byte(s, p)
  if not b then return nil end
  if b >= 0xa0 and b <= 0xbf then return p + 1, b - 0xa0 end
  local width = mp_sized[b]
  if not width or (binary == false and b >= 0xc4 and b <= 0xc6) then return nil end
  local n = 0
  for k = 1, width do
    local x = string.byte(s, p + k)
    if not x then return nil end
    n = n * 256 + x
  end
  return p + 1 + width, n
end

-- The position after the scalar at `p` (the types a state holds); nil otherwise.
local function mp_skip(s, p)
  local b = string.byte(s, p)
  if not b then return nil end
  if b <= 0x7f or b >= 0xe0 or b == 0xc0 or b == 0xc2 or b == 0xc3 then return p + 1 end
  if mp_fixed[b] then return p + 1 + mp_fixed[b] end
  local start, len = mp_bytes(s, p, true)
  if start then return start + len end
  return nil
end

-- Whether `s` (a stored state, or false when there is none) is SUCCESS or FAILURE.
-- Bytes that do not read as a state count as not final.
local function is_final(s)
  if not s then return false end
  local b = string.byte(s, 1)
  local n, p
  if b and b >= 0x80 and b <= 0x8f then
    n, p = b - 0x80, 2
  elseif b == 0xde and #s >= 3 then
    n, p = string.byte(s, 2) * 256 + string.byte(s, 3), 4
  else
    return false
  end
  for _ = 1, n do
    local ks, kl = mp_bytes(s, p, false)
    if not ks then return false end
    p = ks + kl
    if kl == 5 and string.sub(s, ks, p - 1) == 'state' then
      local vs, vl = mp_bytes(s, p, false)
      if not vs then return false end
      local v = string.sub(s, vs, vs + vl - 1)
      return v == 'SUCCESS' or v == 'FAILURE'
    end
    p = mp_skip(s, p)
    if not p then return false end
  end
  return false
end

-- Writes a non-final state (PENDING, RECEIVED, STARTED, RETRY) unless the task's
-- stored state is final: a final state is never replaced by a non-final one. No TTL: a
-- task waiting in a backlog or running keeps its state; the TTL starts with the final
-- state.
local function store_open(key, bytes)
  if not is_final(redis.call('GET', key)) then
    redis.call('SET', key, bytes)
  end
end
