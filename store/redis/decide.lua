-- floodgate decision script: one call decides a batch of ops, one after the
-- other in order; each op (all its limits, all-or-nothing) is decided with
-- the algorithms of the floodgate core, in integer microseconds. Every
-- number stays below 2^53, so doubles are exact; every division goes
-- through fdiv, which corrects a floor that is off by one.
--
-- ARGV: number of ops, number of limits, then per limit: algorithm, quota,
--       window (µs), p1, p2, p3 (see below); then per op: now (0 = read
--       Redis TIME, once per call), cost, mode ("a" acquire, "r" release),
--       lease, number of limits, then the number of each of its limits in
--       the list above (from 1).
-- KEYS: per op, per limit, one key; two for sliding_window_log (events,
--       sum) and concurrency (expiries, units).
-- Returns one reply per op: {flag, then per limit: allowed, remaining,
--          reset µs, retry µs (-1 = never)}, where flag is "all allowed"
--          (or "lease was held" on release); or, when a Redis command of
--          that op failed, the error message as a string (the ops before
--          and after it are decided as usual).

local NEVER = -1

local function fdiv(a, b)
  local q = math.floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function cdiv(a, b) return fdiv(a + b - 1, b) end

local function int(x) return string.format('%d', x) end

-- The op being decided: its instant, whether it was given explicitly, and
-- its lease. The functions below read these.
local now, explicit, lease = 0, false, ''
local clock = nil

-- cache holds the string-state keys of the call: their value as read by
-- one MGET before the first op and as written since (false: no value).
local cache = {}

-- With an explicit instant the keys' time to live cannot be derived from the
-- real clock; keep them a while longer so a slow test does not lose state.
local SLACK = 0

-- ttl sets key's time to live from the instant exp (µs) its state expires.
local function ttl(key, exp)
  local ms = cdiv(exp - now, 1000) + SLACK
  if exp <= now then ms = SLACK end
  if ms <= 0 then
    redis.call('DEL', key)
  else
    redis.call('PEXPIRE', key, int(ms))
  end
end

-- each calls f with successive slices of at most 1000 elements of t, to stay
-- within Lua's limit on unpacked arguments.
local function chunks(t, f)
  for i = 1, #t, 1000 do
    f(unpack(t, i, math.min(i + 999, #t)))
  end
end

-- String-state algorithms: pure functions of (state, now, cost) as in the
-- core, st = {T, N, P}.

local function fixed(l, st, cost)
  local w = l.w
  local start = fdiv(now, w) * w
  -- The clock went back (failover to a server behind): keep counting in
  -- the newer window, never a fresh one.
  if st.T > start then start = st.T end
  if st.T ~= start then st = {T = start, N = 0, P = 0} else st = {T = st.T, N = st.N, P = 0} end
  local r = {allowed = false, reset = start + w - now, retry = 0}
  if st.N + cost <= l.q then
    st.N = st.N + cost
    r.allowed = true
  elseif cost > l.q then
    r.retry = NEVER
  else
    r.retry = r.reset
  end
  r.remaining = l.q - st.N
  if st.N == 0 then r.reset = 0 end
  return st, r
end

local function slidingRetry(l, st, start, cost)
  local w, wms = l.w, l.w / 1000
  if st.N + cost <= l.q and st.P > 0 then
    local room = l.q - st.N - cost
    local e = wms - fdiv(room * wms, st.P)
    if e < wms then
      return math.max(start + e * 1000 - now, 1)
    end
  end
  local nxt = start + w
  if cost <= l.q and st.N > 0 then
    local room = l.q - cost
    local e = wms - fdiv(room * wms, st.N)
    if room >= st.N then e = 0 end
    return math.max(nxt + e * 1000 - now, 1)
  end
  return nxt - now
end

local function sliding(l, st, cost)
  local w = l.w
  local start = fdiv(now, w) * w
  if st.T > start then start = st.T end
  if st.T == start then
    st = {T = st.T, N = st.N, P = st.P}
  elseif st.T == start - w then
    st = {T = start, N = 0, P = st.N}
  else
    st = {T = start, N = 0, P = 0}
  end
  local wms = w / 1000
  local ems = math.max(0, fdiv(now - start, 1000))
  local weighted = cdiv(st.P * (wms - ems), wms)
  local r = {allowed = false, retry = 0, reset = 0}
  if cost > l.q then
    r.retry = NEVER
  elseif weighted + st.N + cost <= l.q then
    st.N = st.N + cost
    r.allowed = true
  else
    r.retry = slidingRetry(l, st, start, cost)
  end
  r.remaining = math.max(0, l.q - weighted - st.N)
  if st.N > 0 then
    r.reset = start + 2 * w - now
  elseif st.P > 0 then
    r.reset = start + w - now
  end
  return st, r
end

-- token bucket: p1 = qr, p2 = wr (quota/window in lowest terms), p3 = capacity.
local function bucket(l, st, cost)
  local qr, wr, cap = l.p1, l.p2, l.p3
  local d = st.N
  local elapsed = now - st.T
  if elapsed > 0 and d > 0 then
    if elapsed >= cdiv(d, qr) then d = 0 else d = d - elapsed * qr end
  end
  st = {T = math.max(now, st.T), N = d, P = 0}
  local r = {allowed = false, retry = 0}
  if cost > cap then
    r.retry = NEVER
  elseif d + cost * wr <= cap * wr then
    st.N = st.N + cost * wr
    r.allowed = true
  else
    r.retry = cdiv(d + cost * wr - cap * wr, qr)
  end
  if st.N == 0 then st.T = 0 end
  r.remaining = fdiv(cap * wr - st.N, wr)
  r.reset = cdiv(st.N, qr)
  return st, r
end

-- GCRA: p1 = emission interval (µs), p3 = capacity.
local function gcra(l, st, cost)
  local t, cap = l.p1, l.p3
  local tau = cap * t
  local tat = math.max(st.T, now)
  st = {T = st.T, N = 0, P = 0}
  local r = {allowed = false, retry = 0}
  if cost > cap then
    r.retry = NEVER
  else
    local newTAT = tat + cost * t
    if newTAT - now <= tau then
      st.T = newTAT
      tat = newTAT
      r.allowed = true
    else
      r.retry = newTAT - now - tau
    end
  end
  r.remaining = math.max(0, fdiv(tau - (tat - now), t))
  r.reset = tat - now
  return st, r
end

local pure = {fw = fixed, sw = sliding, tb = bucket, gcra = gcra}

-- expiresAt mirrors Limit.ExpiresAt for the string-state algorithms.
local function expiresAt(l, st)
  if l.alg == 'fw' then
    if st.N == 0 then return 0 end
    return st.T + l.w
  elseif l.alg == 'sw' then
    if st.N > 0 then return st.T + 2 * l.w end
    if st.P > 0 then return st.T + l.w end
    return 0
  elseif l.alg == 'tb' then
    if st.N == 0 then return 0 end
    return st.T + cdiv(st.N, l.p1)
  end
  return st.T
end

local function encode(l, st)
  if l.alg == 'gcra' then return int(st.T) end
  if l.alg == 'sw' then return int(st.T) .. ':' .. int(st.N) .. ':' .. int(st.P) end
  return int(st.T) .. ':' .. int(st.N)
end

-- Each limit kind offers: load (reads, and drops expired entries, which
-- leaves an equivalent state), decide(cost) -> result (charged result,
-- nothing written), current() -> result, commit(cost) (writes the charge).

-- A string-state limit: st is its state as loaded, f its algorithm; decide
-- keeps the state it computed so that commit of the same cost reuses it.
local StringLimit = {}
StringLimit.__index = StringLimit

function StringLimit:decide(cost)
  local nx, r = self.f(self.l, self.st, cost)
  self.nx, self.ncost = nx, cost
  return r
end

function StringLimit:current()
  local _, r = self.f(self.l, self.st, 0)
  return r
end

function StringLimit:commit(cost)
  local l, nx = self.l, self.nx
  if self.ncost ~= cost then nx = self.f(l, self.st, cost) end
  local exp = expiresAt(l, nx)
  if exp <= now then
    redis.call('DEL', l.k1)
    cache[l.k1] = false
  else
    -- exp > now: at least 1 ms; SET ... PX is SET then PEXPIRE in one.
    local v = encode(l, nx)
    redis.call('SET', l.k1, v, 'PX', int(cdiv(exp - now, 1000) + SLACK))
    cache[l.k1] = v
  end
end

-- parse reads "T", "T:N" or "T:N:P".
local function parse(raw)
  local i = string.find(raw, ':', 1, true)
  if not i then return tonumber(raw) or 0, 0, 0 end
  local t = tonumber(string.sub(raw, 1, i - 1)) or 0
  local j = string.find(raw, ':', i + 1, true)
  if not j then return t, tonumber(string.sub(raw, i + 1)) or 0, 0 end
  return t, tonumber(string.sub(raw, i + 1, j - 1)) or 0, tonumber(string.sub(raw, j + 1)) or 0
end

local function stringLimit(l)
  local raw = cache[l.k1]
  if raw == nil then raw = redis.call('GET', l.k1) end
  local st = {T = 0, N = 0, P = 0}
  if raw then st.T, st.N, st.P = parse(raw) end
  return setmetatable({l = l, st = st, f = pure[l.alg]}, StringLimit)
end

-- Sliding window log: k1 is a sorted set of events (score: instant, member:
-- "instant:seq:cost"), k2 the sum of their costs.
local function eventCost(m)
  return tonumber(string.match(m, ':(%d+)$'))
end

local function logLimit(l)
  local z, s = l.k1, l.k2
  local w, q = l.w, l.q
  local cutoff = int(now - w)
  local sum = 0
  local n = redis.call('ZCARD', z)
  if n > 0 then
    sum = tonumber(redis.call('GET', s) or '0')
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', cutoff)
    if #old > 0 then
      for _, m in ipairs(old) do sum = sum - eventCost(m) end
      redis.call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
      n = n - #old
      if n == 0 then
        redis.call('DEL', s)
        sum = 0
      else
        redis.call('SET', s, int(sum), 'KEEPTTL')
      end
    end
  else
    redis.call('DEL', s)
  end
  local last = nil
  local seq = 0
  if n > 0 then
    last = tonumber(redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
    seq = redis.call('ZCOUNT', z, int(now), int(now))
  end
  local function result(added)
    local r = {allowed = added ~= nil, retry = 0, reset = 0}
    local total, lst = sum, last
    if added then total = sum + added; lst = math.max(now, last or now) end
    r.remaining = q - total
    if lst then r.reset = lst + w - now end
    return r
  end
  local o = {}
  function o:decide(cost)
    if cost > q then
      local r = result(nil) r.retry = NEVER return r
    end
    if sum + cost <= q then return result(cost) end
    local r = result(nil)
    local need = sum + cost - q
    local i = 0
    while need > 0 do
      local page = redis.call('ZRANGE', z, i, i + 127, 'WITHSCORES')
      if #page == 0 then break end
      for j = 1, #page, 2 do
        need = need - eventCost(page[j])
        if need <= 0 then
          r.retry = tonumber(page[j + 1]) + w - now
          break
        end
      end
      i = i + 128
    end
    return r
  end
  function o:current() return result(nil) end
  function o:commit(cost)
    redis.call('ZADD', z, int(now), int(now) .. ':' .. int(seq) .. ':' .. int(cost))
    redis.call('SET', s, int(sum + cost))
    local exp = math.max(now, last or now) + w
    ttl(z, exp)
    ttl(s, exp)
  end
  return o
end

-- Concurrency: k1 is a sorted set of leases (score: expiry, member: "=" ..
-- lease, or "#" .. n for an anonymous lease), k2 a hash of each lease's
-- units plus "#held" (their sum) and "#seq" (the last anonymous number).
local function leaseLimit(l)
  local z, h = l.k1, l.k2
  local w, q = l.w, l.q
  local held = 0
  local n = redis.call('ZCARD', z)
  if n > 0 then
    held = tonumber(redis.call('HGET', h, '#held') or '0')
    local old = redis.call('ZRANGEBYSCORE', z, '-inf', int(now))
    if #old > 0 then
      chunks(old, function(...)
        for _, u in ipairs(redis.call('HMGET', h, ...)) do held = held - tonumber(u or '0') end
      end)
      redis.call('ZREMRANGEBYSCORE', z, '-inf', int(now))
      chunks(old, function(...) redis.call('HDEL', h, ...) end)
      n = n - #old
      if n == 0 then
        redis.call('DEL', h)
        held = 0
      else
        redis.call('HSET', h, '#held', int(held))
      end
    end
  else
    redis.call('DEL', h)
  end
  local last = nil
  if n > 0 then
    last = tonumber(redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
  end
  local seq = 0
  if n > 0 then seq = tonumber(redis.call('HGET', h, '#seq') or '0') end
  local member, units = nil, nil
  if lease ~= '' then
    member = '=' .. lease
    local u = redis.call('HGET', h, member)
    if u then units = tonumber(u) end
  end
  local function result(allowed, total, lst)
    local r = {allowed = allowed, retry = 0, reset = 0}
    r.remaining = math.max(0, q - total)
    if lst and lst > now then r.reset = lst - now end
    return r
  end
  local o = {}
  function o:decide(cost)
    if units then
      -- Renewal keeps the lease's units and moves its expiry.
      return result(true, held, math.max(last or 0, now + w))
    end
    if cost > q then
      local r = result(false, held, last) r.retry = NEVER return r
    end
    if held + cost <= q then
      return result(true, held + cost, math.max(last or 0, now + w))
    end
    local r = result(false, held, last)
    local need = held + cost - q
    local i = 0
    while need > 0 do
      local page = redis.call('ZRANGE', z, i, i + 127, 'WITHSCORES')
      if #page == 0 then break end
      local members = {}
      for j = 1, #page, 2 do members[#members + 1] = page[j] end
      local us = redis.call('HMGET', h, unpack(members))
      for j = 1, #page, 2 do
        need = need - tonumber(us[(j + 1) / 2] or '0')
        if need <= 0 then
          r.retry = tonumber(page[j + 1]) - now
          break
        end
      end
      i = i + 128
    end
    return r
  end
  function o:current() return result(true, held, last) end
  function o:commit(cost)
    if units then
      redis.call('ZADD', z, int(now + w), member)
    else
      local m = member
      if not m then
        m = '#' .. int(seq + 1)
        redis.call('HSET', h, '#seq', int(seq + 1))
      end
      redis.call('ZADD', z, int(now + w), m)
      redis.call('HSET', h, m, int(cost), '#held', int(held + cost))
    end
    local exp = math.max(last or 0, now + w)
    ttl(z, exp)
    ttl(h, exp)
  end
  -- release removes the lease and reports whether it was held.
  function o:release()
    if not units then return false end
    redis.call('ZREM', z, member)
    held = held - units
    if redis.call('ZCARD', z) == 0 then
      redis.call('DEL', z, h)
      held, last = 0, nil
    else
      redis.call('HDEL', h, member)
      redis.call('HSET', h, '#held', int(held))
      last = tonumber(redis.call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
    end
    units = nil
    return true
  end
  return o
end

local function flat(flag, rs)
  local out = {flag and 1 or 0}
  for _, r in ipairs(rs) do
    out[#out + 1] = r.allowed and 1 or 0
    out[#out + 1] = r.remaining
    out[#out + 1] = r.reset
    out[#out + 1] = r.retry
  end
  return out
end

-- decideOp decides one op whose limits are specs (algorithm, constants and
-- keys, read from ARGV and KEYS) and returns its reply.
local function decideOp(specs, opcost, release)
  -- Load every limit first: a limit listed twice then reads the same state
  -- twice and writes the same values twice, as in the core.
  local nlim = #specs
  local limits = {}
  for i = 1, nlim do
    local l = specs[i]
    if l.alg == 'sl' then
      limits[i] = logLimit(l)
    elseif l.alg == 'cc' then
      limits[i] = leaseLimit(l)
    else
      limits[i] = stringLimit(l)
    end
  end

  if release then
    local held = false
    local rs = {}
    for i = 1, nlim do
      if limits[i].release and limits[i]:release() then held = true end
      local r = limits[i]:current()
      r.allowed = true
      rs[i] = r
    end
    return flat(held, rs)
  end

  local peek = opcost == 0
  local cost = opcost
  if peek then cost = 1 end
  local rs = {}
  local all = true
  for i = 1, nlim do
    local r = limits[i]:decide(cost)
    if peek then
      local cur = limits[i]:current()
      r.remaining, r.reset = cur.remaining, cur.reset
    end
    if not r.allowed then all = false end
    rs[i] = r
  end
  if peek then return flat(all, rs) end
  if all then
    for i = 1, nlim do limits[i]:commit(cost) end
    return flat(true, rs)
  end
  if nlim > 1 then
    -- Nothing is consumed: limits that would have admitted are reported as
    -- they stand.
    for i = 1, nlim do
      if rs[i].allowed then
        local cur = limits[i]:current()
        rs[i].remaining, rs[i].reset = cur.remaining, cur.reset
      end
    end
  end
  return flat(false, rs)
end

-- The limits of the call.
local lims = {}
local a = 3
for i = 1, tonumber(ARGV[2]) do
  lims[i] = {alg = ARGV[a], q = tonumber(ARGV[a + 1]), w = tonumber(ARGV[a + 2]),
             p1 = tonumber(ARGV[a + 3]), p2 = tonumber(ARGV[a + 4]), p3 = tonumber(ARGV[a + 5])}
  a = a + 6
end
local first = a

-- The string-state keys of the ops, each once.
local strs, seen = {}, {}
local ki = 1
for _ = 1, tonumber(ARGV[1]) do
  local nlim = tonumber(ARGV[a + 4])
  a = a + 5
  for _ = 1, nlim do
    local alg = lims[tonumber(ARGV[a])].alg
    a = a + 1
    if alg == 'sl' or alg == 'cc' then
      ki = ki + 2
    else
      local k = KEYS[ki]
      if not seen[k] then
        seen[k] = true
        strs[#strs + 1] = k
      end
      ki = ki + 1
    end
  end
end

-- Read them all at once when there are several. MGET answers nil for a key
-- of another type, where GET fails; if any key MGET found empty exists,
-- those keys are left to GET, so that such an op fails as it would alone.
if #strs > 1 then
  local missing = {}
  local n = 0
  chunks(strs, function(...)
    local vs = redis.call('MGET', ...)
    for i = 1, #vs do
      n = n + 1
      cache[strs[n]] = vs[i]
      if not vs[i] then missing[#missing + 1] = strs[n] end
    end
  end)
  if #missing > 0 then
    local exist = 0
    chunks(missing, function(...) exist = exist + redis.call('EXISTS', ...) end)
    if exist > 0 then
      for _, k in ipairs(missing) do cache[k] = nil end
    end
  end
end

-- fast decides an acquisition of cost > 0 under one string-state limit d
-- whose key is k, as decideOp would with less work.
local function fast(d, k, cost)
  local raw = cache[k]
  if raw == nil then raw = redis.call('GET', k) end
  local st = {T = 0, N = 0, P = 0}
  if raw then st.T, st.N, st.P = parse(raw) end
  local nx, r = pure[d.alg](d, st, cost)
  if r.allowed then
    local exp = expiresAt(d, nx)
    if exp <= now then
      redis.call('DEL', k)
      cache[k] = false
    else
      local v = encode(d, nx)
      redis.call('SET', k, v, 'PX', int(cdiv(exp - now, 1000) + SLACK))
      cache[k] = v
    end
    return {1, 1, r.remaining, r.reset, r.retry}
  end
  return {0, 0, r.remaining, r.reset, r.retry}
end

-- The ops, in order. A failed Redis command (a key of the wrong type, out of
-- memory) fails its op alone, as it would in a call of its own; what the op
-- wrote before the failure stays written, as it would too.
local replies = {}
a, ki = first, 1
for o = 1, tonumber(ARGV[1]) do
  now = tonumber(ARGV[a])
  explicit = now ~= 0
  if explicit then
    SLACK = 600000
  else
    if not clock then
      local t = redis.call('TIME')
      clock = tonumber(t[1]) * 1000000 + tonumber(t[2])
    end
    now = clock
    SLACK = 0
  end
  local cost = tonumber(ARGV[a + 1])
  local release = ARGV[a + 2] == 'r'
  lease = ARGV[a + 3]
  local nlim = tonumber(ARGV[a + 4])
  a = a + 5
  local ok, reply
  local d = lims[tonumber(ARGV[a])]
  if nlim == 1 and not release and cost > 0 and pure[d.alg] then
    ok, reply = pcall(fast, d, KEYS[ki], cost)
    a, ki = a + 1, ki + 1
  else
    local specs = {}
    for i = 1, nlim do
      d = lims[tonumber(ARGV[a])]
      local l = {alg = d.alg, q = d.q, w = d.w, p1 = d.p1, p2 = d.p2, p3 = d.p3, k1 = KEYS[ki]}
      a, ki = a + 1, ki + 1
      if l.alg == 'sl' or l.alg == 'cc' then
        l.k2 = KEYS[ki]
        ki = ki + 1
      end
      specs[i] = l
    end
    ok, reply = pcall(decideOp, specs, cost, release)
  end
  if not ok then
    if type(reply) == 'table' and reply.err then reply = reply.err end
    reply = tostring(reply)
  end
  replies[o] = reply
end
return replies
