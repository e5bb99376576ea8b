// geo-map: static mapping of the client's network and location to a CDN,
// answered with address records (A, or AAAA for AAAA queries).
//
// Decision order (the first table that knows the client wins):
//   1. ASN table      -> reason A
//   2. Country table  -> reason B
//   3. Market table   -> reason C
//   4. Default        -> reason D
//
// Addresses come from the documentation ranges (RFC 5737, RFC 3849). IPv6
// addresses are written out in full, as the Openmix API asks.

var handler = new OpenmixApplication({
    // Address records of each CDN, keyed by alias.
    providers: {
        'cdn_a': {
            a: ['192.0.2.10', '192.0.2.11'],
            aaaa: ['2001:db8:0:0:0:0:a:10', '2001:db8:0:0:0:0:a:11']
        },
        'cdn_b': {
            a: ['198.51.100.20', '198.51.100.21'],
            aaaa: ['2001:db8:0:0:0:0:b:20', '2001:db8:0:0:0:0:b:21']
        },
        'cdn_c': {
            a: ['203.0.113.30'],
            aaaa: ['2001:db8:0:0:0:0:c:30']
        }
    },

    // Checked first: networks with a peering or contract arrangement.
    asn_map: {
        '64500': 'cdn_b',
        '64501': 'cdn_c'
    },

    country_map: {
        'US': 'cdn_a',
        'CA': 'cdn_a',
        'MX': 'cdn_a',
        'GB': 'cdn_b',
        'DE': 'cdn_b',
        'FR': 'cdn_b',
        'NL': 'cdn_b',
        'JP': 'cdn_c',
        'KR': 'cdn_c',
        'AU': 'cdn_c'
    },

    market_map: {
        'EU': 'cdn_b',
        'AS': 'cdn_c',
        'OC': 'cdn_c'
    },

    default_provider: 'cdn_a',

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
            asn_map: 'A',
            country_map: 'B',
            market_map: 'C',
            default_provider: 'D'
        };

    /**
     * @param {OpenmixConfiguration} config
     */
    this.do_init = function(config) {
        var i;
        for (i = 0; i < aliases.length; i += 1) {
            config.requireProvider(aliases[i]);
        }
    };

    /**
     * @param {OpenmixRequest} request
     * @param {OpenmixResponse} response
     */
    this.handle_request = function(request, response) {
        var decisionProvider,
            decisionReason,
            addresses,
            i;

        decisionProvider = lookup(settings.asn_map, request.asn);
        decisionReason = reasons.asn_map;
        if (decisionProvider === undefined) {
            decisionProvider = lookup(settings.country_map, request.country);
            decisionReason = reasons.country_map;
        }
        if (decisionProvider === undefined) {
            decisionProvider = lookup(settings.market_map, request.market);
            decisionReason = reasons.market_map;
        }
        if (decisionProvider === undefined) {
            decisionProvider = settings.default_provider;
            decisionReason = reasons.default_provider;
        }

        response.setProvider(decisionProvider);
        if (request.query_type === 'AAAA') {
            addresses = settings.providers[decisionProvider].aaaa;
            for (i = 0; i < addresses.length; i += 1) {
                response.addAAAARecord(addresses[i]);
            }
        } else {
            addresses = settings.providers[decisionProvider].a;
            for (i = 0; i < addresses.length; i += 1) {
                response.addARecord(addresses[i]);
            }
        }
        response.setTTL(settings.default_ttl);
        response.setReasonCode(decisionReason);
    };

    /**
     * The provider `table` maps `key` to, when the key is a string or number
     * and the provider is one of ours; else undefined.
     * @param {!Object} table
     * @param {*} key
     */
    function lookup(table, key) {
        var alias;
        if (typeof key !== 'string' && typeof key !== 'number') {
            return undefined;
        }
        key = String(key);
        if (!Object.prototype.hasOwnProperty.call(table, key)) {
            return undefined;
        }
        alias = table[key];
        if (!Object.prototype.hasOwnProperty.call(settings.providers, alias)) {
            return undefined;
        }
        return alias;
    }
}
