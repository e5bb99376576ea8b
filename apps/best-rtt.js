// best-rtt: the CDN with the lowest HTTP response time among those whose
// Radar availability is at or above a threshold, with per-market overrides.
//
// Decision order:
//   1. No availability data at all               -> default provider, reason E
//   2. The market's override provider available  -> that provider,    reason B
//   3. No candidate available                    -> default provider, reason C
//   4. Available candidates with http_rtt data   -> lowest http_rtt,  reason A
//   5. Available candidates, none with http_rtt  -> highest avail,    reason D
//
// Candidates are the market's provider list when it has one, else every CDN.
// Exact ties are broken with Math.random(); distinct values never use it.
//
// Written to be cheap per decision: one pass over the candidates, no
// closures or intermediate objects built per request (see apps/README.md,
// "Fast apps").

var handler = new OpenmixApplication({
    // CDNs ranked by the app, in the order used for ties and reporting.
    providers: {
        'cdn_a': {
            cname: 'cdn-a.example.net'
        },
        'cdn_b': {
            cname: 'cdn-b.example.net'
        },
        'cdn_c': {
            cname: 'cdn-c.example.net'
        }
    },

    // Answered when no CDN can be chosen. Still a decision, unlike the
    // sidecar's fallback, which is only served when the app fails.
    default_provider: {
        alias: 'origin',
        cname: 'origin.example.net'
    },

    // In these markets, prefer this provider whenever it is available,
    // whatever its response time.
    market_overrides: {
        'SA': 'cdn_c'
    },

    // In these markets, only these providers are candidates.
    market_providers: {
        'AS': ['cdn_b', 'cdn_c'],
        'OC': ['cdn_b', 'cdn_c']
    },

    // Minimum Radar availability (percent) for a provider to be a candidate.
    availability_threshold: 90,

    // The DNS TTL of every answer, in seconds.
    default_ttl: 20
});

function init(config) {
    'use strict';
    handler.do_init(config);
}

function onRequest(request, response) {
    'use strict';
    handler.handle_request(request, response);
}

/** @constructor */
function OpenmixApplication(settings) {
    'use strict';

    var aliases = Object.keys(settings.providers),
        reasons = {
            best_rtt: 'A',
            market_override: 'B',
            none_available: 'C',
            rtt_data_missing: 'D',
            avail_data_missing: 'E'
        };

    /**
     * @param {OpenmixConfiguration} config
     */
    this.do_init = function(config) {
        var i;
        for (i = 0; i < aliases.length; i += 1) {
            config.requireProvider(aliases[i]);
        }
        config.requireProvider(settings.default_provider.alias);
    };

    /**
     * @param {OpenmixRequest} request
     * @param {OpenmixResponse} response
     */
    this.handle_request = function(request, response) {
        var avail = request.getProbe('avail'),
            rtt = request.getProbe('http_rtt'),
            market = request.market,
            candidates = ownValue(settings.market_providers, market) || aliases,
            override = ownValue(settings.market_overrides, market),
            threshold = settings.availability_threshold,
            // Best by http_rtt (lowest) and by avail (highest), with ties.
            byRtt = [],
            bestRtt,
            byAvail = [],
            bestAvail,
            anyAvail = false,
            alias,
            a,
            r,
            i,
            decisionProvider,
            decisionReason;

        for (i = 0; i < candidates.length; i += 1) {
            alias = candidates[i];
            a = probeValue(avail, alias, 'avail');
            if (a === undefined) {
                continue;
            }
            anyAvail = true;
            if (a < threshold) {
                continue;
            }
            if (byAvail.length === 0 || a > bestAvail) {
                byAvail = [alias];
                bestAvail = a;
            } else if (a === bestAvail) {
                byAvail.push(alias);
            }
            r = probeValue(rtt, alias, 'http_rtt');
            if (r === undefined) {
                continue;
            }
            if (byRtt.length === 0 || r < bestRtt) {
                byRtt = [alias];
                bestRtt = r;
            } else if (r === bestRtt) {
                byRtt.push(alias);
            }
        }

        if (!anyAvail && !hasAnyValue(avail, 'avail')) {
            decisionReason = reasons.avail_data_missing;
        } else if (override !== undefined && settings.providers[override] !== undefined &&
                probeValue(avail, override, 'avail') >= threshold) {
            decisionProvider = override;
            decisionReason = reasons.market_override;
        } else if (byRtt.length > 0) {
            decisionProvider = pickTie(byRtt);
            decisionReason = reasons.best_rtt;
        } else if (byAvail.length > 0) {
            decisionProvider = pickTie(byAvail);
            decisionReason = reasons.rtt_data_missing;
        } else {
            decisionReason = reasons.none_available;
        }

        if (decisionProvider === undefined) {
            response.respond(settings.default_provider.alias, settings.default_provider.cname);
        } else {
            response.respond(decisionProvider, settings.providers[decisionProvider].cname);
        }
        response.setTTL(settings.default_ttl);
        response.setReasonCode(decisionReason);
    };

    /**
     * The own property `key` of `object`, or undefined.
     * @param {!Object} object
     * @param {*} key
     */
    function ownValue(object, key) {
        if (typeof key === 'string' && Object.prototype.hasOwnProperty.call(object, key)) {
            return object[key];
        }
        return undefined;
    }

    /**
     * getProbe's value of `property` for `alias` as a finite number (a
     * numeric string is parsed), or undefined (a provider without the
     * value has {}).
     * @param {Object} probe
     * @param {string} alias
     * @param {string} property
     */
    function probeValue(probe, alias, property) {
        var row = probe ? probe[alias] : undefined,
            value = row ? row[property] : undefined;
        if (typeof value === 'number') {
            return isFinite(value) ? value : undefined;
        }
        if (typeof value === 'string') {
            value = parseFloat(value);
            return isFinite(value) ? value : undefined;
        }
        return undefined;
    }

    /**
     * Whether any provider in `probe` has a finite value of `property`.
     * @param {Object} probe
     * @param {string} property
     */
    function hasAnyValue(probe, property) {
        var keys, i;
        if (probe === undefined || probe === null) {
            return false;
        }
        keys = Object.keys(probe);
        for (i = 0; i < keys.length; i += 1) {
            if (probeValue(probe, keys[i], property) !== undefined) {
                return true;
            }
        }
        return false;
    }

    /**
     * One of `list`: the only one, or a Math.random() pick among exact ties.
     * @param {Array.<string>} list
     */
    function pickTie(list) {
        if (list.length === 1) {
            return list[0];
        }
        return list[Math.min(list.length - 1, Math.floor(Math.random() * list.length))];
    }
}
