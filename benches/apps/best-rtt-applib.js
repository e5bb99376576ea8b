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
        var avail = flatten(request.getProbe('avail'), 'avail'),
            rtt = flatten(request.getProbe('http_rtt'), 'http_rtt'),
            market = request.market,
            candidates = ownValue(settings.market_providers, market) || aliases,
            override = ownValue(settings.market_overrides, market),
            available,
            withRtt,
            decisionProvider,
            decisionReason;

        function isAvailable(alias) {
            return avail[alias] !== undefined && avail[alias] >= settings.availability_threshold;
        }

        function hasRtt(alias) {
            return rtt[alias] !== undefined;
        }

        if (Object.keys(avail).length === 0) {
            decisionReason = reasons.avail_data_missing;
        } else if (override !== undefined && settings.providers[override] !== undefined && isAvailable(override)) {
            decisionProvider = override;
            decisionReason = reasons.market_override;
        } else {
            available = candidates.filter(isAvailable);
            withRtt = available.filter(hasRtt);
            if (withRtt.length > 0) {
                decisionProvider = pickBest(withRtt, rtt, true);
                decisionReason = reasons.best_rtt;
            } else if (available.length > 0) {
                decisionProvider = pickBest(available, avail, false);
                decisionReason = reasons.rtt_data_missing;
            } else {
                decisionReason = reasons.none_available;
            }
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
     * Turns getProbe's {alias: {name: value}} into {alias: value}, keeping
     * only finite numbers (a provider without the value has {}).
     * @param {Object} probe
     * @param {string} property
     */
    function flatten(probe, property) {
        var result = {},
            keys,
            i,
            value;
        if (probe === undefined || probe === null) {
            return result;
        }
        keys = Object.keys(probe);
        for (i = 0; i < keys.length; i += 1) {
            value = probe[keys[i]] === null || typeof probe[keys[i]] !== 'object'
                ? undefined
                : probe[keys[i]][property];
            if (typeof value === 'string') {
                value = parseFloat(value);
            }
            if (typeof value === 'number' && isFinite(value)) {
                result[keys[i]] = value;
            }
        }
        return result;
    }

    /**
     * The alias in `list` with the lowest (or highest) value; an exact tie
     * is broken with one call to Math.random().
     * @param {Array.<string>} list
     * @param {!Object} values
     * @param {boolean} lowest
     */
    function pickBest(list, values, lowest) {
        var best = [],
            bestValue,
            i,
            value;
        for (i = 0; i < list.length; i += 1) {
            value = values[list[i]];
            if (best.length === 0 || (lowest ? value < bestValue : value > bestValue)) {
                best = [list[i]];
                bestValue = value;
            } else if (value === bestValue) {
                best.push(list[i]);
            }
        }
        if (best.length === 1) {
            return best[0];
        }
        return best[Math.min(best.length - 1, Math.floor(Math.random() * best.length))];
    }
}
