-- Finished deliveries of one queue, each settled atomically and fenced by its lease.
-- Encoded by `CompleteArgs` in scripts.rs and read by `decode` below, in sections
-- (each section's records back to back, in delivery order; the counts say where each
-- section starts):
-- KEYS: the queue's keys (`queue_keys`, 8),
--       then the key of each state (S),
--       then (chord hash, chord results) of each chord member (C),
--       then (chord hash, chord results) of each chord this delivery ends (E).
-- ARGV: ttl_ms (0 = keep), publish_only_to_subscribers 0/1, n, S, P, C,
--       then per delivery (9 fields): id, receipt ('<id>/<token>'),
--         dead ('' = acknowledge, '1' = dead-letter), dead-letter reason,
--         states (how many), publish (how many), chord ('' or '1': a member),
--         ends ('' or '1': ends a chord, the group of the chord whose callback this
--         task is),
--         check ('' or '1': the delivery's first state is the task's own and not
--         REVOKED: the completion is refused when the stored state is REVOKED),
--       then per state (3): done channel ('' = not final), guard ('' or '1': a final
--         state that must not replace a REVOKED one), state bytes,
--       then per message (3): eta ms, priority, payload,
--       then per chord member (5): index, success 0/1, result, name, error.
--       then, last, the unique locks to release (`UniqueTail` in scripts.rs; at the
--       end of KEYS and ARGV so that the sections above keep their places):
--       KEYS: the U lock keys, last; ARGV: per lock (2): delivery number (1-based),
--       task UUID; then U, the very last argument.
-- Reply: one entry per delivery: 0 when its lease was lost, 1 when it was settled, or
-- the stored REVOKED state (a string) when it was refused (the task was revoked while
-- it ran); nothing of a lost or refused delivery is written, published or acknowledged
-- (a refused delivery keeps its lease: the worker settles it again, as revoked).
--
-- Every state, message and chord here belongs to this queue; the client does the work
-- of a delivery that concerns other queues before calling this.
-- A final state is written with the results TTL (plain SET: this is the hot path; the
-- task's own state was checked by `check`, another task's final state is `guard`ed
-- against replacing a REVOKED one); a non-final one (RETRY) without TTL, and only when
-- the stored state is not final (SUCCESS, FAILURE, REVOKED). A
-- dead-lettered delivery goes to the dead-letter queue (`dead_entry`) in the same step
-- as its state. 'ends' starts the results TTL of that chord (kept under this queue):
-- the client passes it only with the callback's final state.
-- The client wakes the queue's blocked workers after a call that queued anything.
--
-- Lease checks, final-state notifications and the clean-up are one command each for
-- the whole batch; only state writes and follow-up messages cost a command each.

-- Where each section starts; the records' fields are read at fixed offsets.
local DELIVERY, STATE, MESSAGE, MEMBER = 9, 3, 3, 5
local function decode()
  local n, s, p, c = tonumber(ARGV[3]), tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
  local a = {ttl_ms = ARGV[1], only_subscribed = ARGV[2] == '1', n = n}
  a.ttl = tonumber(a.ttl_ms)
  a.delivery = 7
  a.state = a.delivery + DELIVERY * n
  a.message = a.state + STATE * s
  a.member = a.message + MESSAGE * p
  a.state_key = QUEUE_KEY_COUNT + 1
  a.member_key = a.state_key + s
  a.ends_key = a.member_key + 2 * c
  return a
end

local q = queue_keys()
local a = decode()
local n, ttl, ttl_ms = a.n, a.ttl, a.ttl_ms
local now = now_ms()
-- Small counts without strtod (tonumber).
local small = {['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 3}
local function count(s)
  return small[s] or tonumber(s)
end

-- Every lease check at once.
local members = {}
for k = 1, n do
  members[k] = ARGV[a.delivery + DELIVERY * (k - 1) + 1]
end
local current = {}
if n > 0 then
  current = redis.call('ZMSCORE', q.inflight, unpack(members))
end

local out, settled, settled_members, channels, finals = {}, {}, {}, {}, {}
local si, sk, mi, ci, ck, ek = a.state, a.state_key, a.message, a.member, a.member_key, a.ends_key
for k = 1, n do
  local d = a.delivery + DELIVERY * (k - 1)
  local id, dead, reason = ARGV[d], ARGV[d + 2], ARGV[d + 3]
  local states, messages = count(ARGV[d + 4]), count(ARGV[d + 5])
  local member, ends = ARGV[d + 6] == '1', ARGV[d + 7] == '1'
  local held = current[k] ~= false
  -- Revoked while it ran: refused, the stored REVOKED state returned.
  local refused = false
  if held and ARGV[d + 8] == '1' then
    local stored = redis.call('GET', KEYS[sk])
    if is_revoked(stored) then refused = stored end
  end
  if held and not refused then
    for _ = 1, states do
      local key, channel, bytes = KEYS[sk], ARGV[si], ARGV[si + 2]
      if channel ~= '' then
        if store_final(key, bytes, ttl, ttl_ms, ARGV[si + 1] == '1') then
          channels[#channels + 1] = channel
          finals[#finals + 1] = bytes
        end
      else
        store_open(key, bytes)
      end
      sk, si = sk + 1, si + STATE
    end
    for _ = 1, messages do
      enqueue(q, tonumber(ARGV[mi]), ARGV[mi + 1], ARGV[mi + 2], now)
      mi = mi + MESSAGE
    end
    if member then
      if chord_member(KEYS[ck], KEYS[ck + 1], ARGV[ci], ARGV[ci + 1], ARGV[ci + 2], ARGV[ci + 3], ARGV[ci + 4]) then
        enqueue_callback(q, KEYS[ck], now)
      end
    end
    if ends then
      chord_finished(KEYS[ek], KEYS[ek + 1], ttl)
    end
    if dead == '1' then
      -- Read before the clean-up below drops the payload.
      local payload = redis.call('HGET', q.msg, id) or ''
      redis.call('RPUSH', q.dead, dead_entry(reason, payload))
    end
    settled[#settled + 1] = id
    settled_members[#settled_members + 1] = members[k]
    out[k] = 1
  else
    out[k] = refused or 0
    sk, si = sk + states, si + STATE * states
    mi = mi + MESSAGE * messages
  end
  if member then ck, ci = ck + 2, ci + MEMBER end
  if ends then ek = ek + 2 end
end

-- Unique locks of the settled deliveries' final states, released if their task still
-- holds them (compare-and-delete): a lock the TTL freed and another task took is kept.
local u = tonumber(ARGV[#ARGV]) or 0
for j = 1, u do
  local at = #ARGV - 2 * (u - j + 1)
  if out[tonumber(ARGV[at])] == 1 then
    local lock = KEYS[#KEYS - u + j]
    if redis.call('GET', lock) == ARGV[at + 1] then
      redis.call('DEL', lock)
    end
  end
end

-- Waiters subscribe before they read the state, and this script is atomic: a final
-- state nobody is subscribed to yet is seen by the read.
if #channels > 0 then
  local wanted = nil
  if a.only_subscribed then
    wanted = redis.call('PUBSUB', 'NUMSUB', unpack(channels))
  end
  for k = 1, #channels do
    if not wanted or tonumber(wanted[2 * k]) > 0 then
      redis.call('PUBLISH', channels[k], finals[k])
    end
  end
end
forget_all(q, settled, settled_members)
return out
