-- Moves up to `max` dead letters of one queue back into it (ready at once, priority 0),
-- atomically: an entry is never both dead and queued, nor lost in between.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: max (`RequeueArgs` in scripts.rs).
-- Reply: how many were moved.
-- Entries are `dead_entry`s; an unreadable one is requeued whole.
local q = queue_keys()
local entries = redis.call('LPOP', q.dead, tonumber(ARGV[1]))
if not entries then return 0 end
local now = now_ms()
for _, entry in ipairs(entries) do
  local len = string.match(entry, '^(%d+):')
  local payload = entry
  if len then
    local start = #len + 2 + tonumber(len)
    if start <= #entry + 1 then payload = string.sub(entry, start) end
  end
  enqueue(q, 0, 0, payload, now)
end
return #entries
