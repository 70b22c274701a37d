-- Stage 3: append a task's output lines read from task-logs-topic, each exactly once.
-- Lines carry (attempt, seq); the highest seq appended per attempt is kept next to the log,
-- so a redelivered line (the manager crashed before its offset was committed) is skipped, and
-- the lines of an attempt that is no longer current (a zombie agent still printing after a
-- failover) are dropped, as its reports are.
-- KEYS: 1 task, 2 logs list, 3 cursor hash (attempt -> last seq), 4 event stats
-- ARGV: 1 attempt, 2 JSON [[seq, line], ...] in seq order
-- Counted here, in the same script, so the counts stay exact across a crash and redelivery.
-- Returns {appended, skipped} or {-1, 0} if the task does not exist, {-2, current attempt}
-- if the attempt is stale.
local cur = redis.call('HGET', KEYS[1], 'attempt')
if not cur then return {-1, 0} end
local lines = cjson.decode(ARGV[2])
if tonumber(cur) ~= tonumber(ARGV[1]) then
  redis.call('HINCRBY', KEYS[4], 'log_stale', #lines)
  return {-2, tonumber(cur)}
end
local last = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
local appended, skipped = 0, 0
for _, pair in ipairs(lines) do
  local seq = tonumber(pair[1])
  if seq > last then
    redis.call('RPUSH', KEYS[2], pair[2])
    last = seq
    appended = appended + 1
  else
    skipped = skipped + 1
  end
end
redis.call('HSET', KEYS[3], ARGV[1], last)
if appended > 0 then redis.call('HINCRBY', KEYS[4], 'log_appended', appended) end
if skipped > 0 then redis.call('HINCRBY', KEYS[4], 'log_duplicate', skipped) end
return {appended, skipped}
