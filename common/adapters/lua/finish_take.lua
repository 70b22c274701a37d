-- A busy agent's steady state in one round trip: report the task it ran (exactly what
-- transition.lua does) and take and claim its next one (take_next.lua). Reporting and taking
-- were two round trips per task; the take does not depend on the report's outcome.
-- KEYS: 1 task, 2 history, 3 stats, 4 fence, 5 processing, 6 logs, 7 delayed, 8 source
-- ARGV: 1 transition JSON (as transition.lua), 2 agentId, 3 now,
--       4 the finished task's message, dropped from the processing list if the report is
--         refused (a late report: the copy is stale either way)
-- Returns {transition result, take_next result}.
local a = cjson.decode(ARGV[1])
local fence_key = ''
if a.fenced then fence_key = KEYS[4] end
local r = transition(KEYS[1], KEYS[2], KEYS[3], fence_key, a.to, a.attempt, a.epoch, a.actor,
                     a.now, a.fields, a.clear, a.reason or '')
if r[1] == 1 then
  apply_effects(a.effects)
elseif ARGV[4] ~= '' then
  redis.call('LREM', KEYS[5], 1, ARGV[4])
end
return {r, take_next(KEYS[8], KEYS[5], KEYS[3], ARGV[2], ARGV[3])}
