-- Finished deliveries of one queue, each settled atomically and fenced by its lease.
-- KEYS[1]: the queue's ready set.
-- ARGV: prefix, queue, ttl_ms (0 = keep), n, then per delivery:
--       id, token,
--       n_states, (uuid, terminal 0/1, state bytes) * n_states,
--       n_publish, (eta, priority, payload) * n_publish,
--       chord group ('' = none), index, success 0/1, result, name, error.
-- Every state, message and chord here belongs to this queue; the client does the work
-- of a delivery that concerns other queues before calling this.
-- Returns one flag per delivery: 0 when its lease was lost (nothing written), else 1.
-- The client wakes the queue's blocked workers after a call that queued anything.
local prefix, queue, ttl = ARGV[1], ARGV[2], tonumber(ARGV[3])
local now = now_ms()
local out = {}
local i = 5

local function settle()
  local id, token = ARGV[i], ARGV[i + 1]
  i = i + 2
  local held = holds(prefix, queue, id, token)
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    if held then
      local key = qkey(prefix, queue, 'state:' .. ARGV[i])
      if ttl > 0 then
        redis.call('SET', key, ARGV[i + 2], 'PX', ttl)
      else
        redis.call('SET', key, ARGV[i + 2])
      end
      if ARGV[i + 1] == '1' then
        redis.call('PUBLISH', prefix .. ':done:' .. ARGV[i], ARGV[i + 2])
      end
    end
    i = i + 3
  end
  n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    if held then
      enqueue(prefix, queue, tonumber(ARGV[i]), ARGV[i + 1], ARGV[i + 2], now)
    end
    i = i + 3
  end
  local group, index, success, result, name, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  if not held then return 0 end
  if group ~= '' and chord_member(prefix, ttl, queue, group, index, success, result, name, err) then
    enqueue_callback(prefix, queue, group, now)
  end
  forget(prefix, queue, id)
  return 1
end

for k = 1, tonumber(ARGV[4]) do
  out[k] = settle()
end
return out
