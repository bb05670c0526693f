-- Looks for the message of one task (by UUID) in one queue, a stretch of its payload
-- hash at a time; optionally deletes it when it is ready or delayed.
-- KEYS: the queue's keys (`queue_keys`, 8).
-- ARGV: HSCAN cursor ('0' to start), budget (fields to look at in this call), needle
--       (the envelope's first field as `RawSignature::encode` writes it: the key
--       `uuid`, then the UUID as a 16-byte `bin`), delete ('1': delete the first match
--       that is ready or delayed, and stop) (`FindArgs` in scripts.rs).
-- Reply: {next HSCAN cursor ('0': the hash was walked to its end),
--         id, payload, where, score or nil, count or nil, ...} per match, where `where`
--         is 'ready', 'delayed' (score: ETA), 'inflight' (score: lease deadline),
--         'deleted' (it was ready or delayed) or 'none' (in no set: a message being
--         settled by another client's command).
-- The UUID is the envelope's first field, so a match is a comparison of the bytes after
-- the version byte and the map's header (1 byte, or 3 for a map of 16 fields or more):
-- no decoding. The walk is HSCAN's: a message there for the whole walk is met at least
-- once; the caller checks the match by decoding the payload.
local q = queue_keys()
local cursor, budget, needle = ARGV[1], tonumber(ARGV[2]), ARGV[3]
local delete = ARGV[4] == '1'
local last = 2 + #needle
local out = {}

local function where(id)
  local s = redis.call('ZSCORE', q.ready, id)
  if s then return 'ready', false end
  s = redis.call('ZSCORE', q.delayed, id)
  if s then return 'delayed', s end
  -- The receipt is '<id>/<token>': found by pattern, in an in-flight set a worker's
  -- prefetch in size (ids are '<digit>:<digits>', nothing a pattern treats as special).
  local c = '0'
  repeat
    local r = redis.call('ZSCAN', q.inflight, c, 'MATCH', id .. '/*', 'COUNT', 1000)
    c = r[1]
    if r[2][1] then return 'inflight', r[2][2] end
  until c == '0'
  return 'none', false
end

local seen = 0
repeat
  local r = redis.call('HSCAN', q.msg, cursor, 'COUNT', 1000)
  cursor = r[1]
  local fields = r[2]
  for i = 1, #fields, 2 do
    local v = fields[i + 1]
    if string.sub(v, 3, last) == needle or string.sub(v, 5, last + 2) == needle then
      local id = fields[i]
      local place, score = where(id)
      if delete and (place == 'ready' or place == 'delayed') then
        redis.call('ZREM', q[place], id)
        redis.call('HDEL', q.msg, id)
        redis.call('HDEL', q.count, id)
        out[#out + 1] = id
        out[#out + 1] = v
        out[#out + 1] = 'deleted'
        out[#out + 1] = score
        out[#out + 1] = false
        table.insert(out, 1, cursor)
        return out
      end
      out[#out + 1] = id
      out[#out + 1] = v
      out[#out + 1] = place
      out[#out + 1] = score
      out[#out + 1] = redis.call('HGET', q.count, id)
    end
  end
  seen = seen + #fields / 2
until cursor == '0' or seen >= budget
table.insert(out, 1, cursor)
return out
