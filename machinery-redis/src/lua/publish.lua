-- ARGV: prefix, then (queue, eta_ms, priority, payload) per message.
local prefix = ARGV[1]
local now = now_ms()
local woken = {}
for i = 2, #ARGV, 4 do
  local queue = ARGV[i]
  -- A delayed message wakes blocked workers too, so they re-plan their next wake-up.
  enqueue(prefix, queue, tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3], now)
  if not woken[queue] then
    woken[queue] = true
    wake(prefix, queue)
  end
end
return 1
