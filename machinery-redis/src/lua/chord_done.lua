-- A chord member's final state. KEYS[1]: the chord's hash (under its callback's queue).
-- ARGV: prefix, queue, group, index, success 0/1, result, name, error, enqueue 0/1.
-- When this call fires the chord: with enqueue = 1 the callback is queued here
-- (atomically with the count) and true is returned; with 0 the callback payload and
-- priority are returned for the caller to publish (a result backend used with another
-- broker). Otherwise false.
local prefix, queue, group = ARGV[1], ARGV[2], ARGV[3]
local fired = chord_member(prefix, queue, group, ARGV[4], ARGV[5], ARGV[6], ARGV[7], ARGV[8])
-- An unknown chord (ended and expired, or never registered): nothing to count toward.
if fired == nil then return false end
if not fired then return false end
if ARGV[9] == '1' then
  enqueue_callback(prefix, queue, group, now_ms())
  return true
end
local ck = qkey(prefix, queue, 'chord:' .. group)
return {redis.call('HGET', ck, 'callback'), redis.call('HGET', ck, 'priority')}
