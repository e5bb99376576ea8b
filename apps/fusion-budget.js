// fusion-budget: keep each CDN under its monthly traffic budget.
//
// A Fusion feed per CDN reports this month's usage, e.g.
//   {"usage": {"unit": "GB", "value": "19563.67"}}
// A CDN whose usage has passed its budget is no longer answered. Sonar
// health checks ({"avail": 1} up, {"avail": 0} down) take a CDN out too.
//
// Decision order:
//   1. CDNs within budget and not down, some with http_rtt -> lowest http_rtt, reason A
//   2. CDNs within budget and not down, none with http_rtt -> first in configured order, reason B
//   3. every CDN over budget or down                       -> the origin, reason C
//
// A CDN without usable Fusion data (missing, not JSON, unknown unit) counts
// as within budget; one without Sonar data counts as up. Ties in http_rtt go
// to the CDN listed first.

var handler = new OpenmixApplication({
    // CDNs in order of preference, with their monthly budget in GB.
    providers: {
        'cdn_a': {
            cname: 'cdn-a.example.net',
            budget_gb: 20000
        },
        'cdn_b': {
            cname: 'cdn-b.example.net',
            budget_gb: 50000
        },
        'cdn_c': {
            cname: 'cdn-c.example.net',
            budget_gb: 10000
        }
    },

    // The cheapest place to send traffic: no budget, answered when every
    // CDN is over budget or down.
    origin: {
        alias: 'origin',
        cname: 'origin.example.net'
    },

    // Fusion usage units, in GB.
    unit_to_gb: {
        'MB': 0.001,
        'GB': 1,
        'TB': 1000
    },

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

function onFusion(provider, data) {
    'use strict';
    handler.handle_fusion(provider, data);
}

/** @constructor */
function OpenmixApplication(settings) {
    'use strict';

    var aliases = Object.keys(settings.providers),
        reasons = {
            best_rtt_within_budget: 'A',
            within_budget_no_rtt: 'B',
            all_over_budget_or_down: 'C'
        },
        // alias -> {raw: the Fusion string, gb: usage in GB or undefined}.
        // Filled by onFusion, so requests only compare strings; a request
        // that sees a string onFusion has not parsed yet parses it here.
        usageCache = {};

    /**
     * @param {OpenmixConfiguration} config
     */
    this.do_init = function(config) {
        var i;
        for (i = 0; i < aliases.length; i += 1) {
            config.requireProvider(aliases[i]);
        }
        config.requireProvider(settings.origin.alias);
    };

    /**
     * @param {string} provider
     * @param {string} data
     */
    this.handle_fusion = function(provider, data) {
        usageOf(provider, data);
    };

    /**
     * @param {OpenmixRequest} request
     * @param {OpenmixResponse} response
     */
    this.handle_request = function(request, response) {
        var usage = parseFusionData(request.getData('fusion')),
            sonar = parseSonarData(request.getData('sonar')),
            rtt = request.getProbe('http_rtt') || {},
            eligible = [],
            decisionProvider,
            decisionReason,
            bestRtt,
            alias,
            value,
            i;

        for (i = 0; i < aliases.length; i += 1) {
            alias = aliases[i];
            if (sonar[alias] !== 0
                    && (usage[alias] === undefined || usage[alias] <= settings.providers[alias].budget_gb)) {
                eligible.push(alias);
            }
        }

        for (i = 0; i < eligible.length; i += 1) {
            value = rtt[eligible[i]] !== null && typeof rtt[eligible[i]] === 'object'
                ? rtt[eligible[i]].http_rtt
                : undefined;
            if (typeof value === 'number' && isFinite(value) && (bestRtt === undefined || value < bestRtt)) {
                bestRtt = value;
                decisionProvider = eligible[i];
            }
        }

        if (decisionProvider !== undefined) {
            decisionReason = reasons.best_rtt_within_budget;
        } else if (eligible.length > 0) {
            decisionProvider = eligible[0];
            decisionReason = reasons.within_budget_no_rtt;
        } else {
            decisionReason = reasons.all_over_budget_or_down;
        }

        if (decisionProvider === undefined) {
            response.respond(settings.origin.alias, settings.origin.cname);
        } else {
            response.respond(decisionProvider, settings.providers[decisionProvider].cname);
        }
        response.setTTL(settings.default_ttl);
        response.setReasonCode(decisionReason);
    };

    /**
     * Fusion data maps provider alias to a string, JSON here. Returns
     * {alias: usage in GB} for the providers whose string parses; the bad
     * ones are dropped.
     * @param {Object} data
     */
    function parseFusionData(data) {
        var result = {},
            keys,
            i,
            gb;
        if (data === undefined || data === null) {
            return result;
        }
        keys = Object.keys(data);
        i = keys.length;
        while (i--) {
            gb = usageOf(keys[i], data[keys[i]]);
            if (gb !== undefined) {
                result[keys[i]] = gb;
            }
        }
        return result;
    }

    /**
     * The usage in GB that `raw` reports for `alias`, parsed once per
     * distinct string.
     * @param {string} alias
     * @param {*} raw
     */
    function usageOf(alias, raw) {
        var entry = Object.prototype.hasOwnProperty.call(usageCache, alias) ? usageCache[alias] : undefined;
        if (entry === undefined || entry.raw !== raw) {
            entry = { raw: raw, gb: parseUsage(raw) };
            // Only our own providers are cached, so a feed cannot grow it.
            if (Object.prototype.hasOwnProperty.call(settings.providers, alias)) {
                usageCache[alias] = entry;
            }
        }
        return entry.gb;
    }

    /**
     * {"usage": {"unit": "GB", "value": "19563.67"}} -> 19563.67. A bare
     * number or numeric string for usage is taken as GB. Anything else is
     * undefined.
     * @param {*} raw
     */
    function parseUsage(raw) {
        var parsed,
            usage,
            value,
            unit = 'GB',
            factor;
        if (typeof raw !== 'string') {
            return undefined;
        }
        try {
            parsed = JSON.parse(raw);
        } catch (e) {
            return undefined;
        }
        if (parsed === null || typeof parsed !== 'object') {
            return undefined;
        }
        usage = parsed.usage;
        if (usage !== null && typeof usage === 'object') {
            value = usage.value;
            if (usage.unit !== undefined) {
                unit = String(usage.unit).toUpperCase();
            }
        } else {
            value = usage;
        }
        if (!Object.prototype.hasOwnProperty.call(settings.unit_to_gb, unit)) {
            return undefined;
        }
        factor = settings.unit_to_gb[unit];
        if (typeof value === 'string') {
            value = parseFloat(value);
        }
        if (typeof value !== 'number' || !isFinite(value)) {
            return undefined;
        }
        return value * factor;
    }

    /**
     * Sonar data maps provider alias to a string like '{"avail":1}'.
     * Returns {alias: 0 or 1} for the providers whose string parses.
     * @param {Object} data
     */
    function parseSonarData(data) {
        var result = {},
            keys,
            i,
            parsed,
            avail;
        if (data === undefined || data === null) {
            return result;
        }
        keys = Object.keys(data);
        i = keys.length;
        while (i--) {
            try {
                parsed = JSON.parse(data[keys[i]]);
            } catch (e) {
                continue;
            }
            avail = parsed !== null && typeof parsed === 'object' ? parsed.avail : parsed;
            if (typeof avail === 'string') {
                avail = parseFloat(avail);
            }
            if (avail === 0 || avail === 1) {
                result[keys[i]] = avail;
            }
        }
        return result;
    }
}
