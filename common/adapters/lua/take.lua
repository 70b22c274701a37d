-- Stage 1 fast path: move the next message to this agent's processing list AND claim it, in
-- one round trip. Taking (BLMOVE), claiming (claim.lua) and reading the task back (HGETALL)
-- were three; a busy agent does this once per task, so it is most of its Redis time.
-- Only a message the client submitted takes this path: it carries a taskId whose hash exists,
-- so there is nothing left to validate or create. Anything else (a hand-pushed message, one a
-- stage 2 scheduler dispatched with its attempt and epoch, garbage) is only moved, and handed
-- back to Python for the full claim. An empty queue returns at once: the caller then blocks
-- in BLMOVE, which a script cannot do.
-- KEYS: 1 source list, 2 processing list, 3 stats
-- ARGV: 1 agentId, 2 now
-- Returns {0} (empty), {1, msg} (moved, claim it in Python), {2, msg, r...} (moved, not
-- claimable, dropped again), {3, msg, r..., fields} (claimed: RUNNING, owned by agentId).
local msg = redis.call('LMOVE', KEYS[1], KEYS[2], 'RIGHT', 'LEFT')
if not msg then return {0} end
local ok, data = pcall(cjson.decode, msg)
if not ok or type(data) ~= 'table' or type(data.taskId) ~= 'string' or data.attempt ~= nil then
  return {1, msg}
end
local tkey = 'task:' .. data.taskId
if redis.call('EXISTS', tkey) == 0 then return {1, msg} end
local attempt = tonumber(redis.call('HGET', tkey, 'attempt')) or 1
local r = transition(tkey, tkey .. ':history', KEYS[3], '', 'RUNNING', attempt, 0, ARGV[1], ARGV[2],
                     {agentId = ARGV[1]}, {'result', 'error', 'exitCode'}, '')
if r[1] == 0 then
  -- Not claimable (cancelled, already finished, owned by someone else): drop our copy.
  redis.call('LREM', KEYS[2], 1, msg)
  return {2, msg, r[1], r[2], r[3], r[4]}
end
return {3, msg, r[1], r[2], r[3], r[4], redis.call('HGETALL', tkey)}
