-- A token bucket for one caller, shared by every API replica: read, refill, take, write back in
-- one atomic script, so two replicas taking at once cannot both spend the last token.
-- The clock is Redis's own (TIME), not the callers': replicas whose clocks disagree still
-- refill one bucket at one rate. A clock that steps back refills nothing (never a negative
-- refill, never a bonus).
-- KEYS: 1 the bucket (a hash: tokens, at)   ARGV: 1 tokens per second, 2 burst, 3 cost
-- Returns {allowed (1/0), milliseconds until `cost` tokens are there (0 if allowed),
--          whole tokens left}.
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local cost = tonumber(ARGV[3])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000

local state = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(state[1]) or burst
local at = tonumber(state[2]) or now
if now > at then
  tokens = math.min(burst, tokens + (now - at) * rate)
  at = now
end

local allowed = 0
local wait_ms = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait_ms = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(at))
-- A bucket left alone refills to full within burst / rate seconds; after that it holds nothing
-- a new bucket would not, so it may go (no key per caller kept forever).
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait_ms, math.floor(tokens)}
