-- One page of a sorted set of one queue (ready, delayed, in flight or failed), after a
-- cursor: keyset pagination, so a page costs the same wherever it starts and members
-- consumed before the cursor move nothing.
-- KEYS: the queue's keys (`queue_keys`, 8), then the listed set.
-- ARGV: order ('asc': lowest score first, 'desc': highest first), after ('1' when a
--       cursor follows, else '0'), the cursor's score and member, limit, payloads ('1':
--       the members are message ids, or receipts '<id>/<token>', whose payloads and
--       counts are read) (`PageArgs` in scripts.rs).
-- Reply: {1 when more members follow this page else 0,
--         member, score, payload or nil, count or nil, ...}, in listing order.
-- The order is Redis's: by score, then by member bytes (memcmp). The cursor's place is
-- found by counting: the members of lower score (ZCOUNT), then, among the members of
-- the cursor's score, by binary search on rank (ZRANGE one rank at a time): O(log n)
-- commands, however many members share that score. The member '~' of the in-flight set
-- (score +inf, `fetch.lua`) is never listed.
local q = queue_keys()
local set = KEYS[QUEUE_KEY_COUNT + 1]
local desc, after = ARGV[1] == 'desc', ARGV[2] == '1'
local score, member = ARGV[3], ARGV[4]
local limit = tonumber(ARGV[5])
local with_payloads = ARGV[6] == '1'

-- a < b as Redis orders members: bytewise, a prefix first. Lua's `<` on strings
-- follows the server's locale (strcoll), which may differ.
local function bytes_before(a, b)
  for i = 1, math.min(#a, #b) do
    local x, y = string.byte(a, i), string.byte(b, i)
    if x ~= y then return x < y end
  end
  return #a < #b
end

-- How many members come before the cursor in ascending order; with `inclusive`, the
-- cursor's own member (if still there) counts too.
local function rank_of_cursor(inclusive)
  local lo = redis.call('ZCOUNT', set, '-inf', '(' .. score)
  local hi = lo + redis.call('ZCOUNT', set, score, score)
  while lo < hi do
    local mid = math.floor((lo + hi) / 2)
    local m = redis.call('ZRANGE', set, mid, mid)[1]
    local goes_after
    if inclusive then goes_after = bytes_before(member, m) else goes_after = not bytes_before(m, member) end
    if goes_after then hi = mid else lo = mid + 1 end
  end
  return lo
end

-- One more than the page, to know whether another follows.
local want = limit + 1
local rows
if desc then
  local stop = redis.call('ZCARD', set)
  if after then stop = rank_of_cursor(false) end
  local start = math.max(stop - want, 0)
  rows = {}
  if stop > 0 then
    local asc = redis.call('ZRANGE', set, start, stop - 1, 'WITHSCORES')
    for i = #asc - 1, 1, -2 do
      rows[#rows + 1] = asc[i]
      rows[#rows + 1] = asc[i + 1]
    end
  end
else
  local start = 0
  if after then start = rank_of_cursor(true) end
  rows = redis.call('ZRANGE', set, start, start + want - 1, 'WITHSCORES')
end

local members, scores = {}, {}
for i = 1, #rows, 2 do
  if rows[i] ~= '~' then
    members[#members + 1] = rows[i]
    scores[#scores + 1] = rows[i + 1]
  end
end
local more = 0
if #members > limit then
  more = 1
  members[#members] = nil
  scores[#scores] = nil
end

local out = {more}
if #members == 0 then return out end
local payloads, counts = {}, {}
if with_payloads then
  local ids = {}
  -- Receipts name their message before the '/'; other members are message ids.
  local receipts = set == q.inflight
  for k, m in ipairs(members) do
    if receipts then ids[k] = member_id(m) else ids[k] = m end
  end
  payloads = redis.call('HMGET', q.msg, unpack(ids))
  if redis.call('EXISTS', q.count) == 1 then
    counts = redis.call('HMGET', q.count, unpack(ids))
  end
end
for k = 1, #members do
  out[#out + 1] = members[k]
  out[#out + 1] = scores[k]
  out[#out + 1] = payloads[k] or false
  out[#out + 1] = counts[k] or false
end
return out
