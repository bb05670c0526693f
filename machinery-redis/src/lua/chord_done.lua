-- Records a chord member's final state; the chord is kept under its callback's queue.
-- KEYS: the callback queue's keys (`queue_keys`, 8), the chord's hash, its results hash.
-- ARGV: index, success 0/1, result, name, error, enqueue 0/1 (`ChordDoneArgs` in
--       scripts.rs).
-- Reply: when this call fires the chord, with enqueue = 1 the callback is queued here
-- (atomically with the count) and true is returned; with 0 {callback payload,
-- priority} is returned for the caller to publish (a result backend used with another
-- broker). Otherwise (not fired, or an unknown chord) false.
local q = queue_keys()
local ck, rk = KEYS[QUEUE_KEY_COUNT + 1], KEYS[QUEUE_KEY_COUNT + 2]
local fired = chord_member(ck, rk, ARGV[1], ARGV[2], ARGV[3], ARGV[4], ARGV[5])
-- An unknown chord (ended and expired, or never registered): nothing to count toward.
if not fired then return false end
if ARGV[6] == '1' then
  enqueue_callback(q, ck, now_ms())
  return true
end
return {redis.call('HGET', ck, 'callback'), redis.call('HGET', ck, 'priority')}
