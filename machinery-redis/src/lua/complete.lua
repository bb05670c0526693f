-- Finished deliveries of one queue, each settled atomically and fenced by its lease.
-- KEYS[1]: the queue's ready set.
-- ARGV: prefix, queue, ttl_ms (0 = keep), publish_only_to_subscribers 0/1, n, then per
--       delivery:
--       id, token,
--       dead ('' = acknowledge, '1' = dead-letter), dead-letter reason,
--       ends chord ('' or the group of the chord whose callback this task is),
--       n_states, (uuid, terminal 0/1, state bytes) * n_states,
--       n_publish, (eta, priority, payload) * n_publish,
--       chord group, index, success 0/1, result, name, error  (or only '': no chord).
-- Every state, message and chord here belongs to this queue; the client does the work
-- of a delivery that concerns other queues before calling this.
-- A final state is written with the results TTL (plain SET: this is the hot path); a
-- non-final one (RETRY) without TTL, and only when the stored state is not final. A
-- dead-lettered delivery goes to the dead-letter queue ('<reason length>:<reason>
-- <payload>', as settle.lua's 'dead') in the same step as its state. 'ends chord'
-- starts the results TTL of that chord (kept under this queue): the client passes it
-- only with the callback's final state.
-- Returns one flag per delivery: 0 when its lease was lost (nothing written), else 1.
-- The client wakes the queue's blocked workers after a call that queued anything.
--
-- Lease checks, final-state notifications and the clean-up are one command each for
-- the whole batch; only state writes and follow-up messages cost a command each.
local prefix, queue, ttl_ms = ARGV[1], ARGV[2], ARGV[3]
local ttl = tonumber(ttl_ms)
local only_subscribed = ARGV[4] == '1'
local n = tonumber(ARGV[5])
local now = now_ms()
-- Small counts without strtod (tonumber), key and channel heads concatenated once.
local small = {['0'] = 0, ['1'] = 1, ['2'] = 2, ['3'] = 3}
local function count(s)
  return small[s] or tonumber(s)
end
local state_key = qkey(prefix, queue, 'state:')
local done_channel = prefix .. ':done:'

-- Where each delivery's arguments start, and its lease check, for all at once.
local starts, members = {}, {}
local i = 6
for k = 1, n do
  starts[k] = i
  members[k] = lease_member(ARGV[i], ARGV[i + 1])
  i = i + 5
  i = i + 1 + 3 * count(ARGV[i])
  i = i + 1 + 3 * count(ARGV[i])
  if ARGV[i] == '' then i = i + 1 else i = i + 6 end
end
local current = {}
if n > 0 then
  current = redis.call('ZMSCORE', qkey(prefix, queue, 'inflight'), unpack(members))
end

local out, settled, settled_members, channels, finals = {}, {}, {}, {}, {}
for k = 1, n do
  i = starts[k]
  local id = ARGV[i]
  local dead, reason, ends = ARGV[i + 2], ARGV[i + 3], ARGV[i + 4]
  i = i + 5
  local held = current[k] ~= false
  local m = count(ARGV[i]); i = i + 1
  for _ = 1, m do
    if held then
      local key = state_key .. ARGV[i]
      if ARGV[i + 1] == '1' then
        if ttl > 0 then
          redis.call('SET', key, ARGV[i + 2], 'PX', ttl_ms)
        else
          redis.call('SET', key, ARGV[i + 2])
        end
        channels[#channels + 1] = done_channel .. ARGV[i]
        finals[#finals + 1] = ARGV[i + 2]
      else
        store_open(key, ARGV[i + 2])
      end
    end
    i = i + 3
  end
  m = count(ARGV[i]); i = i + 1
  for _ = 1, m do
    if held then
      enqueue(prefix, queue, tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], now)
    end
    i = i + 3
  end
  if held then
    local group = ARGV[i]
    if group ~= '' and chord_member(prefix, queue, group, ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]) then
      enqueue_callback(prefix, queue, group, now)
    end
    if ends ~= '' then
      chord_finished(prefix, queue, ends, ttl)
    end
    if dead == '1' then
      -- Read before the clean-up below drops the payload.
      local payload = redis.call('HGET', qkey(prefix, queue, 'msg'), id) or ''
      redis.call('RPUSH', qkey(prefix, queue, 'dead'), #reason .. ':' .. reason .. payload)
    end
    settled[#settled + 1] = id
    settled_members[#settled_members + 1] = members[k]
    out[k] = 1
  else
    out[k] = 0
  end
end

-- Waiters subscribe before they read the state, and this script is atomic: a final
-- state nobody is subscribed to yet is seen by the read.
if #channels > 0 then
  local wanted = nil
  if only_subscribed then
    wanted = redis.call('PUBSUB', 'NUMSUB', unpack(channels))
  end
  for k = 1, #channels do
    if not wanted or tonumber(wanted[2 * k]) > 0 then
      redis.call('PUBLISH', channels[k], finals[k])
    end
  end
end
forget_all(prefix, queue, settled, settled_members)
return out
