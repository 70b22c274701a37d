-- Create a task and enqueue it, or return the task an earlier submit with the same requestId
-- created. One script, so a crash can never leave a task stored but not queued (or queued
-- twice).
-- KEYS: 1 task, 2 history, 3 queue, 4 index, 5 request key (or a dummy)
-- ARGV: 1 taskId, 2 hash fields JSON, 3 queue message, 4 now, 5 actor, 6 has request id (0/1)
if ARGV[6] == '1' then
  local existing = redis.call('GET', KEYS[5])
  if existing then return {existing, 0} end
  redis.call('SET', KEYS[5], ARGV[1])
end
create_task(KEYS[1], KEYS[2], KEYS[4], ARGV[1], ARGV[2], ARGV[4], ARGV[5], '')
redis.call('LPUSH', KEYS[3], ARGV[3])
return {ARGV[1], 1}
