-- The schedule firer's one write (common/scheduling/schedules.py), fenced and idempotent.
-- In order, with nothing interleaved:
--   1. refuse everything if the caller's epoch is below fence:scheduler (a deposed leader that
--      woke up late), or if the schedule is gone or was made again under its name (its uid);
--   2. move the runs the firer saw final from the active set to their history, and delete the
--      finished runs past the history limits (the firer names them; each is deleted only if it
--      is in this schedule's history), as Kubernetes deletes a CronJob's old Jobs;
--   3. fire, if asked: only if lastScheduleTime is older than this fire time (a fire time fires
--      at most once, whichever leader asks and however often) and the schedule is not
--      suspended. The run is an ordinary task, created as submit.lua creates one, its id
--      derived from (schedule uid, fire time) by the caller;
--   4. place the schedule at its next check time in the due set.
-- KEYS: 1 schedule, 2 schedules:due, 3 active, 4 succeeded, 5 failed, 6 fence, 7 stats,
--       8 run task, 9 run history, 10 tasks:index, 11 queue:pending,
--       then three per deleted run: task, history, logs
-- ARGV: 1 name, 2 uid, 3 epoch, 4 now, 5 actor, 6 next check,
--       7 fire time ('' = no fire), 8 run id, 9 run hash fields JSON, 10 queue message,
--       11 missed, 12 skip reason (''), 13 F, then F pairs (runId, succeeded|failed|gone),
--       then one runId per deleted run
-- Returns {accepted, outcome}.
local nf = tonumber(ARGV[13])
local nd = #ARGV - 13 - 2 * nf
if nd < 0 or #KEYS ~= 11 + 3 * nd then
  error('tasklab: ' .. #KEYS .. ' keys for ' .. nd .. ' deleted runs')
end
local fence = tonumber(redis.call('GET', KEYS[6]) or '0')
if tonumber(ARGV[3]) < fence then
  count(KEYS[7], 'rejected_stale_epoch')
  return {0, 'stale_epoch'}
end
if redis.call('HGET', KEYS[1], 'uid') ~= ARGV[2] then return {0, 'gone'} end
local now = ARGV[4]

for i = 0, nf - 1 do
  local id, outcome = ARGV[14 + 2 * i], ARGV[15 + 2 * i]
  local at = redis.call('ZSCORE', KEYS[3], id)
  if at then
    redis.call('ZREM', KEYS[3], id)
    if outcome == 'succeeded' then redis.call('ZADD', KEYS[4], at, id)
    elseif outcome == 'failed' then redis.call('ZADD', KEYS[5], at, id) end
  end
end
for i = 0, nd - 1 do
  local id = ARGV[14 + 2 * nf + i]
  local kept = redis.call('ZREM', KEYS[4], id) + redis.call('ZREM', KEYS[5], id)
  if kept > 0 then
    redis.call('DEL', KEYS[12 + 3 * i], KEYS[13 + 3 * i], KEYS[14 + 3 * i])
    redis.call('ZREM', KEYS[10], id)
  end
end

local outcome = 'recorded'
if ARGV[7] ~= '' then
  local fire = tonumber(ARGV[7])
  local cur = redis.call('HMGET', KEYS[1], 'lastScheduleTime', 'suspend')
  if cur[1] and tonumber(cur[1]) >= fire then
    outcome = 'already'
  elseif cur[2] == '1' then
    outcome = 'suspended'
  elseif redis.call('EXISTS', KEYS[8]) == 1 then
    -- The run exists though lastScheduleTime is older: restored by hand from a backup, say.
    -- Record the fire time, create nothing twice.
    redis.call('HSET', KEYS[1], 'lastScheduleTime', ARGV[7], 'lastRunId', ARGV[8])
    outcome = 'already'
  else
    create_task(KEYS[8], KEYS[9], KEYS[10], ARGV[8], ARGV[9], now, ARGV[5],
                'fired by schedule ' .. ARGV[1])
    redis.call('LPUSH', KEYS[11], ARGV[10])
    redis.call('ZADD', KEYS[3], ARGV[7], ARGV[8])
    redis.call('HSET', KEYS[1], 'lastScheduleTime', ARGV[7], 'lastRunId', ARGV[8],
               'lastMissed', ARGV[11])
    redis.call('HDEL', KEYS[1], 'lastSkip')
    outcome = 'fired'
  end
  count(KEYS[7], outcome)
end
if ARGV[12] ~= '' then
  redis.call('HSET', KEYS[1], 'lastSkip', ARGV[12], 'lastMissed', ARGV[11])
end
redis.call('ZADD', KEYS[2], ARGV[6], ARGV[1])
return {1, outcome}
