-- Move a message that cannot be run to the capped dead-letter list, with its reason.
-- One script: the message leaves the list it was taken onto and lands in the dead-letter list
-- together, or not at all; the list is trimmed to its cap and what the trim dropped is counted
-- in the same step, so `dropped` is exact whatever runs concurrently.
-- KEYS: 1 dead-letter list, 2 dead-letter stats hash, 3 list the message was taken onto (or a
--       dummy)
-- ARGV: 1 raw message, 2 dead-letter entry (JSON), 3 cap, 4 taken from a list (0/1)
-- Returns the number of entries dropped by the cap (0 or 1 for one push).
if ARGV[4] == '1' then redis.call('LREM', KEYS[3], 1, ARGV[1]) end
local length = redis.call('LPUSH', KEYS[1], ARGV[2])
local cap = tonumber(ARGV[3])
local dropped = 0
if length > cap then
  dropped = length - cap
  -- Newest first (LPUSH): the oldest entries, at the tail, are the ones dropped.
  redis.call('LTRIM', KEYS[1], 0, cap - 1)
  redis.call('HINCRBY', KEYS[2], 'dropped', dropped)
end
return dropped
