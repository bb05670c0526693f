-- KEYS[1]: the queue's ready set. ARGV: prefix, queue, then (eta_ms, priority, payload)
-- per message. One INCRBY reserves the ids, then one HSET stores every payload and one
-- ZADD queues every ready id (one more for delayed ids): a few commands per call
-- instead of a few per message.
local prefix, queue = ARGV[1], ARGV[2]
local now = now_ms()
local n = (#ARGV - 2) / 3
local last = redis.call('INCRBY', qkey(prefix, queue, 'seq'), n)
local first = last - n + 1
-- Lua formats a number with sprintf and parses one with strtod: per message, the
-- sequence is formatted once and the ready score is put together from strings (the
-- digit 9 - priority, then the sequence in 13 digits: `ready_score`, spelled out).
local lead = {['0'] = '9', ['1'] = '8', ['2'] = '7', ['3'] = '6', ['4'] = '5',
              ['5'] = '4', ['6'] = '3', ['7'] = '2', ['8'] = '1', ['9'] = '0'}
local msgs, ready, delayed = {}, {}, {}
for k = 0, n - 1 do
  local i = 3 + 3 * k
  local seq = tostring(first + k)
  local priority = ARGV[i + 1]
  local id = priority .. ':' .. seq
  msgs[#msgs + 1] = id
  msgs[#msgs + 1] = ARGV[i + 2]
  local eta = ARGV[i]
  if eta ~= '0' and tonumber(eta) > now then
    delayed[#delayed + 1] = eta
    delayed[#delayed + 1] = id
  else
    local digit = lead[priority]
    if digit and #seq <= 13 then
      ready[#ready + 1] = digit .. string.rep('0', 13 - #seq) .. seq
    else
      ready[#ready + 1] = ready_score(tonumber(priority) or 0, first + k)
    end
    ready[#ready + 1] = id
  end
end
redis.call('HSET', qkey(prefix, queue, 'msg'), unpack(msgs))
if #ready > 0 then
  redis.call('ZADD', qkey(prefix, queue, 'ready'), unpack(ready))
end
if #delayed > 0 then
  redis.call('ZADD', qkey(prefix, queue, 'delayed'), unpack(delayed))
end
return 1
