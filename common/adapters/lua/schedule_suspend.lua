-- Pause or resume a schedule that exists. A resumed one is due at once: the firer decides,
-- from lastScheduleTime and the starting deadline, what it missed meanwhile.
-- KEYS: 1 schedule, 2 schedules:due
-- ARGV: 1 name, 2 '1' suspend / '0' resume, 3 now
-- Returns 1 done, 0 no such schedule.
if redis.call('EXISTS', KEYS[1]) == 0 then return 0 end
redis.call('HSET', KEYS[1], 'suspend', ARGV[2], 'updatedAt', ARGV[3])
if ARGV[2] == '0' then redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1]) end
return 1
