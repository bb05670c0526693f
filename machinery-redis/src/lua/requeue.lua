-- KEYS[1]: the queue's ready set. ARGV: prefix, queue, max.
-- Moves up to `max` dead letters of `queue` back into it (ready at once, priority 0),
-- atomically: an entry is never both dead and queued, nor lost in between.
-- Entries are '<reason length>:<reason><payload>'; an unreadable one is requeued whole.
-- Returns how many were moved.
local prefix, queue, max = ARGV[1], ARGV[2], tonumber(ARGV[3])
local dead = qkey(prefix, queue, 'dead')
local entries = redis.call('LPOP', dead, max)
if not entries then return 0 end
local now = now_ms()
for _, entry in ipairs(entries) do
  local len = string.match(entry, '^(%d+):')
  local payload = entry
  if len then
    local start = #len + 2 + tonumber(len)
    if start <= #entry + 1 then payload = string.sub(entry, start) end
  end
  enqueue(prefix, queue, 0, 0, payload, now)
end
return #entries
