-- Shared by every script. Every key a script touches arrives in KEYS, built by the
-- script's encoder in scripts.rs from keys.rs (the one key table): no script builds a
-- key name. Every key of one call lives in one Redis Cluster slot (one hash tag per
-- queue); work on other queues is done by the client, one script call per queue.
-- Wake-up tokens for blocked workers live in another slot (one for all queues, so a
-- worker can block on several queues in one command): the client pushes them after a
-- script queued something.

-- The keys of one queue, KEYS[1] to KEYS[8] of every queue script, in the order of
-- `QUEUE_KEYS` in keys.rs (a unit test compares the two).
local function queue_keys()
  return {ready = KEYS[1], delayed = KEYS[2], inflight = KEYS[3], msg = KEYS[4],
          count = KEYS[5], seq = KEYS[6], lease_seq = KEYS[7], dead = KEYS[8]}
end
local QUEUE_KEY_COUNT = 8

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end

-- The ready-score rule, the only one: message ids are '<priority>:<sequence>', and the
-- ready set is ordered by priority (higher first), then by sequence (older first), with
-- the score (9 - priority) * 1e13 + sequence. The lowest ranks are the next messages,
-- and a message that comes back (expired lease, release) gets its old place again.
-- Lua formats a number with sprintf and parses one with strtod: the score is put
-- together from strings (the digit 9 - priority, then the sequence in 13 digits), and
-- only computed as a number when it does not fit that form.
local lead = {['0'] = '9', ['1'] = '8', ['2'] = '7', ['3'] = '6', ['4'] = '5',
              ['5'] = '4', ['6'] = '3', ['7'] = '2', ['8'] = '1', ['9'] = '0'}
local function ready_score(priority, seq)
  local digit = lead[priority]
  if digit and #seq <= 13 then
    return digit .. string.rep('0', 13 - #seq) .. seq
  end
  return (9 - (tonumber(priority) or 0)) * 1e13 + tonumber(seq)
end

-- The ready-set score of a message id; an id that is not ours (pushed by something
-- else) is first of the lowest priority, and fetch gives it a proper id.
local function id_score(id)
  local priority, seq = string.match(id, '^(%d):(%d+)$')
  if priority then
    return ready_score(priority, seq)
  end
  return ready_score('0', '0')
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
local function push_ready_all(q, ids)
  if #ids == 0 then return end
  local pairs_ = {}
  for _, id in ipairs(ids) do
    pairs_[#pairs_ + 1] = id_score(id)
    pairs_[#pairs_ + 1] = id
  end
  bulk('ZADD', q.ready, pairs_, 2)
end

local function push_ready(q, id)
  redis.call('ZADD', q.ready, id_score(id), id)
end

-- Stores and queues one message; returns 1 when it is ready now, 0 when delayed.
local function enqueue(q, eta, priority, payload, now)
  local id = priority .. ':' .. redis.call('INCR', q.seq)
  redis.call('HSET', q.msg, id, payload)
  if eta > now then
    redis.call('ZADD', q.delayed, eta, id)
    return 0
  end
  push_ready(q, id)
  return 1
end

-- A delivery is held while '<id>/<token>' (its receipt) is a member of the queue's
-- in-flight set, scored by its lease deadline: the lease check is one lookup in a set
-- Redis indexes by member, whatever its size (a hash of leases is a listpack, searched
-- end to end, up to `hash-max-listpack-entries`, and a batch in flight is that big).
-- The client passes receipts as it got them from fetch.
local function lease_member(id, token)
  return id .. '/' .. token
end

local function member_id(member)
  return string.match(member, '^(.*)/[^/]*$') or member
end

-- The lease check of every settling step: the delivery must still be in flight.
local function holds(q, member)
  return redis.call('ZSCORE', q.inflight, member) ~= false
end

-- Drops everything kept for the settled messages `ids`, in flight as `members`.
local function forget_all(q, ids, members)
  if #ids == 0 then return end
  bulk('ZREM', q.inflight, members, 1)
  bulk('HDEL', q.msg, ids, 1)
  -- Only a message delivered before has a count; usually no message has one.
  if redis.call('EXISTS', q.count) == 1 then
    bulk('HDEL', q.count, ids, 1)
  end
end

local function forget(q, id, member)
  forget_all(q, {id}, {member})
end

-- A dead-letter entry: '<reason length>:<reason><payload>', read back by `parse_dead`
-- in broker/reply.rs and by requeue.lua.
local function dead_entry(reason, payload)
  return #reason .. ':' .. reason .. payload
end

-- Records a chord member's final state in the chord's hash `ck` and its results hash
-- `rk`; returns true when this call completes the chord (last success, or first
-- failure) and must publish the callback: exactly once, nil for an unknown chord. A
-- REVOKED member comes as a failure (`success` '0'; scripts.rs's `MemberArgs`), its
-- error text the reason, and fails the chord like one.
-- The chord is kept under the queue of its callback, which it publishes into. It has no
-- TTL until its callback's state is final (`chord_finished`), however long its members
-- take.
local function chord_member(ck, rk, index, success, result, name, err)
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
local function chord_finished(ck, rk, ttl)
  if ttl <= 0 then return end
  redis.call('PEXPIRE', ck, ttl)
  redis.call('PEXPIRE', rk, ttl)
end

-- Queues a fired chord's callback (kept in the chord's hash `ck`) into queue `q`.
local function enqueue_callback(q, ck, now)
  enqueue(q, 0, redis.call('HGET', ck, 'priority'), redis.call('HGET', ck, 'callback'), now)
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

-- The `state` field of `s` (a stored state, or false when there is none): 'PENDING',
-- 'SUCCESS', …; nil when there is none or the bytes do not read as a state.
local function state_of(s)
  if not s then return nil end
  local b = string.byte(s, 1)
  local n, p
  if b and b >= 0x80 and b <= 0x8f then
    n, p = b - 0x80, 2
  elseif b == 0xde and #s >= 3 then
    n, p = string.byte(s, 2) * 256 + string.byte(s, 3), 4
  else
    return nil
  end
  for _ = 1, n do
    local ks, kl = mp_bytes(s, p, false)
    if not ks then return nil end
    p = ks + kl
    if kl == 5 and string.sub(s, ks, p - 1) == 'state' then
      local vs, vl = mp_bytes(s, p, false)
      if not vs then return nil end
      return string.sub(s, vs, vs + vl - 1)
    end
    p = mp_skip(s, p)
    if not p then return nil end
  end
  return nil
end

local final_states = {SUCCESS = true, FAILURE = true, REVOKED = true}

-- Whether `s` (a stored state, or false) is final: SUCCESS, FAILURE or REVOKED. Bytes
-- that do not read as a state count as not final.
local function is_final(s)
  local v = state_of(s)
  return v ~= nil and final_states[v] == true
end

-- Whether `s` (a stored state, or false) is REVOKED: only a new send (a plain SET of
-- its PENDING state) replaces it; no completion, retry or other write does. A state
-- without the bytes of `state: "REVOKED"` anywhere is not (one plain search in C, the
-- common case on the completion path); one with them is walked, as the bytes may
-- also be inside a UUID or an argument.
local REVOKED_BYTES = '\165state\167REVOKED'
local function is_revoked(s)
  if not s or not string.find(s, REVOKED_BYTES, 1, true) then return false end
  return state_of(s) == 'REVOKED'
end

-- Writes a non-final state (PENDING, RECEIVED, STARTED, RETRY) unless the task's
-- stored state is final (SUCCESS, FAILURE, REVOKED): a final state is never replaced
-- by a non-final one. No TTL: a task waiting in a backlog or running keeps its state;
-- the TTL starts with the final state.
local function store_open(key, bytes)
  if not is_final(redis.call('GET', key)) then
    redis.call('SET', key, bytes)
  end
end

-- Writes a final state with the results TTL (`ttl`, ms; 0 = kept), unless `guarded`
-- and the stored state is REVOKED (a SUCCESS or FAILURE never replaces a REVOKED
-- state; a REVOKED state is written unguarded). Returns whether it was written: only
-- then is it published.
local function store_final(key, bytes, ttl, ttl_ms, guarded)
  if guarded and is_revoked(redis.call('GET', key)) then
    return false
  end
  if ttl > 0 then
    redis.call('SET', key, bytes, 'PX', ttl_ms)
  else
    redis.call('SET', key, bytes)
  end
  return true
end

-- Revocations: the set `rk` (task UUID, scored by when the revocation ends, ms; +inf
-- for never) and the hash `hk` of their reasons, in one slot. Drops up to 1,000 that
-- ended by `now` (readers skip the rest by score; the next call drops more).
local function trim_revocations(rk, hk, now)
  local ended = redis.call('ZRANGEBYSCORE', rk, '-inf', now, 'LIMIT', 0, 1000)
  if #ended == 0 then return end
  redis.call('ZREM', rk, unpack(ended))
  redis.call('HDEL', hk, unpack(ended))
end
