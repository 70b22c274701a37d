-- Create a task and enqueue it, or return the task an earlier submit with the same requestId
-- created. One script, so a crash can never leave a task stored but not queued (or queued
-- twice), and two submits racing with one requestId cannot both create a task or both pass
-- the fingerprint check.
-- KEYS: 1 task, 2 history, 3 queue, 4 index, 5 request key (or a dummy),
--       6 request fingerprint hash (or a dummy)
-- ARGV: 1 taskId, 2 hash fields JSON, 3 queue message, 4 now, 5 actor, 6 has request id (0/1),
--       7 fingerprint of this request (common/domain/idempotency.py)
-- Returns {taskId, 1} created; {existing taskId, 0} the same request again;
-- {existing taskId, 0, 'conflict'} the key names a task created from a different request.
local verdict, existing = claim_request(KEYS[5], ARGV[6], ARGV[1], KEYS[6], ARGV[7])
if verdict == 'conflict' then return {existing, 0, 'conflict'} end
if verdict == 'duplicate' then return {existing, 0} end
create_task(KEYS[1], KEYS[2], KEYS[4], ARGV[1], ARGV[2], ARGV[4], ARGV[5], '')
redis.call('LPUSH', KEYS[3], ARGV[3])
return {ARGV[1], 1}
