-- floodgate decision script: one call decides a batch of ops, one after the
-- other in order; each op (all its limits, all-or-nothing) is decided with
-- the algorithms of the floodgate core, in integer microseconds. Every
-- number stays below 2^53, so doubles are exact; every division goes
-- through fdiv, which corrects a floor that is off by one.
--
-- ARGV: number of ops (negated when every op is in the short form under a
--       string-state limit: see uniform below), number of limits, then per limit one packed
--       string: the algorithm's number (ALGS below), then quota, window
--       (µs), p1, p2, p3 (see below) as little-endian 64-bit integers; then
--       the ops, each in its short form (see SHORT below) or as: now (0 =
--       read Redis TIME, once per call), cost, mode ("a" acquire, "r"
--       release), lease, number of limits, then the number of each of its
--       limits in the list above (from 1).
-- KEYS: per op, per limit, one key; two for sliding_window_log (events,
--       sum) and concurrency (expiries, units).
-- Returns one string: a record per op, in order (see RECORD below).

local NEVER = -1

-- Library functions, bound by run when it starts without them: a function
-- library loads where only the redis table exists.
-- (Every global a call reads costs a lookup in Redis's protected global
-- table: the ones read per op are bound here.)
local floor, max, min, byte, find, sub, format, pack, sunpack, tunpack, concat, call, pcall_
local tonum, lpcall, setmeta
local function bind()
  floor, max, min = math.floor, math.max, math.min
  byte, find, sub, format = string.byte, string.find, string.sub, string.format
  pack, sunpack = struct.pack, struct.unpack
  tunpack, concat, call, pcall_ = unpack, table.concat, redis.call, redis.pcall
  tonum, lpcall, setmeta = tonumber, pcall, setmetatable
end

local function fdiv(a, b)
  local q = floor(a / b)
  if q * b > a then
    q = q - 1
  elseif (q + 1) * b <= a then
    q = q + 1
  end
  return q
end

local function cdiv(a, b) return fdiv(a + b - 1, b) end

local function int(x) return format('%d', x) end

-- The op being decided: its instant and its lease. The functions below read
-- these.
local now, lease = 0, ''
local clock = nil

-- cache holds the string-state keys of the call: their value as read by
-- one MGET before the first op and as written since (false: no value).
local cache = {}

-- With an explicit instant the keys' time to live cannot be derived from the
-- real clock; keep them a while longer so a slow test does not lose state.
local SLACK = 0

-- at makes t (µs; 0: the server's clock, read once per call) the instant
-- of the op being decided.
local function at(t)
  if t ~= 0 then
    now, SLACK = t, 600000
    return
  end
  if not clock then
    local r = call('TIME')
    clock = tonum(r[1]) * 1000000 + tonum(r[2])
  end
  now, SLACK = clock, 0
end

-- lifetime returns the time to live (ms; 0: none, delete the key) of a
-- state that expires at exp (µs). At an explicit instant it also covers exp
-- on the server's clock, so that a key lives until its state expires on
-- either clock (see store): an instant ahead of the server would otherwise
-- leave a key that a later op on the server's clock finds still in force,
-- with a time to live shorter than its state's.
local function lifetime(exp)
  local d = exp - now
  if SLACK ~= 0 then
    local t = now
    at(0)
    d = max(d, exp - now)
    now, SLACK = t, 600000
  end
  if d <= 0 then return SLACK end
  return cdiv(d, 1000) + SLACK
end

-- each calls f with successive slices of at most 1000 elements of t, to stay
-- within Lua's limit on unpacked arguments.
local function chunks(t, f)
  for i = 1, #t, 1000 do
    f(tunpack(t, i, min(i + 999, #t)))
  end
end

-- String-state algorithms: pure functions of (state, now, cost) as in the
-- core, the state being T, N, P (the fields of floodgate.State). Each returns
-- the new state, then allowed, remaining, reset and retry.

local function fixed(l, T, N, P, cost)
  local w, q = l.w, l.q
  local start = fdiv(now, w) * w
  -- The clock went back (failover to a server behind): keep counting in
  -- the newer window, never a fresh one.
  if T > start then start = T end
  if T ~= start then N = 0 end
  local allowed, reset, retry = false, start + w - now, 0
  if N + cost <= q then
    N = N + cost
    allowed = true
  elseif cost > q then
    retry = NEVER
  else
    retry = reset
  end
  if N == 0 then reset = 0 end
  return start, N, 0, allowed, q - N, reset, retry
end

local function slidingRetry(l, N, P, start, cost)
  local w, wms = l.w, l.w / 1000
  if N + cost <= l.q and P > 0 then
    local room = l.q - N - cost
    local e = wms - fdiv(room * wms, P)
    if e < wms then
      return max(start + e * 1000 - now, 1)
    end
  end
  local nxt = start + w
  if cost <= l.q and N > 0 then
    local room = l.q - cost
    local e = wms - fdiv(room * wms, N)
    if room >= N then e = 0 end
    return max(nxt + e * 1000 - now, 1)
  end
  return nxt - now
end

local function sliding(l, T, N, P, cost)
  local w, q = l.w, l.q
  local start = fdiv(now, w) * w
  if T > start then start = T end
  if T == start then
    -- same window
  elseif T == start - w then
    N, P = 0, N
  else
    N, P = 0, 0
  end
  local wms = w / 1000
  local ems = max(0, fdiv(now - start, 1000))
  local weighted = cdiv(P * (wms - ems), wms)
  local allowed, retry, reset = false, 0, 0
  if cost > q then
    retry = NEVER
  elseif weighted + N + cost <= q then
    N = N + cost
    allowed = true
  else
    retry = slidingRetry(l, N, P, start, cost)
  end
  if N > 0 then
    reset = start + 2 * w - now
  elseif P > 0 then
    reset = start + w - now
  end
  return start, N, P, allowed, max(0, q - weighted - N), reset, retry
end

-- token bucket: p1 = qr, p2 = wr (quota/window in lowest terms), p3 = capacity.
local function bucket(l, T, N, P, cost)
  local qr, wr, cap = l.p1, l.p2, l.p3
  local d = N
  local elapsed = now - T
  if elapsed > 0 and d > 0 then
    if elapsed >= cdiv(d, qr) then d = 0 else d = d - elapsed * qr end
  end
  T, N = max(now, T), d
  local allowed, retry = false, 0
  if cost > cap then
    retry = NEVER
  elseif d + cost * wr <= cap * wr then
    N = N + cost * wr
    allowed = true
  else
    retry = cdiv(d + cost * wr - cap * wr, qr)
  end
  if N == 0 then T = 0 end
  return T, N, 0, allowed, fdiv(cap * wr - N, wr), cdiv(N, qr), retry
end

-- GCRA: p1 = emission interval (µs), p3 = capacity.
local function gcra(l, T, N, P, cost)
  local t, cap = l.p1, l.p3
  local tau = cap * t
  local tat = max(T, now)
  local allowed, retry = false, 0
  if cost > cap then
    retry = NEVER
  else
    local newTAT = tat + cost * t
    if newTAT - now <= tau then
      T, tat = newTAT, newTAT
      allowed = true
    else
      retry = newTAT - now - tau
    end
  end
  return T, 0, 0, allowed, max(0, fdiv(tau - (tat - now), t)), tat - now, retry
end

local pure = {fw = fixed, sw = sliding, tb = bucket, gcra = gcra}

-- expiresAt mirrors Limit.ExpiresAt for the string-state algorithms.
local function expiresAt(l, T, N, P)
  local alg = l.alg
  if alg == 'gcra' then return T end
  if alg == 'fw' then
    if N == 0 then return 0 end
    return T + l.w
  elseif alg == 'sw' then
    if N > 0 then return T + 2 * l.w end
    if P > 0 then return T + l.w end
    return 0
  end
  if N == 0 then return 0 end
  return T + cdiv(N, l.p1)
end

-- A string state is a marker byte 1 and the fields as little-endian 64-bit
-- integers: T (GCRA); T, N (fixed window, token bucket); T, N, P (sliding
-- window counter).
local function encode(l, T, N, P)
  local alg = l.alg
  if alg == 'gcra' then return pack('<Bi8', 1, T) end
  if alg == 'sw' then return pack('<Bi8i8i8', 1, T, N, P) end
  return pack('<Bi8i8', 1, T, N)
end

-- parse reads a state: packed, or the text "T", "T:N" or "T:N:P" of
-- earlier versions.
local function parse(raw)
  if byte(raw, 1) == 1 then
    local n = #raw
    if n == 9 then
      local _, T = sunpack('<Bi8', raw)
      return T, 0, 0
    elseif n == 17 then
      local _, T, N = sunpack('<Bi8i8', raw)
      return T, N, 0
    elseif n == 25 then
      local _, T, N, P = sunpack('<Bi8i8i8', raw)
      return T, N, P
    end
  end
  local i = find(raw, ':', 1, true)
  if not i then return tonum(raw) or 0, 0, 0 end
  local t = tonum(sub(raw, 1, i - 1)) or 0
  local j = find(raw, ':', i + 1, true)
  if not j then return t, tonum(sub(raw, i + 1)) or 0, 0 end
  return t, tonum(sub(raw, i + 1, j - 1)) or 0, tonum(sub(raw, j + 1)) or 0
end

-- Every write of a string state leaves its key living at least until the
-- state expires (expiresAt) on the server's clock: a time to live rounded up
-- to the millisecond (lifetime), or the key's own one kept (SET ... KEEPTTL)
-- where the state it replaces expires at the same instant, which is what
-- every op but the first of a fixed window or sliding window counter writes
-- (limit keep): that saves Redis setting the expiry again. An op at an
-- explicit instant always sets it: its own time to live must also cover its
-- instant's timeline.

-- store writes the state of limit l in key k as of now: deleted when it is
-- equivalent to no state, else with a time to live to that instant.
local function store(l, k, T, N, P)
  local exp = expiresAt(l, T, N, P)
  if exp <= now then
    call('DEL', k)
    cache[k] = false
  else
    local v = encode(l, T, N, P)
    local old = cache[k]
    if old and l.keep and SLACK == 0 and expiresAt(l, parse(old)) == exp then
      call('SET', k, v, 'KEEPTTL')
    else
      -- exp > now: at least 1 ms; SET ... PX is SET then PEXPIRE in one.
      call('SET', k, v, 'PX', int(lifetime(exp)))
    end
    cache[k] = v
  end
end

-- load reads the state of key k, from the call's cache when it is there.
local function load(k)
  local raw = cache[k]
  if raw == nil then
    raw = call('GET', k)
    cache[k] = raw
  end
  if raw then return parse(raw) end
  return 0, 0, 0
end

-- An op's reply is a record of the call's reply: a byte, 1 when all limits
-- allowed (on release: when the lease was held), else 0, then per limit
-- allowed (a byte), remaining, reset and retry (little-endian 64-bit
-- integers); or, when a Redis command of the op failed, the byte 2, the
-- length of the message (32 bits) and the message.
local RECORD = '<Bi8i8i8'

-- decideOp decides an op in general (several limits, a release, a peek, a
-- sliding log or concurrency limit); general defines it, and the functions
-- it uses, on first use, so that a call of short ops does not pay for them.
local decideOp
local function general()
  if decideOp then return decideOp end
  -- ttl sets key's time to live from the instant exp (µs) its state expires.
  local function ttl(key, exp)
    local ms = lifetime(exp)
    if ms <= 0 then
      call('DEL', key)
    else
      call('PEXPIRE', key, int(ms))
    end
  end

  -- Each limit kind offers: load (reads, and drops expired entries, which
  -- leaves an equivalent state), decide(cost) -> result (charged result,
  -- nothing written), current() -> result, commit(cost) (writes the charge).

  -- A string-state limit: T, N, P its state as loaded, f its algorithm; decide
  -- keeps the state it computed so that commit of the same cost reuses it.
  local StringLimit = {}
  StringLimit.__index = StringLimit

  local function result(allowed, remaining, reset, retry)
    return {allowed = allowed, remaining = remaining, reset = reset, retry = retry}
  end

  function StringLimit:decide(cost)
    local T, N, P, allowed, remaining, reset, retry = self.f(self.l, self.T, self.N, self.P, cost)
    self.nT, self.nN, self.nP, self.ncost = T, N, P, cost
    return result(allowed, remaining, reset, retry)
  end

  function StringLimit:current()
    local _, _, _, allowed, remaining, reset, retry = self.f(self.l, self.T, self.N, self.P, 0)
    return result(allowed, remaining, reset, retry)
  end

  function StringLimit:commit(cost)
    local l = self.l
    local T, N, P = self.nT, self.nN, self.nP
    if self.ncost ~= cost then T, N, P = self.f(l, self.T, self.N, self.P, cost) end
    store(l, l.k1, T, N, P)
  end

  local function stringLimit(l)
    local T, N, P = load(l.k1)
    return setmeta({l = l, T = T, N = N, P = P, f = pure[l.alg]}, StringLimit)
  end

  -- Sliding window log: k1 is a sorted set of events (score: instant, member:
  -- "instant:seq:cost"), k2 the sum of their costs.
  local function eventCost(m)
    return tonum(string.match(m, ':(%d+)$'))
  end

  local function logLimit(l)
    local z, s = l.k1, l.k2
    local w, q = l.w, l.q
    local cutoff = int(now - w)
    local sum = 0
    local n = call('ZCARD', z)
    if n > 0 then
      sum = tonum(call('GET', s) or '0')
      local old = call('ZRANGEBYSCORE', z, '-inf', cutoff)
      if #old > 0 then
        for _, m in ipairs(old) do sum = sum - eventCost(m) end
        call('ZREMRANGEBYSCORE', z, '-inf', cutoff)
        n = n - #old
        if n == 0 then
          call('DEL', s)
          sum = 0
        else
          call('SET', s, int(sum), 'KEEPTTL')
        end
      end
    else
      call('DEL', s)
    end
    local last = nil
    local seq = 0
    if n > 0 then
      last = tonum(call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
      seq = call('ZCOUNT', z, int(now), int(now))
    end
    local function result(added)
      local r = {allowed = added ~= nil, retry = 0, reset = 0}
      local total, lst = sum, last
      if added then total = sum + added; lst = max(now, last or now) end
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
        local page = call('ZRANGE', z, i, i + 127, 'WITHSCORES')
        if #page == 0 then break end
        for j = 1, #page, 2 do
          need = need - eventCost(page[j])
          if need <= 0 then
            r.retry = tonum(page[j + 1]) + w - now
            break
          end
        end
        i = i + 128
      end
      return r
    end
    function o:current() return result(nil) end
    function o:commit(cost)
      call('ZADD', z, int(now), int(now) .. ':' .. int(seq) .. ':' .. int(cost))
      call('SET', s, int(sum + cost))
      local exp = max(now, last or now) + w
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
    local n = call('ZCARD', z)
    if n > 0 then
      held = tonum(call('HGET', h, '#held') or '0')
      local old = call('ZRANGEBYSCORE', z, '-inf', int(now))
      if #old > 0 then
        chunks(old, function(...)
          for _, u in ipairs(call('HMGET', h, ...)) do held = held - tonum(u or '0') end
        end)
        call('ZREMRANGEBYSCORE', z, '-inf', int(now))
        chunks(old, function(...) call('HDEL', h, ...) end)
        n = n - #old
        if n == 0 then
          call('DEL', h)
          held = 0
        else
          call('HSET', h, '#held', int(held))
        end
      end
    else
      call('DEL', h)
    end
    local last = nil
    if n > 0 then
      last = tonum(call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
    end
    local seq = 0
    if n > 0 then seq = tonum(call('HGET', h, '#seq') or '0') end
    local member, units = nil, nil
    if lease ~= '' then
      member = '=' .. lease
      local u = call('HGET', h, member)
      if u then units = tonum(u) end
    end
    local function result(allowed, total, lst)
      local r = {allowed = allowed, retry = 0, reset = 0}
      r.remaining = max(0, q - total)
      if lst and lst > now then r.reset = lst - now end
      return r
    end
    local o = {}
    function o:decide(cost)
      if units then
        -- Renewal keeps the lease's units and moves its expiry.
        return result(true, held, max(last or 0, now + w))
      end
      if cost > q then
        local r = result(false, held, last) r.retry = NEVER return r
      end
      if held + cost <= q then
        return result(true, held + cost, max(last or 0, now + w))
      end
      local r = result(false, held, last)
      local need = held + cost - q
      local i = 0
      while need > 0 do
        local page = call('ZRANGE', z, i, i + 127, 'WITHSCORES')
        if #page == 0 then break end
        local members = {}
        for j = 1, #page, 2 do members[#members + 1] = page[j] end
        local us = call('HMGET', h, tunpack(members))
        for j = 1, #page, 2 do
          need = need - tonum(us[(j + 1) / 2] or '0')
          if need <= 0 then
            r.retry = tonum(page[j + 1]) - now
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
        call('ZADD', z, int(now + w), member)
      else
        local m = member
        if not m then
          m = '#' .. int(seq + 1)
          call('HSET', h, '#seq', int(seq + 1))
        end
        call('ZADD', z, int(now + w), m)
        call('HSET', h, m, int(cost), '#held', int(held + cost))
      end
      local exp = max(last or 0, now + w)
      ttl(z, exp)
      ttl(h, exp)
    end
    -- release removes the lease and reports whether it was held.
    function o:release()
      if not units then return false end
      call('ZREM', z, member)
      held = held - units
      if call('ZCARD', z) == 0 then
        call('DEL', z, h)
        held, last = 0, nil
      else
        call('HDEL', h, member)
        call('HSET', h, '#held', int(held))
        last = tonum(call('ZRANGE', z, -1, -1, 'WITHSCORES')[2])
      end
      units = nil
      return true
    end
    return o
  end

  local function flat(flag, rs)
    local out = {flag and '\1' or '\0'}
    for i, r in ipairs(rs) do
      out[i + 1] = pack(RECORD, r.allowed and 1 or 0, r.remaining, r.reset, r.retry)
    end
    return concat(out)
  end

  -- decideOp decides one op whose limits are specs (algorithm, constants and
  -- keys, read from ARGV and KEYS) and returns its reply.
  function decideOp(specs, opcost, release)
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
  return decideOp
end

-- The limits' algorithms, by number.
local ALGS = {'fw', 'sl', 'sw', 'tb', 'gcra', 'cc'}

-- An op that acquires under one limit (not a concurrency limit with a
-- lease) has a short form: one argument, -(cost * 2 * SHORT + the number of
-- its limit * 2 + 1 if its instant follows), then its instant unless it is 0.
local SHORT = 1024

-- short splits the number of an op's short form: its limit's number, its
-- cost and whether its instant follows.
local function short(x)
  x = -x
  local timed = x % 2
  x = (x - timed) / 2
  local lim = x % SHORT
  return lim, (x - lim) / SHORT, timed == 1
end

-- Parsed limits and short forms by their argument, kept from call to call
-- when the script runs as a function (a script starts afresh every call),
-- up to MEMO of each: then they start afresh.
local MEMO = 1024
local limits, nlimits, forms, nforms = {}, 0, {}, 0

-- limit returns the limit of a packed argument.
local function limit(arg)
  local l = limits[arg]
  if l then return l end
  local code, q, w, p1, p2, p3 = sunpack('<Bi8i8i8i8i8', arg)
  local alg = ALGS[code]
  -- keep: a state's expiry is the end of its window(s), the same for every op
  -- in them (see store).
  l = {alg = alg, q = q, w = w, p1 = p1, p2 = p2, p3 = p3, f = pure[alg], keep = alg == 'fw' or alg == 'sw'}
  if nlimits >= MEMO then limits, nlimits = {}, 0 end
  limits[arg], nlimits = l, nlimits + 1
  return l
end

-- form returns the parts of a short form's argument: its limit's number,
-- its cost and whether its instant follows.
local function form(arg)
  local f = forms[arg]
  if f then return f end
  f = {short(tonum(arg))}
  if nforms >= MEMO then forms, nforms = {}, 0 end
  forms[arg], nforms = f, nforms + 1
  return f
end

-- The record of an op under one limit: its flag, then the limit's record.
local FAST = '<B' .. RECORD

-- fast decides, on the general path, an acquisition of cost > 0 under one
-- string-state limit d whose key is k, as decideOp would with less work.
local function fast(d, k, cost)
  local T, N, P = load(k)
  local allowed, remaining, reset, retry
  T, N, P, allowed, remaining, reset, retry = d.f(d, T, N, P, cost)
  if allowed then
    store(d, k, T, N, P)
    return pack(FAST, 1, 1, remaining, reset, retry)
  end
  return pack(FAST, 0, 0, remaining, reset, retry)
end

-- NUM makes a table convert each number of ARGV once per call: most repeat.
local NUM = {__index = function(t, v)
  local n = tonum(v)
  t[v] = n
  return n
end}

-- run decides a call (KEYS and ARGV as above) and returns its reply. Loaded
-- as a Redis function library, it is the function, and what comes before it
-- is defined once; run as a script, its body is a block of the script (the
-- store turns its first line into "do").
local function run(KEYS, ARGV)
  if not call then bind() end
  now, lease, clock, SLACK, cache = 0, '', nil, 0, {}

  -- The limits of the call.
  local lims = {}
  local a = 3
  for i = 1, tonum(ARGV[2]) do
    lims[i] = limit(ARGV[a])
    a = a + 1
  end
  local first = a
  local nops = tonum(ARGV[1])

  -- A uniform call, whose ops are all in the short form under a string-state
  -- limit (one key each, in order), the common call, takes a shorter path than
  -- the general one below. The keys are read by one MGET; SET ...
  -- GET writes a state and fails, writing nothing, on a key of another type,
  -- which MGET reads as empty: such an op fails as it would alone, and so
  -- does a denied op on such a key, by a GET. A failed command fails its op
  -- alone, as below.
  if nops < 0 then
    local n = -nops
    -- (A call holds at most 128 ops: within what unpack can pass.)
    local vals = call('MGET', tunpack(KEYS))
    local written = {}
    local out = {}
    local a = first
    for o = 1, n do
      local x = ARGV[a]
      local f = forms[x] or form(x)
      a = a + 1
      local d, cost = lims[f[1]], f[2]
      if f[3] then
        at(tonum(ARGV[a]))
        a = a + 1
      elseif now ~= clock or SLACK ~= 0 then
        -- (Not already on the server's clock.)
        at(0)
      end
      local k = KEYS[o]
      local raw = written[k]
      if raw == nil then raw = vals[o] end
      local T, N, P = 0, 0, 0
      -- kept: when the key's time to live may be kept (see store), the
      -- instant its state expires.
      local kept = false
      if raw then
        T, N, P = parse(raw)
        if d.keep and SLACK == 0 then kept = expiresAt(d, T, N, P) end
      end
      local allowed, remaining, reset, retry
      T, N, P, allowed, remaining, reset, retry = d.f(d, T, N, P, cost)
      local r, v
      if allowed then
        -- An admitted op always leaves a state that outlives now.
        v = encode(d, T, N, P)
        local exp = expiresAt(d, T, N, P)
        if exp == kept then
          r = pcall_('SET', k, v, 'KEEPTTL', 'GET')
        else
          -- (lifetime, written out for the server's clock.)
          local ms = int(SLACK == 0 and cdiv(exp - now, 1000) or lifetime(exp))
          r = pcall_('SET', k, v, 'PX', ms, 'GET')
        end
      elseif raw == false then
        r = pcall_('GET', k)
      end
      -- r: the old value (a string), false, or an error table.
      if r and r.err then
        out[o] = pack('<BI4', 2, #r.err) .. r.err
      elseif allowed then
        written[k] = v
        out[o] = pack(FAST, 1, 1, remaining, reset, retry)
      else
        out[o] = pack(FAST, 0, 0, remaining, reset, retry)
      end
    end
    return concat(out)
  end

  local num = setmeta({}, NUM)

  -- The string-state keys of the ops, each once.
  local strs, seen = {}, {}
  local function want(k)
    if not seen[k] then
      seen[k] = true
      strs[#strs + 1] = k
    end
  end
  local ki = 1
  for _ = 1, nops do
    local x = num[ARGV[a]]
    if x < 0 then
      local lim, _, timed = short(x)
      a = a + 1
      if timed then a = a + 1 end
      if lims[lim].f then
        want(KEYS[ki])
        ki = ki + 1
      else
        ki = ki + 2
      end
    else
      local nlim = num[ARGV[a + 4]]
      a = a + 5
      for _ = 1, nlim do
        if lims[num[ARGV[a]]].f then
          want(KEYS[ki])
          ki = ki + 1
        else
          ki = ki + 2
        end
        a = a + 1
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
      local vs = call('MGET', ...)
      for i = 1, #vs do
        n = n + 1
        cache[strs[n]] = vs[i]
        if not vs[i] then missing[#missing + 1] = strs[n] end
      end
    end)
    if #missing > 0 then
      local exist = 0
      chunks(missing, function(...) exist = exist + call('EXISTS', ...) end)
      if exist > 0 then
        for _, k in ipairs(missing) do cache[k] = nil end
      end
    end
  end

  -- The ops, in order. A failed Redis command (a key of the wrong type, out of
  -- memory) fails its op alone, as it would in a call of its own; what the op
  -- wrote before the failure stays written, as it would too.
  local replies = {}
  a, ki = first, 1
  for o = 1, nops do
    local x = num[ARGV[a]]
    local cost, release, nlim, d, li
    if x < 0 then
      local lim, timed
      lim, cost, timed = short(x)
      d = lims[lim]
      now, release, lease, nlim = 0, false, '', 1
      a = a + 1
      if timed then
        now = num[ARGV[a]]
        a = a + 1
      end
    else
      now, cost, release, lease, nlim = x, num[ARGV[a + 1]], ARGV[a + 2] == 'r', ARGV[a + 3], num[ARGV[a + 4]]
      li = a + 5
      a = li + nlim
      d = lims[num[ARGV[li]]]
    end
    at(now)
    local ok, reply
    if nlim == 1 and not release and cost > 0 and d.f then
      ok, reply = lpcall(fast, d, KEYS[ki], cost)
      ki = ki + 1
    else
      local specs = {}
      for i = 1, nlim do
        if li then d = lims[num[ARGV[li + i - 1]]] end
        local l = {alg = d.alg, q = d.q, w = d.w, p1 = d.p1, p2 = d.p2, p3 = d.p3, k1 = KEYS[ki], keep = d.keep}
        ki = ki + 1
        if not d.f then
          l.k2 = KEYS[ki]
          ki = ki + 1
        end
        specs[i] = l
      end
      ok, reply = lpcall(general(), specs, cost, release)
    end
    if not ok then
      if type(reply) == 'table' and reply.err then reply = reply.err end
      reply = tostring(reply)
      reply = pack('<BI4', 2, #reply) .. reply
    end
    replies[o] = reply
  end
  return concat(replies)
end
