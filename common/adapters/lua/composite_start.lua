-- The coordinator's first tick of a composite: its parent PENDING -> RUNNING, fenced.
-- KEYS: 1 parent task, 2 parent history, 3 stats, 4 fence
-- ARGV: 1 epoch, 2 actor, 3 now
-- Returns {accepted, reason, count}: {1, 'ok', 1} started; {1, 'ok', 0} already RUNNING.
local epoch = tonumber(ARGV[1])
if stale_epoch(KEYS[4], KEYS[3], epoch) then return {0, 'stale_epoch', 0} end
local cur = redis.call('HMGET', KEYS[1], 'status', 'attempt', 'taskType')
if not cur[1] or cur[3] ~= 'COMPOSITE' then return {0, 'missing', 0} end
if cur[1] == 'RUNNING' then return {1, 'ok', 0} end
if is_final(cur[1]) then return {0, 'parent_final', 0} end
local r = transition(KEYS[1], KEYS[2], KEYS[3], KEYS[4], 'RUNNING', tonumber(cur[2]) or 1,
                     epoch, ARGV[2], ARGV[3], {}, {}, '')
if r[1] == 1 then return {1, 'ok', 1} end
return {0, r[2], 0}
