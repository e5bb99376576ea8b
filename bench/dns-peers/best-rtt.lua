-- best-rtt (apps/best-rtt.js) for PowerDNS LUA records, with the provider
-- table of examples/data/probes.json inlined: the CDN with the lowest
-- http_rtt among those with avail >= 90; per market (continent) the
-- override (SA: cdn_c, when available) and the candidate lists (AS, OC:
-- cdn_b, cdn_c); origin when no CDN qualifies. Same branches as the app
-- (exact ties, which this data never has, go to the first listed instead
-- of Math.random()). The script joins these lines into one LUA CNAME record.
local P = { cdn_a = { c = 'cdn-a.example.net', v = 99.5, r = 38 },
            cdn_b = { c = 'cdn-b.example.net', v = 98.2, r = 45 },
            cdn_c = { c = 'cdn-c.example.net', v = 72.0, r = 20 } }
local ALL = { 'cdn_a', 'cdn_b', 'cdn_c' }
local MP = { AS = { 'cdn_b', 'cdn_c' }, OC = { 'cdn_b', 'cdn_c' } }
local MO = { SA = 'cdn_c' }
local T = 90
local m = string.upper(continentCode()) -- PowerDNS gives lower case ("oc")
local o = MO[m]
if o and P[o] and P[o].v and P[o].v >= T then return P[o].c end
local best, bv, avail
for _, a in ipairs(MP[m] or ALL) do
  local p = P[a]
  if p.v and p.v >= T then
    avail = avail or a
    if p.r and (best == nil or p.r < bv) then best, bv = a, p.r end
  end
end
if best == nil and avail then
  for _, a in ipairs(MP[m] or ALL) do
    local p = P[a]
    if p.v and p.v >= T and p.v > P[avail].v then avail = a end
  end
  best = avail
end
if best then return P[best].c end
return 'origin.example.net'
