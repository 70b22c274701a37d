-- Raise the scheduler fence to a newly elected leader's epoch; never lower it.
-- Every fenced transition compares its caller's epoch with this key, so from the moment this
-- runs, a deposed leader that wakes up and writes with its older epoch is rejected.
-- KEYS: 1 fence   ARGV: 1 epoch
-- Returns {1, fence} if the fence is now this epoch, {0, fence} if a newer one is already set.
local cur = tonumber(redis.call('GET', KEYS[1]) or '0')
local epoch = tonumber(ARGV[1])
if epoch >= cur then
  redis.call('SET', KEYS[1], ARGV[1])
  return {1, ARGV[1]}
end
return {0, redis.call('GET', KEYS[1])}
