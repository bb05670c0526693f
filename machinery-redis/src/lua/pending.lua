-- Lists the messages of one queue that are ready, in the order fetch takes them.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: none (`PendingArgs` in scripts.rs).
-- Reply: the payloads, next first.
-- A delayed message whose ETA has passed is ready: the next fetch promotes it to its
-- place by priority and age (`id_score`), where it is listed. Read only.
local q = queue_keys()
local ids = redis.call('ZRANGE', q.ready, 0, -1, 'WITHSCORES')
local due = redis.call('ZRANGEBYSCORE', q.delayed, '-inf', now_ms())
local order = {}
if #due == 0 then
  for i = 1, #ids, 2 do order[#order + 1] = ids[i] end
else
  -- The ready ids are in order: the due ones, sorted, are merged in at their place (a
  -- ready id before a due one of the same score, as ZADD would place them).
  local later = {}
  for k, id in ipairs(due) do later[k] = {tonumber(id_score(id)), k, id} end
  table.sort(later, function(x, y)
    if x[1] ~= y[1] then return x[1] < y[1] end
    return x[2] < y[2]
  end)
  local j = 1
  for i = 1, #ids, 2 do
    local score = tonumber(ids[i + 1])
    while later[j] and later[j][1] < score do
      order[#order + 1] = later[j][3]
      j = j + 1
    end
    order[#order + 1] = ids[i]
  end
  for k = j, #later do order[#order + 1] = later[k][3] end
end
-- Payloads in chunks (Lua's unpack has a stack limit); a vanished one is left out.
local out = {}
for i = 1, #order, 1000 do
  local payloads = redis.call('HMGET', q.msg, unpack(order, i, math.min(i + 999, #order)))
  for k = 1, #payloads do
    if payloads[k] then out[#out + 1] = payloads[k] end
  end
end
return out
