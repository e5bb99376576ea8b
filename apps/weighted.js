// weighted: weighted choice among the routes of this app's endpoint, set
// live through the inventory API (POST /api/inventory/routes, `switchyard
// shape weighted route000=80 route001=20`), honouring provider state.
//
// Reads two Switchyard additions to the Openmix API (strings, like every
// getData value):
//   getData('weights')   -> {routeId: '{"weight":80,"strategy":"random","providers":["cdn_a"]}'}
//   getData('inventory') -> {alias: '{"host":"cdn-a.example.net","state":"up","load":0,...}'}
// and getData('sonar') -> {alias: '{"avail":0}'} for health checks.
//
// Decision order:
//   1. No routes for this endpoint                 -> default provider, reason B
//   2. A route is picked at random by weight among the routes with weight
//      above 0 that have a usable provider (state "up", a host, and Sonar
//      not saying avail 0); inside it, a provider by the route's strategy:
//      random (default), first (lowest id) or least_load  -> reason A
//   3. No route has a usable provider              -> default provider, reason C
//
// Routes are walked in id order and providers in the order the inventory
// lists them (by id), so decisions never depend on the order of keys.

var handler = new OpenmixApplication({
    // Answered when no route can be used.
    default_provider: {
        alias: 'origin',
        host: 'origin.example.net'
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

/** @constructor */
function OpenmixApplication(settings) {
    'use strict';

    var reasons = {
        weighted_route: 'A',
        no_routes: 'B',
        none_available: 'C'
    };

    /**
     * @param {OpenmixConfiguration} config
     */
    this.do_init = function(config) {
        config.requireProvider(settings.default_provider.alias);
    };

    /**
     * @param {OpenmixRequest} request
     * @param {OpenmixResponse} response
     */
    this.handle_request = function(request, response) {
        var routes = parseAll(request.getData('weights')),
            inventory = parseAll(request.getData('inventory')),
            sonar = parseAll(request.getData('sonar')),
            ids = Object.keys(routes).sort(),
            usable = [],
            total = 0,
            i,
            route,
            candidates,
            chosen,
            alias,
            reason;

        function isUsable(a) {
            var p = inventory[a];
            if (p === undefined || p === null || p.state !== 'up' || typeof p.host !== 'string' || p.host === '') {
                return false;
            }
            return !(sonar[a] !== undefined && sonar[a] !== null && sonar[a].avail === 0);
        }

        for (i = 0; i < ids.length; i += 1) {
            route = routes[ids[i]];
            if (route !== null && typeof route.weight === 'number' && route.weight > 0 &&
                    Array.isArray(route.providers)) {
                candidates = route.providers.filter(isUsable);
                if (candidates.length > 0) {
                    usable.push({ route: route, candidates: candidates });
                    total += route.weight;
                }
            }
        }

        if (ids.length === 0) {
            reason = reasons.no_routes;
        } else if (usable.length === 0) {
            reason = reasons.none_available;
        } else {
            chosen = pickRoute(usable, total);
            alias = pickProvider(chosen.route.strategy, chosen.candidates, inventory);
            reason = reasons.weighted_route;
        }

        if (alias === undefined) {
            response.respond(settings.default_provider.alias, settings.default_provider.host);
        } else {
            response.respond(alias, inventory[alias].host);
        }
        response.setTTL(settings.default_ttl);
        response.setReasonCode(reason);
    };

    /**
     * Parses every value of a getData object; values that are not JSON
     * objects are left out.
     * @param {Object} data
     */
    function parseAll(data) {
        var result = {},
            keys,
            i,
            value;
        if (data === undefined || data === null) {
            return result;
        }
        keys = Object.keys(data);
        for (i = 0; i < keys.length; i += 1) {
            try {
                value = JSON.parse(data[keys[i]]);
            } catch (e) {
                value = null;
            }
            if (value !== null && typeof value === 'object') {
                result[keys[i]] = value;
            }
        }
        return result;
    }

    /**
     * One route, with probability weight / total (one Math.random() call).
     * @param {Array.<Object>} usable
     * @param {number} total
     */
    function pickRoute(usable, total) {
        var point = Math.random() * total,
            sum = 0,
            i;
        for (i = 0; i < usable.length; i += 1) {
            sum += usable[i].route.weight;
            if (point < sum) {
                return usable[i];
            }
        }
        return usable[usable.length - 1];
    }

    /**
     * A provider of a route by its strategy.
     * @param {string} strategy
     * @param {Array.<string>} candidates
     * @param {!Object} inventory
     */
    function pickProvider(strategy, candidates, inventory) {
        var best,
            i;
        if (candidates.length === 1 || strategy === 'first') {
            return candidates[0];
        }
        if (strategy === 'least_load') {
            best = candidates[0];
            for (i = 1; i < candidates.length; i += 1) {
                if (inventory[candidates[i]].load < inventory[best].load) {
                    best = candidates[i];
                }
            }
            return best;
        }
        return candidates[Math.min(candidates.length - 1, Math.floor(Math.random() * candidates.length))];
    }
}
