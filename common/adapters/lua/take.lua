-- Take and claim the next message in one round trip (see take_next.lua).
-- KEYS: 1 source list, 2 processing list, 3 stats
-- ARGV: 1 agentId, 2 now
return take_next(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2])
