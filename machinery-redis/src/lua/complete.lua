-- Finished deliveries, each settled atomically and fenced by its lease:
-- ARGV: prefix, ttl_ms (0 = keep), n, then per delivery:
--       queue, id, token,
--       n_states, (uuid, terminal 0/1, state bytes) * n_states,
--       n_publish, (queue, eta, priority, payload) * n_publish,
--       chord group ('' = none), index, success 0/1, result, name, error.
-- Returns one flag per delivery: 0 when its lease was lost (nothing written), else 1.
local prefix, ttl = ARGV[1], tonumber(ARGV[2])
local now = now_ms()
local woken = {}
local out = {}
local i = 4

local function settle()
  local queue, id, token = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  i = i + 3
  local held = holds(prefix, queue, id, token)
  local n = tonumber(ARGV[i]); i = i + 1
  for _ = 1, n do
    if held then
      local key = prefix .. ':state:' .. ARGV[i]
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
    local q = ARGV[i]
    if held then
      -- A delayed message (a retry) wakes blocked workers too, to re-plan their wake-up.
      enqueue(prefix, q, tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], now)
    end
    if held and not woken[q] then
      woken[q] = true
      wake(prefix, q)
    end
    i = i + 4
  end
  local group, index, success, result, name, err = ARGV[i], ARGV[i + 1], ARGV[i + 2], ARGV[i + 3], ARGV[i + 4], ARGV[i + 5]
  i = i + 6
  if not held then return 0 end
  if group ~= '' and chord_member(prefix, ttl, group, index, success, result, name, err) then
    local ck = prefix .. ':chord:' .. group
    local q = redis.call('HGET', ck, 'queue')
    local prio = redis.call('HGET', ck, 'priority')
    enqueue(prefix, q, 0, prio, redis.call('HGET', ck, 'callback'), now)
    wake(prefix, q)
  end
  forget(prefix, queue, id)
  return 1
end

for k = 1, tonumber(ARGV[3]) do
  out[k] = settle()
end
return out
