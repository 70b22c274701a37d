-- The leader takes up to ARGV[1] messages from queue:pending onto queue:scheduling in one round
-- trip, oldest first, each by its own LMOVE: a message is on exactly one of the two lists at
-- every instant, so a leader killed after this leaves them where its successor's recovery
-- sweep looks. Nothing else changes: no task's state is read or written here.
-- KEYS: 1 queue:pending, 2 queue:scheduling   ARGV: 1 how many at most
-- Returns the messages taken, in the order taken.
local taken = {}
for _ = 1, tonumber(ARGV[1]) do
  local m = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
  if not m then break end
  taken[#taken + 1] = m
end
return taken
