-- KEYS: 1 task, 2 history, 3 stats, 4 fence (or a dummy), 5.. keys named by effects
-- ARGV: 1 JSON {to, attempt, epoch, actor, now, fields, clear, reason, fenced, effects}
local a = cjson.decode(ARGV[1])
local fence_key = ''
if a.fenced then fence_key = KEYS[4] end
local r = transition(KEYS[1], KEYS[2], KEYS[3], fence_key, a.to, a.attempt, a.epoch, a.actor,
                     a.now, a.fields, a.clear, a.reason or '')
if r[1] == 1 then apply_effects(a.effects) end
return r
