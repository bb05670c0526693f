-- Looks for the dead letter of one task (by UUID) in one queue, a stretch of the list
-- at a time; optionally deletes it, or moves it back into the queue.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: action ('find', 'delete' or 'requeue'), the index to start at, budget (entries
--       to look at in this call), needle (as in `find.lua`) (`DeadOneArgs` in
--       scripts.rs).
-- Reply: {next index (-1: the list was walked to its end), index or -1, entry or nil}:
--        the first match's index and entry (`dead_entry`); for 'delete' and 'requeue'
--        the match is gone from the list (requeued: ready at once, priority 0, a new id,
--        so no delivery is counted, as `requeue.lua` does).
local q = queue_keys()
local action, start, budget, needle = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3]), ARGV[4]
local entries = redis.call('LRANGE', q.dead, start, start + budget - 1)
for k, entry in ipairs(entries) do
  local len = string.match(entry, '^(%d+):')
  if len then
    -- The payload's first byte, after '<len>:<reason>'.
    local p = #len + 2 + tonumber(len)
    if string.sub(entry, p + 2, p + 1 + #needle) == needle
        or string.sub(entry, p + 4, p + 3 + #needle) == needle then
      if action == 'delete' or action == 'requeue' then
        redis.call('LREM', q.dead, 1, entry)
      end
      if action == 'requeue' then
        enqueue(q, 0, 0, string.sub(entry, p), now_ms())
      end
      return {-1, start + k - 1, entry}
    end
  end
end
if #entries < budget then return {-1, -1, false} end
return {start + #entries, -1, false}
