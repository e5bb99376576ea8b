// http-hosts: an HTTP decision app. Answers a ranked list of CDN URLs, the
// fastest first, for a player or page to choose from, and answers DNS with
// the fastest one.
//
// Decision order:
//   1. ?fail=1 in the query string, or an X-Block header (any value) -> 403
//      and the 'denied' page, reason C (decided over HTTP only: DNS queries
//      have no query string or headers)
//   2. CDNs available with http_rtt data -> all of them, fastest first,
//      reason A (DNS: the fastest)
//   3. none -> the origin alone, reason B
//
// Every answer carries the header X-Switchyard-App: http-hosts. CDNs with
// equal http_rtt keep their configured order.

var handler = new OpenmixApplication({
    // CDNs in configured order: their URL for HTTP, their name for DNS.
    providers: {
        'cdn_a': {
            host: 'https://cdn-a.example.net',
            cname: 'cdn-a.example.net'
        },
        'cdn_b': {
            host: 'https://cdn-b.example.net',
            cname: 'cdn-b.example.net'
        },
        'cdn_c': {
            host: 'https://cdn-c.example.net',
            cname: 'cdn-c.example.net'
        }
    },

    // Answered when no CDN is available.
    origin: {
        alias: 'origin',
        host: 'https://origin.example.net',
        cname: 'origin.example.net'
    },

    // Answered, with status 403, to blocked requests.
    denied: {
        alias: 'denied',
        host: 'https://denied.example.net/403.html'
    },

    // Minimum Radar availability (percent) for a CDN to be listed.
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
            ranked_by_rtt: 'A',
            none_available: 'B',
            blocked: 'C'
        };

    /**
     * @param {OpenmixConfiguration} config
     */
    this.do_init = function(config) {
        var i;
        for (i = 0; i < aliases.length; i += 1) {
            config.requireProvider(aliases[i]);
        }
        config.requireProvider(settings.origin.alias);
        config.enableCors('*');
    };

    /**
     * @param {OpenmixRequest} request
     * @param {OpenmixResponse} response
     */
    this.handle_request = function(request, response) {
        var blockedBy = null,
            ranked,
            i;

        if (request.getQueryString('fail') === '1') {
            blockedBy = 'query';
        } else if (isPresent(request.getHeader('X-Block'))) {
            blockedBy = 'header';
        }

        response.setHeader('X-Switchyard-App', 'http-hosts');

        if (blockedBy !== null) {
            response.setStatus(403);
            response.addProviderHost(settings.denied.alias, settings.denied.host, { blocked_by: blockedBy });
            response.setProvider(settings.denied.alias);
            response.setReasonCode(reasons.blocked);
        } else {
            ranked = rank(request.getProbe('avail'), request.getProbe('http_rtt'));
            if (ranked.length > 0) {
                for (i = 0; i < ranked.length; i += 1) {
                    response.addProviderHost(ranked[i].alias, settings.providers[ranked[i].alias].host, {
                        rank: i + 1,
                        http_rtt: ranked[i].rtt
                    });
                }
                response.respond(ranked[0].alias, settings.providers[ranked[0].alias].cname);
            } else {
                response.addProviderHost(settings.origin.alias, settings.origin.host, { rank: 1 });
                response.respond(settings.origin.alias, settings.origin.cname);
            }
            response.setStatus(200);
            response.setTTL(settings.default_ttl);
            response.setReasonCode(ranked.length > 0 ? reasons.ranked_by_rtt : reasons.none_available);
        }
    };

    /**
     * @param {*} value
     */
    function isPresent(value) {
        return value !== null && value !== undefined;
    }

    /**
     * The value of `property` in getProbe's entry for `alias`, when it is a
     * finite number.
     * @param {Object} probe
     * @param {string} alias
     * @param {string} property
     */
    function probeValue(probe, alias, property) {
        var value;
        if (probe === undefined || probe === null || probe[alias] === null || typeof probe[alias] !== 'object') {
            return undefined;
        }
        value = probe[alias][property];
        return typeof value === 'number' && isFinite(value) ? value : undefined;
    }

    /**
     * Available CDNs with http_rtt data, fastest first, as {alias, rtt}.
     * @param {Object} avail
     * @param {Object} rtt
     */
    function rank(avail, rtt) {
        var result = [],
            i,
            a,
            r;
        for (i = 0; i < aliases.length; i += 1) {
            a = probeValue(avail, aliases[i], 'avail');
            r = probeValue(rtt, aliases[i], 'http_rtt');
            if (a !== undefined && a >= settings.availability_threshold && r !== undefined) {
                result.push({ alias: aliases[i], rtt: r, order: i });
            }
        }
        result.sort(function(left, right) {
            if (left.rtt !== right.rtt) {
                return left.rtt - right.rtt;
            }
            return left.order - right.order;
        });
        return result;
    }
}
