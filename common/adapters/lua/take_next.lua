-- take_next: move the next message from `source` to this agent's `processing` list AND claim
-- it, in the caller's one round trip. Taking (BLMOVE), claiming (claim.lua) and reading the
-- task back (HGETALL) were three; a busy agent does this once per task.
-- Only a message the client submitted is claimed here: it carries a taskId whose hash exists,
-- so there is nothing left to validate or create. Anything else (a hand-pushed message, one a
-- stage 2 scheduler dispatched with its attempt and epoch, garbage) is only moved, and handed
-- back to Python for the full claim. An empty source returns at once: the caller then blocks
-- in BLMOVE, which a script cannot do.
-- Returns {0} (empty), {1, msg} (moved, claim it in Python), {2, msg, r...} (moved, not
-- claimable, dropped again), {3, msg, r..., fields} (claimed: RUNNING, owned by agent).
local function take_next(source, processing, stats_key, agent, now)
  local msg = redis.call('LMOVE', source, processing, 'RIGHT', 'LEFT')
  if not msg then return {0} end
  local ok, data = pcall(cjson.decode, msg)
  if not ok or type(data) ~= 'table' or type(data.taskId) ~= 'string' or data.attempt ~= nil then
    return {1, msg}
  end
  local tkey = 'task:' .. data.taskId
  if redis.call('EXISTS', tkey) == 0 then return {1, msg} end
  local attempt = tonumber(redis.call('HGET', tkey, 'attempt')) or 1
  local r = transition(tkey, tkey .. ':history', stats_key, '', 'RUNNING', attempt, 0, agent, now,
                       {agentId = agent}, {'result', 'error', 'exitCode'}, '')
  if r[1] == 0 then
    -- Not claimable (cancelled, already finished, owned by someone else): drop our copy.
    redis.call('LREM', processing, 1, msg)
    return {2, msg, r[1], r[2], r[3], r[4]}
  end
  return {3, msg, r[1], r[2], r[3], r[4], redis.call('HGETALL', tkey)}
end
