-- Create a schedule if its name is free, and make it due at its first check.
-- KEYS: 1 schedule, 2 schedules:due
-- ARGV: 1 name, 2 hash fields JSON, 3 next check
-- Returns 1 created, 0 the name is taken.
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
local args = {}
for k, v in pairs(cjson.decode(ARGV[2])) do
  args[#args + 1] = k
  args[#args + 1] = tostring(v)
end
redis.call('HSET', KEYS[1], unpack(args))
redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
return 1
